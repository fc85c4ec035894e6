package resize

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

const testDriver = "carve.csi.dev"

func claim(request, capacity string) *v1.PersistentVolumeClaim {
	return &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "data", UID: "uid-1", ResourceVersion: "1"},
		Spec: v1.PersistentVolumeClaimSpec{
			AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			Resources:   v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse(request)}},
			VolumeName:  "pv-1",
		},
		Status: v1.PersistentVolumeClaimStatus{
			Phase:    v1.ClaimBound,
			Capacity: v1.ResourceList{v1.ResourceStorage: resource.MustParse(capacity)},
		},
	}
}

func volume(capacity string) *v1.PersistentVolume {
	return &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pv-1", ResourceVersion: "1"},
		Spec: v1.PersistentVolumeSpec{
			Capacity:    v1.ResourceList{v1.ResourceStorage: resource.MustParse(capacity)},
			AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			ClaimRef:    &v1.ObjectReference{Namespace: "ns", Name: "data", UID: "uid-1"},
			PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{
				Driver: testDriver, VolumeHandle: "vol-1", FSType: "ext4",
			}},
		},
	}
}

func withStatus(pvc *v1.PersistentVolumeClaim, st v1.ClaimResourceStatus, allocated string) *v1.PersistentVolumeClaim {
	if st != "" {
		pvc.Status.AllocatedResourceStatuses = map[v1.ResourceName]v1.ClaimResourceStatus{v1.ResourceStorage: st}
	}
	if allocated != "" {
		pvc.Status.AllocatedResources = v1.ResourceList{v1.ResourceStorage: resource.MustParse(allocated)}
	}
	return pvc
}

func TestDecide(t *testing.T) {
	otherDriver := volume("1Gi")
	otherDriver.Spec.CSI.Driver = "other.csi"
	notCSI := volume("1Gi")
	notCSI.Spec.CSI = nil
	otherClaim := volume("1Gi")
	otherClaim.Spec.ClaimRef.UID = "uid-2"
	pending := claim("2Gi", "1Gi")
	pending.Status.Phase = v1.ClaimPending

	for _, tc := range []struct {
		name     string
		pvc      *v1.PersistentVolumeClaim
		pv       *v1.PersistentVolume
		finalErr bool
		want     string // "" = no expansion
	}{
		{"grow", claim("2Gi", "1Gi"), volume("1Gi"), false, "2Gi"},
		{"same size", claim("1Gi", "1Gi"), volume("1Gi"), false, ""},
		{"shrink request", claim("1Gi", "2Gi"), volume("2Gi"), false, ""},
		{"not bound", pending, volume("1Gi"), false, ""},
		{"other driver", claim("2Gi", "1Gi"), otherDriver, false, ""},
		{"not CSI", claim("2Gi", "1Gi"), notCSI, false, ""},
		{"volume bound to another claim", claim("2Gi", "1Gi"), otherClaim, false, ""},
		{"no volume", claim("2Gi", "1Gi"), nil, false, ""},
		// A resize in progress to 2Gi finishes before 3Gi starts.
		{"in progress", withStatus(claim("3Gi", "1Gi"), v1.PersistentVolumeClaimControllerResizeInProgress, "2Gi"), volume("1Gi"), false, "2Gi"},
		{"in progress, final error", withStatus(claim("3Gi", "1Gi"), v1.PersistentVolumeClaimControllerResizeInProgress, "2Gi"), volume("1Gi"), true, "3Gi"},
		// Expanded but the claim not updated: record it.
		{"expanded, not recorded", withStatus(claim("2Gi", "1Gi"), v1.PersistentVolumeClaimControllerResizeInProgress, "2Gi"), volume("2Gi"), false, "2Gi"},
		{"infeasible, same request", withStatus(claim("2Gi", "1Gi"), v1.PersistentVolumeClaimControllerResizeInfeasible, "2Gi"), volume("1Gi"), false, ""},
		{"infeasible, new request", withStatus(claim("3Gi", "1Gi"), v1.PersistentVolumeClaimControllerResizeInfeasible, "2Gi"), volume("1Gi"), false, "3Gi"},
		{"node pending", withStatus(claim("2Gi", "1Gi"), v1.PersistentVolumeClaimNodeResizePending, "2Gi"), volume("2Gi"), false, ""},
		{"node pending, larger request", withStatus(claim("3Gi", "1Gi"), v1.PersistentVolumeClaimNodeResizePending, "2Gi"), volume("2Gi"), false, ""},
		{"allocated without status", withStatus(claim("2Gi", "1Gi"), "", "2Gi"), volume("2Gi"), false, "2Gi"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := Decide(tc.pvc, tc.pv, testDriver, tc.finalErr)
			if tc.want == "" {
				if p.Expand {
					t.Fatalf("Decide expands to %s (%s), want no expansion", p.Size.String(), p.Why)
				}
				return
			}
			if !p.Expand || p.Size.Cmp(resource.MustParse(tc.want)) != 0 {
				t.Fatalf("Decide = %+v (size %s), want expansion to %s", p, p.Size.String(), tc.want)
			}
		})
	}
}

func conditionTypes(pvc *v1.PersistentVolumeClaim) []v1.PersistentVolumeClaimConditionType {
	var out []v1.PersistentVolumeClaimConditionType
	for _, c := range pvc.Status.Conditions {
		out = append(out, c.Type)
	}
	return out
}

