package kubeview

import (
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
)

// NewInformerFactory is the informer factory both front doors build their
// caches from (the lib's and the cluster view's: one cache per kind). Every
// PV, claim and StorageClass of the cluster is held, so objects are kept
// with only what carve and the provisioner lib read (see transform).
func NewInformerFactory(client kubernetes.Interface, resync time.Duration) informers.SharedInformerFactory {
	return informers.NewSharedInformerFactoryWithOptions(client, resync, informers.WithTransform(transform))
}

// transform trims an object before it enters the cache. No one writes a
// cached PV or claim back with Update: the lib changes a PV's finalizers
// with a patch computed between two copies of the cached object, which
// touches nothing else, and the API server keeps the fields a request
// omits. A DeletedFinalStateUnknown holds an object already trimmed.
func transform(obj any) (any, error) {
	switch o := obj.(type) {
	case *v1.PersistentVolume:
		trimVolume(o)
	case *v1.PersistentVolumeClaim:
		trimClaim(o)
	case metav1.Object:
		// managedFields: one entry per manager that wrote the object
		// (kubectl apply, the controller-manager, ...), never read.
		o.SetManagedFields(nil)
	}
	return obj, nil
}

// trimVolume keeps what is read from a cached PV:
//   - carve (kubeview, the provisioner's Delete): the name, the annotations
//     (volume ID, GID), spec.csi's driver and volumeHandle, spec.claimRef;
//   - the lib (v10 isProvisionerForVolume, handleProtectionFinalizer,
//     shouldDelete, deleteVolumeOperation, its metrics): the annotations
//     (provisioned-by, migrated-to), spec.csi.driver, the reclaim policy,
//     finalizers, deletionTimestamp, status.phase, storageClassName;
//   - the event recorder: the object's reference (name, UID, resourceVersion).
//
// Dropped: capacity (a map of quantities, the largest part), access modes,
// mount options, node affinity, volume mode, the NFS or other non-CSI source,
// CSI volume attributes and secrets, labels, status message and times.
func trimVolume(pv *v1.PersistentVolume) {
	pv.ManagedFields = nil
	pv.Labels = nil
	s := &pv.Spec
	kept := v1.PersistentVolumeSpec{
		ClaimRef:                      s.ClaimRef,
		PersistentVolumeReclaimPolicy: s.PersistentVolumeReclaimPolicy,
		StorageClassName:              s.StorageClassName,
	}
	if s.CSI != nil {
		kept.CSI = &v1.CSIPersistentVolumeSource{Driver: s.CSI.Driver, VolumeHandle: s.CSI.VolumeHandle}
	}
	pv.Spec = kept
	pv.Status = v1.PersistentVolumeStatus{Phase: pv.Status.Phase}
}

// trimClaim keeps a claim waiting for a volume whole (the lib hands it to
// Provision, which reads its spec, labels and annotations). A claim with
// spec.volumeName set is never provisioned again (the field cannot change
// once set; the lib's shouldProvision stops there), so only its identity is
// kept: name, namespace and UID (the cluster view's liveness check, the
// lib's UID index and its events), spec.volumeName and storageClassName,
// status.phase.
func trimClaim(pvc *v1.PersistentVolumeClaim) {
	pvc.ManagedFields = nil
	if pvc.Spec.VolumeName == "" {
		return
	}
	pvc.Labels = nil
	pvc.Annotations = nil
	pvc.Finalizers = nil
	pvc.Spec = v1.PersistentVolumeClaimSpec{VolumeName: pvc.Spec.VolumeName, StorageClassName: pvc.Spec.StorageClassName}
	pvc.Status = v1.PersistentVolumeClaimStatus{Phase: pvc.Status.Phase}
}
