package resize

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/carve-csi/carve/build/sidecars/internal/csiconn"
)

// Config is carve-resizer's command line.
type Config struct {
	CSIAddress              string
	Kubeconfig              string
	LeaderElection          bool
	LeaderElectionNamespace string
	KubeAPIQPS              float32
	KubeAPIBurst            int
	Workers                 int
	Timeout                 time.Duration
	RetryStart, RetryMax    time.Duration
	Version                 string
}

// LeaseName is csi-resizer's Lease name for driver.
func LeaseName(driver string) string {
	return "external-resizer-" + strings.NewReplacer("/", "-", ".", "-").Replace(driver)
}

// Run connects to the driver and the API server and resizes claims until
// ctx ends (with leader election: while this process leads).
func Run(ctx context.Context, cfg Config) error {
	log := klog.FromContext(ctx)
	conn, err := csiconn.Dial(cfg.CSIAddress)
	if err != nil {
		return fmt.Errorf("dial %s: %w", cfg.CSIAddress, err)
	}
	defer conn.Close()
	// The driver may start after us: wait for it as csi-resizer does,
	// at least a minute.
	dctx, cancel := context.WithTimeout(ctx, max(cfg.Timeout, time.Minute))
	driver, err := csiconn.DriverName(dctx, conn)
	cancel()
	if err != nil {
		return fmt.Errorf("driver at %s: %w", cfg.CSIAddress, err)
	}
	cctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	exp, err := NewCSIExpander(cctx, conn)
	cancel()
	if err != nil {
		return fmt.Errorf("driver %s: %w", driver, err)
	}
	log.Info("carve-resizer starting", "version", cfg.Version, "driver", driver, "singleNodeMultiWriter", exp.SingleNodeMultiWriter)

	restCfg, err := restConfig(cfg.Kubeconfig)
	if err != nil {
		return err
	}
	restCfg.QPS, restCfg.Burst = cfg.KubeAPIQPS, cfg.KubeAPIBurst
	restCfg.UserAgent = "carve-resizer/" + cfg.Version
	useProtobuf(restCfg)
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}

	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartStructuredLogging(4)
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	recorder := broadcaster.NewRecorder(scheme.Scheme, v1.EventSource{Component: "carve-resizer " + driver})

	ctrl, err := New(Options{
		Driver: driver, Client: client, Expander: exp, SingleNodeMultiWriter: exp.SingleNodeMultiWriter,
		Recorder: recorder, Timeout: cfg.Timeout, RetryStart: cfg.RetryStart, RetryMax: cfg.RetryMax,
		Resync: 10 * time.Minute,
	})
	if err != nil {
		return err
	}
	if !cfg.LeaderElection {
		return ctrl.Run(ctx, cfg.Workers)
	}
	return leading(ctx, client, cfg.LeaderElectionNamespace, LeaseName(driver), func(ctx context.Context) error {
		return ctrl.Run(ctx, cfg.Workers)
	})
}

// useProtobuf makes the client talk protobuf, as csi-resizer and the
// controller-manager do: every PV and claim of the cluster passes through
// the leader's watches, and decoding them from JSON was most of its CPU
// time. Every kind it reads or writes (PVs, claims, Leases, Events,
// Secrets) is built in, so has protobuf; JSON stays accepted.
func useProtobuf(c *rest.Config) {
	c.ContentType = runtime.ContentTypeProtobuf
	c.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		c, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster config (or pass --kubeconfig): %w", err)
		}
		return c, nil
	}
	c, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	return c, nil
}

// leading runs f while this process holds the Lease name in namespace ns
// (default: the pod's own namespace). Losing the Lease ends the process's
// run with an error, so that a restarted container starts clean.
func leading(ctx context.Context, client kubernetes.Interface, ns, name string, f func(context.Context) error) error {
	log := klog.FromContext(ctx)
	if ns == "" {
		ns = "default"
		if b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err == nil {
			ns = strings.TrimSpace(string(b))
		}
	}
	host, err := os.Hostname()
	if err != nil {
		return fmt.Errorf("hostname: %w", err)
	}
	id := host + "_" + uuid.NewString()
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: ns, Name: name},
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: id},
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var led atomic.Bool
	done := make(chan error, 1)
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   15 * time.Second,
		RenewDeadline:   10 * time.Second,
		RetryPeriod:     5 * time.Second,
		ReleaseOnCancel: true,
		Name:            name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				led.Store(true)
				log.Info("Leading", "lease", klog.KRef(ns, name), "identity", id)
				done <- f(ctx)
				cancel()
			},
			OnStoppedLeading: func() {},
			OnNewLeader: func(identity string) {
				if identity != id {
					log.Info("Another instance leads", "lease", klog.KRef(ns, name), "leader", identity)
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	log.Info("Waiting for the lease", "lease", klog.KRef(ns, name), "identity", id)
	le.Run(lctx)
	if ctx.Err() != nil {
		if !led.Load() {
			return nil
		}
		return <-done
	}
	// Run returns before ctx ends only after leading: f failed or the
	// lease was lost (then f's context ended and f returns).
	if err := <-done; err != nil {
		return err
	}
	return fmt.Errorf("lost the lease %s/%s", ns, name)
}
