package kubeclient

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/carve-csi/carve/pkg/backend"
)

// SecretData reads the Secrets that StorageClasses name for an executor
// (Gluster's executor ssh, the btrfs layout's btrfsExecutor ssh).
func SecretData(client kubernetes.Interface) func(ctx context.Context, namespace, name string) (map[string][]byte, error) {
	return func(ctx context.Context, namespace, name string) (map[string][]byte, error) {
		s, err := client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) {
			// The StorageClass names a Secret carve cannot have: a retry
			// will not help until someone fixes the Secret or RBAC.
			return nil, fmt.Errorf("%w: %w", backend.ErrInvalid, err)
		}
		if err != nil {
			return nil, err
		}
		return s.Data, nil
	}
}

// ClassParams lists the parameters of the StorageClasses whose provisioner
// is provisioner: calls that carry only a volume ID (expansion, snapshots,
// purges after a restart) learn from them how a share is reached.
func ClassParams(client kubernetes.Interface, provisioner string) func(ctx context.Context) ([]map[string]string, error) {
	return func(ctx context.Context) ([]map[string]string, error) {
		list, err := client.StorageV1().StorageClasses().List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list StorageClasses: %w", err)
		}
		var out []map[string]string
		for _, sc := range list.Items {
			if sc.Provisioner == provisioner {
				out = append(out, sc.Parameters)
			}
		}
		return out, nil
	}
}
