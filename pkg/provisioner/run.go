package provisioner

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	mount "k8s.io/mount-utils"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller/metrics"

	"github.com/carve-csi/carve/pkg/httpserve"
	"github.com/carve-csi/carve/pkg/kubeview"
	"github.com/carve-csi/carve/pkg/safemount"
	"github.com/carve-csi/carve/pkg/sharemount"
	"github.com/carve-csi/carve/pkg/volume"
)

// Config is everything cmd/provisioner reads from flags.
type Config struct {
	Name           string // provisioner name; StorageClass.provisioner must match
	MountMap       sharemount.Map
	MountsDir      string
	Threadiness    int
	LeaderElect    bool
	LeaderElectNS  string
	MetricsAddress string
	HealthAddress  string
	ResyncPeriod   time.Duration
}

// Run starts the controller and blocks until ctx ends.
func Run(ctx context.Context, client kubernetes.Interface, cfg Config) error {
	logger := klog.FromContext(ctx)

	factory := kubeview.NewInformerFactory(client, cfg.ResyncPeriod)
	pvInformer := factory.Core().V1().PersistentVolumes().Informer()
	pvcInformer := factory.Core().V1().PersistentVolumeClaims().Informer()
	classInformer := factory.Storage().V1().StorageClasses().Informer()
	view, err := kubeview.NewClusterView(pvInformer, pvcInformer)
	if err != nil {
		return err
	}
	view.RecordGIDsFrom(kubeview.RecordedGIDs(cfg.MountMap))

	resolver := &sharemount.Resolver{Map: cfg.MountMap, MountsDir: cfg.MountsDir}
	if cfg.MountsDir != "" {
		resolver.Mounter = safemount.New(mount.New(""))
	}
	svc := volume.New(volume.Options{Referrers: view, GIDs: view, PurgeContext: ctx}, newNFS(client, resolver, cfg.Name), newGluster(client, resolver))

	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartStructuredLogging(4)
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	recorder := broadcaster.NewRecorder(scheme.Scheme, v1.EventSource{Component: "carve-provisioner"})

	// Serve the lib's metrics from our own registry: its built-in server uses
	// the global registry and http.DefaultServeMux.
	m := metrics.New("controller")
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.PersistentVolumeClaimProvisionTotal, m.PersistentVolumeClaimProvisionFailedTotal,
		m.PersistentVolumeClaimProvisionDurationSeconds, m.PersistentVolumeDeleteTotal,
		m.PersistentVolumeDeleteFailedTotal, m.PersistentVolumeDeleteDurationSeconds)

	opts := []func(*controller.ProvisionController) error{
		// carve elects the leader itself (lead), so a stopping replica hands the Lease over.
		controller.LeaderElection(false),
		controller.Threadiness(cfg.Threadiness),
		controller.ResyncPeriod(cfg.ResyncPeriod),
		controller.ClaimsInformer(pvcInformer),
		controller.VolumesInformer(pvInformer),
		// Ours, not the lib's own, so readiness can wait for it too.
		controller.ClassesInformer(classInformer),
		controller.MetricsInstance(m),
		// Retry saving a PV forever instead of deleting the carved directory
		// after five failures: the data must never depend on API availability.
		controller.CreateProvisionedPVLimiter(workqueue.NewTypedItemExponentialFailureRateLimiter[any](time.Second, 5*time.Minute)),
	}
	classes := func() []*storagev1.StorageClass {
		var out []*storagev1.StorageClass
		for _, o := range classInformer.GetStore().List() {
			if sc, ok := o.(*storagev1.StorageClass); ok {
				out = append(out, sc)
			}
		}
		return out
	}
	prov := New(svc, view, recorder).WithClasses(classes)
	pc := controller.NewProvisionController(logger, client, cfg.Name, prov, opts...)

	mux := httpserve.Health(map[string]httpserve.Check{
		"synced": httpserve.Synced(map[string]cache.InformerSynced{"PersistentVolume": pvInformer.HasSynced,
			"PersistentVolumeClaim": pvcInformer.HasSynced, "StorageClass": classInformer.HasSynced}),
		"apiserver": func(ctx context.Context) error {
			_, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
			return err
		},
		"shares": func(context.Context) error { return volume.CheckShares(cfg.MountMap, false) },
	})
	if err := httpserve.Serve(ctx, "health", cfg.HealthAddress, mux); err != nil {
		return fmt.Errorf("--health-address: %w", err)
	}
	if err := httpserve.Serve(ctx, "metrics", cfg.MetricsAddress, promhttp.HandlerFor(reg, promhttp.HandlerOpts{})); err != nil {
		return fmt.Errorf("--metrics-address: %w", err)
	}

	// Finish purges a crash may have interrupted.
	volume.PurgeLeftovers(ctx, cfg.MountMap)

	factory.Start(ctx.Done())
	logger.Info("Starting carve provisioner", "name", cfg.Name, "threadiness", cfg.Threadiness, "leaderElection", cfg.LeaderElect)
	if cfg.LeaderElect {
		ns := cfg.LeaderElectNS
		if ns == "" {
			ns = leaseNamespace()
		}
		id, err := leaderIdentity()
		if err != nil {
			return err
		}
		if err := lead(ctx, client, ns, leaseName(cfg.Name), id, pc.Run, prov.Stop); err != nil {
			return err
		}
	} else {
		pc.Run(ctx)
	}
	factory.Shutdown()
	svc.WaitPurges()
	return nil
}
