// Package kubeclient builds the Kubernetes client both binaries use.
package kubeclient

import (
	"fmt"
	"os"
	"sync"

	"k8s.io/apimachinery/pkg/runtime"
	clientfeatures "k8s.io/client-go/features"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/carve-csi/carve/pkg/buildinfo"
)

// New returns a client from kubeconfig, or the in-cluster configuration when
// kubeconfig is empty. qps and burst of 0 keep client-go's defaults.
func New(kubeconfig, component string, qps float32, burst int) (kubernetes.Interface, error) {
	streamListsOnce.Do(streamLists)
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

var streamListsOnce sync.Once

// streamLists turns on client-go's WatchListClient (beta, off by default in
// client-go v0.34; the API server's WatchList is on by default since 1.32):
// an informer's first sync streams the objects as watch events instead of
// one LIST response, which with every PV and claim of a large cluster was
// the process's peak memory (the whole response and all its objects decoded
// at once). Against a server without it the reflector falls back to LIST.
// KUBE_FEATURE_WatchListClient, when set, still decides.
func streamLists() {
	if _, set := os.LookupEnv("KUBE_FEATURE_" + string(clientfeatures.WatchListClient)); set {
		return
	}
	clientfeatures.ReplaceFeatureGates(watchListGates{clientfeatures.FeatureGates()})
}

type watchListGates struct{ clientfeatures.Gates }

func (g watchListGates) Enabled(f clientfeatures.Feature) bool {
	return f == clientfeatures.WatchListClient || g.Gates.Enabled(f)
}
