package kubeview

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
)

// NewInformerFactory is the informer factory both front doors build their
// caches from (the lib's and the cluster view's: one cache per kind). Every
// PV, claim and StorageClass of the cluster is held, so objects are kept
// without their managedFields, which carve never reads (one entry per
// manager that wrote the object: kubectl apply, the controller-manager, ...).
// An update sent from a cached object still keeps the server's
// managedFields: the API server leaves them unchanged when a request omits
// them.
func NewInformerFactory(client kubernetes.Interface, resync time.Duration) informers.SharedInformerFactory {
	return informers.NewSharedInformerFactoryWithOptions(client, resync, informers.WithTransform(dropManagedFields))
}

func dropManagedFields(obj any) (any, error) {
	if o, ok := obj.(metav1.Object); ok {
		o.SetManagedFields(nil)
	}
	return obj, nil
}
