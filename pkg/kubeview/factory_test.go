package kubeview

import (
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
)

// The caches keep what carve reads and drop the managedFields.
func TestInformerFactoryDropsManagedFields(t *testing.T) {
	pv := &v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{
		Name:          "pv-1",
		Annotations:   map[string]string{"pv.kubernetes.io/provisioned-by": "carve.csi.dev/provisioner"},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate}},
	}, Spec: v1.PersistentVolumeSpec{StorageClassName: "carve"}}
	client := fake.NewSimpleClientset(pv)
	factory := NewInformerFactory(client, time.Hour)
	informer := factory.Core().V1().PersistentVolumes().Informer()
	stop := make(chan struct{})
	defer factory.Shutdown()
	defer close(stop)
	factory.Start(stop)
	if !cache.WaitForCacheSync(stop, informer.HasSynced) {
		t.Fatal("cache never synced")
	}
	obj, ok, err := informer.GetStore().GetByKey("pv-1")
	if err != nil || !ok {
		t.Fatalf("pv-1 not cached: %v", err)
	}
	got := obj.(*v1.PersistentVolume)
	if len(got.ManagedFields) != 0 {
		t.Errorf("cached PV keeps managedFields %v", got.ManagedFields)
	}
	if got.Annotations["pv.kubernetes.io/provisioned-by"] == "" || got.Spec.StorageClassName != "carve" {
		t.Errorf("cached PV lost what carve reads: %+v", got)
	}
}

// The transform keeps every field carve and the lib read (see trimVolume
// and trimClaim), and a claim still waiting for a volume whole.
func TestTransformKeepsWhatIsRead(t *testing.T) {
	pv, bound := benchPair(1)
	pv.Spec.CSI = &v1.CSIPersistentVolumeSource{Driver: DriverName, VolumeHandle: "h", VolumeAttributes: map[string]string{"a": "b"}}
	pv.Spec.PersistentVolumeReclaimPolicy = v1.PersistentVolumeReclaimDelete
	now := metav1.Now()
	pv.DeletionTimestamp = &now
	want := pv.DeepCopy()
	if _, err := transform(pv); err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(pv.ObjectMeta.Annotations, want.Annotations) || !equality.Semantic.DeepEqual(pv.Finalizers, want.Finalizers) ||
		pv.Name != want.Name || pv.UID != want.UID || pv.ResourceVersion != want.ResourceVersion || pv.DeletionTimestamp == nil ||
		!equality.Semantic.DeepEqual(pv.Spec.ClaimRef, want.Spec.ClaimRef) || pv.Spec.CSI.Driver != DriverName || pv.Spec.CSI.VolumeHandle != "h" ||
		pv.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimDelete || pv.Spec.StorageClassName != "bench" || pv.Status.Phase != v1.VolumeBound {
		t.Errorf("trimmed PV lost a field that is read:\n got %+v\nwant %+v", pv, want)
	}
	if pv.ManagedFields != nil || pv.Spec.Capacity != nil || pv.Spec.NFS != nil || pv.Spec.CSI.VolumeAttributes != nil || pv.Status.LastPhaseTransitionTime != nil {
		t.Errorf("trimmed PV keeps unread fields: %+v", pv)
	}
	if id, ok, err := VolumeID(pv); !ok || err != nil || id.String() == "" {
		t.Errorf("VolumeID of the trimmed PV: %v %v %v", id, ok, err)
	}

	if _, err := transform(bound); err != nil {
		t.Fatal(err)
	}
	if bound.Name != "claim-000001" || bound.Namespace != "bench" || bound.UID == "" || bound.ResourceVersion == "" ||
		bound.Spec.VolumeName != "pvc-bench-000001" || *bound.Spec.StorageClassName != "bench" || bound.Status.Phase != v1.ClaimBound {
		t.Errorf("trimmed bound claim lost its identity: %+v", bound)
	}
	if bound.Annotations != nil || bound.Spec.Resources.Requests != nil || bound.Status.Capacity != nil || bound.ManagedFields != nil {
		t.Errorf("trimmed bound claim keeps unread fields: %+v", bound)
	}

	_, pending := benchPair(2)
	pending.Spec.VolumeName = ""
	pending.Status = v1.PersistentVolumeClaimStatus{Phase: v1.ClaimPending}
	want2 := pending.DeepCopy()
	want2.ManagedFields = nil
	if _, err := transform(pending); err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(pending, want2) {
		t.Errorf("a pending claim must stay whole but the provisioner lib's shouldProvision and carve's Provision read:\n got %+v\nwant %+v", pending, want2)
	}

	// Tombstones pass unchanged.
	tomb := cache.DeletedFinalStateUnknown{Key: "x", Obj: pv}
	if got, _ := transform(tomb); got != tomb {
		t.Errorf("tombstone changed: %v", got)
	}
}
