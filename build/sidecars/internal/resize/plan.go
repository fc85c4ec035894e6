// Package resize is carve-resizer's controller: it watches claims and
// volumes and calls a CSI driver's ControllerExpandVolume when a bound claim
// asks for more than it has, recording progress in the claim's status as
// csi-resizer does with RecoverVolumeExpansionFailure (GA in Kubernetes 1.34).
package resize

import (
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Event reasons, as csi-resizer records them.
const (
	ReasonResizing         = "Resizing"
	ReasonResizeSuccessful = "VolumeResizeSuccessful"
	ReasonResizeFailed     = "VolumeResizeFailed"
	ReasonFSResizeRequired = "FileSystemResizeRequired"
)

// AnnNodeExpansionNotRequired tells the kubelet that no node expansion
// follows (csi-resizer sets it when the driver says so).
const AnnNodeExpansionNotRequired = "volume.kubernetes.io/node-expansion-not-required"

// Plan is what a claim needs.
type Plan struct {
	// Expand: call ControllerExpandVolume with Size.
	Expand bool
	Size   resource.Quantity
	// Why explains the decision, for the log.
	Why string
}

// Decide tells whether claim pvc, bound to pv, needs a controller expansion
// by driver, and to which size. finalErr says the last attempt for this
// claim ended with a final (non-retryable, not infeasible) error, so a
// resize marked in progress may restart at the requested size.
func Decide(pvc *v1.PersistentVolumeClaim, pv *v1.PersistentVolume, driver string, finalErr bool) Plan {
	if pvc.Status.Phase != v1.ClaimBound || pvc.Spec.VolumeName == "" {
		return Plan{Why: "claim not bound"}
	}
	if pv == nil || pv.Spec.CSI == nil || pv.Spec.CSI.Driver != driver {
		return Plan{Why: "volume not of this driver"}
	}
	if ref := pv.Spec.ClaimRef; ref == nil || ref.Namespace != pvc.Namespace || ref.Name != pvc.Name || ref.UID != pvc.UID {
		return Plan{Why: "volume not bound to this claim"}
	}
	requested := pvc.Spec.Resources.Requests[v1.ResourceStorage]
	capacity := pvc.Status.Capacity[v1.ResourceStorage]
	if requested.Cmp(capacity) <= 0 {
		return Plan{Why: "request within capacity"}
	}
	pvSize := pv.Spec.Capacity[v1.ResourceStorage]
	status := pvc.Status.AllocatedResourceStatuses[v1.ResourceStorage]
	allocated, hasAllocated := pvc.Status.AllocatedResources[v1.ResourceStorage]

	size := requested
	switch status {
	case v1.PersistentVolumeClaimNodeResizePending, v1.PersistentVolumeClaimNodeResizeInProgress:
		// The controller's part is done for the allocated size; the kubelet
		// finishes. A larger request waits for that.
		if hasAllocated {
			size = allocated
		}
		if pvSize.Cmp(size) >= 0 {
			return Plan{Why: "node expansion pending"}
		}
	case v1.PersistentVolumeClaimNodeResizeInfeasible:
		if hasAllocated {
			size = allocated
		}
	case v1.PersistentVolumeClaimControllerResizeInProgress:
		// A resize in progress (perhaps still running in the driver after a
		// timeout) finishes at its size before a new one starts, unless it
		// failed for good.
		if hasAllocated && !finalErr {
			size = allocated
		}
	case v1.PersistentVolumeClaimControllerResizeInfeasible:
		// The driver refused this size: only a new request is tried.
		if hasAllocated && allocated.Cmp(requested) == 0 {
			return Plan{Why: "infeasible at this size, waiting for a new request"}
		}
	default:
		if pvSize.Cmp(requested) >= 0 && hasAllocated {
			// Expanded but not recorded: record it at the allocated size.
			size = allocated
		}
	}
	return Plan{Expand: true, Size: size, Why: "request above capacity"}
}

// resizeConditions are the claim conditions a resize owns.
var resizeConditions = map[v1.PersistentVolumeClaimConditionType]bool{
	v1.PersistentVolumeClaimResizing:                true,
	v1.PersistentVolumeClaimFileSystemResizePending: true,
	v1.PersistentVolumeClaimControllerResizeError:   true,
	v1.PersistentVolumeClaimNodeResizeError:         true,
}

// setConditions replaces the claim's resize conditions with add, keeping a
// condition's LastTransitionTime when its type and status stay.
func setConditions(pvc *v1.PersistentVolumeClaim, add ...v1.PersistentVolumeClaimCondition) {
	old := map[v1.PersistentVolumeClaimConditionType]v1.PersistentVolumeClaimCondition{}
	var out []v1.PersistentVolumeClaimCondition
	for _, c := range pvc.Status.Conditions {
		if resizeConditions[c.Type] {
			old[c.Type] = c
			continue
		}
		out = append(out, c)
	}
	for _, c := range add {
		if o, ok := old[c.Type]; ok && o.Status == c.Status {
			c.LastTransitionTime = o.LastTransitionTime
		}
		out = append(out, c)
	}
	pvc.Status.Conditions = out
}

func condition(t v1.PersistentVolumeClaimConditionType, msg string) v1.PersistentVolumeClaimCondition {
	return v1.PersistentVolumeClaimCondition{Type: t, Status: v1.ConditionTrue, LastTransitionTime: metav1.Now(), Message: msg}
}

func setResizeStatus(pvc *v1.PersistentVolumeClaim, s v1.ClaimResourceStatus) {
	if s == "" {
		delete(pvc.Status.AllocatedResourceStatuses, v1.ResourceStorage)
		if len(pvc.Status.AllocatedResourceStatuses) == 0 {
			pvc.Status.AllocatedResourceStatuses = nil
		}
		return
	}
	if pvc.Status.AllocatedResourceStatuses == nil {
		pvc.Status.AllocatedResourceStatuses = map[v1.ResourceName]v1.ClaimResourceStatus{}
	}
	pvc.Status.AllocatedResourceStatuses[v1.ResourceStorage] = s
}

// MarkInProgress returns the claim with the Resizing condition,
// allocatedResources at size and ControllerResizeInProgress.
func MarkInProgress(pvc *v1.PersistentVolumeClaim, size resource.Quantity) *v1.PersistentVolumeClaim {
	n := pvc.DeepCopy()
	setConditions(n, condition(v1.PersistentVolumeClaimResizing, ""))
	setResizeStatus(n, v1.PersistentVolumeClaimControllerResizeInProgress)
	if n.Status.AllocatedResources == nil {
		n.Status.AllocatedResources = v1.ResourceList{}
	}
	n.Status.AllocatedResources[v1.ResourceStorage] = size
	return n
}

// MarkFinished returns the claim after a controller expansion to capacity
// that needs no node expansion: status.capacity set, resize conditions and
// status cleared.
func MarkFinished(pvc *v1.PersistentVolumeClaim, capacity resource.Quantity) *v1.PersistentVolumeClaim {
	n := pvc.DeepCopy()
	if n.Status.Capacity == nil {
		n.Status.Capacity = v1.ResourceList{}
	}
	n.Status.Capacity[v1.ResourceStorage] = capacity
	setConditions(n)
	setResizeStatus(n, "")
	if n.Annotations == nil {
		n.Annotations = map[string]string{}
	}
	n.Annotations[AnnNodeExpansionNotRequired] = "true"
	return n
}

// MarkNodePending returns the claim after a controller expansion that the
// kubelet must finish: FileSystemResizePending and NodeResizePending.
func MarkNodePending(pvc *v1.PersistentVolumeClaim) *v1.PersistentVolumeClaim {
	n := pvc.DeepCopy()
	setConditions(n, condition(v1.PersistentVolumeClaimFileSystemResizePending,
		"Waiting for user to (re-)start a pod to finish file system resize of volume on node."))
	setResizeStatus(n, v1.PersistentVolumeClaimNodeResizePending)
	delete(n.Annotations, AnnNodeExpansionNotRequired)
	return n
}

// MarkFailed returns the claim after a final error: ControllerResizeError
// with msg beside Resizing (csi-resizer v2.2.1 keeps Resizing too). If the
// driver called the size infeasible, the status is
// ControllerResizeInfeasible (allocatedResources stays, so only a
// different request is tried again); otherwise the resize is retried.
func MarkFailed(pvc *v1.PersistentVolumeClaim, msg string, infeasible bool) *v1.PersistentVolumeClaim {
	n := pvc.DeepCopy()
	setConditions(n, condition(v1.PersistentVolumeClaimResizing, ""), condition(v1.PersistentVolumeClaimControllerResizeError, msg))
	if infeasible {
		setResizeStatus(n, v1.PersistentVolumeClaimControllerResizeInfeasible)
	}
	return n
}
