// Package kubeclient builds the Kubernetes client both binaries use.
package kubeclient

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/carve-csi/carve/pkg/buildinfo"
)

// New returns a client from kubeconfig, or the in-cluster configuration when
// kubeconfig is empty. qps and burst of 0 keep client-go's defaults.
func New(kubeconfig, component string, qps float32, burst int) (kubernetes.Interface, error) {
	var rc *rest.Config
	var err error
	if kubeconfig == "" {
		rc, err = rest.InClusterConfig()
	} else {
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	if err != nil {
		return nil, fmt.Errorf("load Kubernetes client configuration: %w", err)
	}
	if qps > 0 {
		rc.QPS, rc.Burst = qps, burst
	}
	rc.UserAgent = component + "/" + buildinfo.Version
	// Protobuf for the built-in kinds carve watches and writes, as the
	// controller-manager does: smaller lists and watch events of every PV and
	// claim; JSON stays accepted for kinds without protobuf.
	rc.ContentType = runtime.ContentTypeProtobuf
	rc.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	return kubernetes.NewForConfig(rc)
}