func TestTransitions(t *testing.T) {
	pvc := claim("2Gi", "1Gi")
	pvc.Status.Conditions = []v1.PersistentVolumeClaimCondition{{Type: "Other", Status: v1.ConditionTrue}}

	p := MarkInProgress(pvc, resource.MustParse("2Gi"))
	if got := conditionTypes(p); len(got) != 2 || got[0] != "Other" || got[1] != v1.PersistentVolumeClaimResizing {
		t.Errorf("in progress: conditions %v", got)
	}
	if st := p.Status.AllocatedResourceStatuses[v1.ResourceStorage]; st != v1.PersistentVolumeClaimControllerResizeInProgress {
		t.Errorf("in progress: status %q", st)
	}
	if a := p.Status.AllocatedResources[v1.ResourceStorage]; a.String() != "2Gi" {
		t.Errorf("in progress: allocated %s", a.String())
	}
	if len(pvc.Status.Conditions) != 1 || pvc.Status.AllocatedResources != nil {
		t.Errorf("MarkInProgress changed its argument")
	}

	f := MarkFinished(p, resource.MustParse("2Gi"))
	if got := conditionTypes(f); len(got) != 1 || got[0] != "Other" {
		t.Errorf("finished: conditions %v", got)
	}
	if f.Status.AllocatedResourceStatuses != nil {
		t.Errorf("finished: statuses %v", f.Status.AllocatedResourceStatuses)
	}
	if c := f.Status.Capacity[v1.ResourceStorage]; c.String() != "2Gi" {
		t.Errorf("finished: capacity %s", c.String())
	}
	if f.Annotations[AnnNodeExpansionNotRequired] != "true" {
		t.Errorf("finished: annotations %v", f.Annotations)
	}

	n := MarkNodePending(p)
	if got := conditionTypes(n); len(got) != 2 || got[1] != v1.PersistentVolumeClaimFileSystemResizePending {
		t.Errorf("node pending: conditions %v", got)
	}
	if st := n.Status.AllocatedResourceStatuses[v1.ResourceStorage]; st != v1.PersistentVolumeClaimNodeResizePending {
		t.Errorf("node pending: status %q", st)
	}
	if c := n.Status.Capacity[v1.ResourceStorage]; c.String() != "1Gi" {
		t.Errorf("node pending: capacity %s, want 1Gi until the kubelet finishes", c.String())
	}

	inf := MarkFailed(p, "boom", true)
	if got := conditionTypes(inf); len(got) != 3 || got[1] != v1.PersistentVolumeClaimResizing || got[2] != v1.PersistentVolumeClaimControllerResizeError {
		t.Errorf("infeasible: conditions %v", got)
	}
	if st := inf.Status.AllocatedResourceStatuses[v1.ResourceStorage]; st != v1.PersistentVolumeClaimControllerResizeInfeasible {
		t.Errorf("infeasible: status %q", st)
	}
	retry := MarkFailed(p, "boom", false)
	if got := conditionTypes(retry); len(got) != 3 || got[1] != v1.PersistentVolumeClaimResizing {
		t.Errorf("final, retried: conditions %v", got)
	}
	if st := retry.Status.AllocatedResourceStatuses[v1.ResourceStorage]; st != v1.PersistentVolumeClaimControllerResizeInProgress {
		t.Errorf("final, retried: status %q", st)
	}
	// The Resizing condition keeps its transition time across marks.
	again := MarkInProgress(p, resource.MustParse("2Gi"))
	if !again.Status.Conditions[1].LastTransitionTime.Equal(&p.Status.Conditions[1].LastTransitionTime) {
		t.Errorf("Resizing's LastTransitionTime changed")
	}
}

func TestLeaseName(t *testing.T) {
	if got := LeaseName("carve.csi.dev"); got != "external-resizer-carve-csi-dev" {
		t.Errorf("LeaseName = %q", got)
	}
	if got := LeaseName("example.com/driver"); got != "external-resizer-example-com-driver" {
		t.Errorf("LeaseName = %q", got)
	}
}

func TestAccessMode(t *testing.T) {
	pv := volume("1Gi")
	vc, err := VolumeCapability(pv, true)
	if err != nil {
		t.Fatal(err)
	}
	if vc.GetMount().GetFsType() != "ext4" || vc.GetAccessMode().GetMode().String() != "SINGLE_NODE_MULTI_WRITER" {
		t.Errorf("capability %v", vc)
	}
	pv.Spec.AccessModes = []v1.PersistentVolumeAccessMode{v1.ReadWriteMany, v1.ReadWriteOnce}
	if vc, _ := VolumeCapability(pv, false); vc.GetAccessMode().GetMode().String() != "MULTI_NODE_MULTI_WRITER" {
		t.Errorf("RWX: %v", vc)
	}
	pv.Spec.AccessModes = []v1.PersistentVolumeAccessMode{v1.ReadWriteOncePod}
	if vc, _ := VolumeCapability(pv, false); vc.GetAccessMode().GetMode().String() != "SINGLE_NODE_WRITER" {
		t.Errorf("RWOP without SINGLE_NODE_MULTI_WRITER: %v", vc)
	}
	block := v1.PersistentVolumeBlock
	pv.Spec.VolumeMode = &block
	if vc, _ := VolumeCapability(pv, true); vc.GetBlock() == nil {
		t.Errorf("block: %v", vc)
	}
}

func TestUseProtobuf(t *testing.T) {
	c := &rest.Config{}
	useProtobuf(c)
	if c.ContentType != "application/vnd.kubernetes.protobuf" || !strings.HasPrefix(c.AcceptContentTypes, "application/vnd.kubernetes.protobuf,") {
		t.Errorf("content type %q, accept %q", c.ContentType, c.AcceptContentTypes)
	}
}
