package kubeview

import (
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
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
