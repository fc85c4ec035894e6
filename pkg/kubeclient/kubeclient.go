// Package kubeclient builds the Kubernetes client both binaries use.
package kubeclient

import (
	"fmt"
	"os"
	"sync"

	"k8s.io/apimachinery/pkg/runtime"
	clientfeatures "k8s.io/client-go/features"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	typedeventsv1 "k8s.io/client-go/kubernetes/typed/events/v1"
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

// EventsApart returns client with its events written through events, a
// client with a rate limiter of its own, as kube-scheduler does: the
// provisioning lib writes two events per claim ("Provisioning",
// "ProvisioningSucceeded") beside the PV itself, so on one limiter the
// events took two thirds of --kube-api-qps and a backlog of claims got PVs
// at a third of the rate the API server allowed. Events stay best-effort
// (client-go's recorder drops them when its queue is full and rate-limits
// them per object).
func EventsApart(client, events kubernetes.Interface) kubernetes.Interface {
	return eventsApart{Interface: client, events: events}
}

type eventsApart struct {
	kubernetes.Interface
	events kubernetes.Interface
}

func (c eventsApart) CoreV1() typedcorev1.CoreV1Interface {
	return coreEventsApart{CoreV1Interface: c.Interface.CoreV1(), events: c.events.CoreV1()}
}

func (c eventsApart) EventsV1() typedeventsv1.EventsV1Interface { return c.events.EventsV1() }

type coreEventsApart struct {
	typedcorev1.CoreV1Interface
	events typedcorev1.CoreV1Interface
}

func (c coreEventsApart) Events(namespace string) typedcorev1.EventInterface {
	return c.events.Events(namespace)
}
