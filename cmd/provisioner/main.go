// Command provisioner is carve's classic external provisioner: it watches
// claims of StorageClasses that name it and carves one directory per claim.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/carve-csi/carve/pkg/buildinfo"
	"github.com/carve-csi/carve/pkg/kubeclient"
	"github.com/carve-csi/carve/pkg/provisioner"
	"github.com/carve-csi/carve/pkg/sharemount"
)

func main() {
	klog.InitFlags(nil)
	cfg := provisioner.Config{MountMap: sharemount.Map{}}
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig file; empty: in-cluster configuration")
	flag.StringVar(&cfg.Name, "name", "carve.csi.dev/provisioner", "provisioner name; StorageClass.provisioner must equal it")
	flag.Var(cfg.MountMap, "mount-map", "SERVER:SHARE=LOCALPATH: the share is already mounted at LOCALPATH (repeatable)")
	flag.StringVar(&cfg.MountsDir, "mounts-dir", "", "mount unmapped shares under this directory (needs privileges); empty: only --mount-map shares")
	flag.IntVar(&cfg.Threadiness, "threadiness", 32, "claim and volume workers")
	qps := flag.Float64("kube-api-qps", 200, "client-side limit of API requests per second (events have a budget of their own of the same size)")
	burst := flag.Int("kube-api-burst", 400, "client-side burst of API requests")
	flag.BoolVar(&cfg.LeaderElect, "leader-elect", true, "elect a leader with a Lease, so replicas can run for availability")
	flag.StringVar(&cfg.LeaderElectNS, "leader-elect-namespace", "", "namespace of the Lease; empty: $POD_NAMESPACE or the service account's")
	flag.StringVar(&cfg.MetricsAddress, "metrics-address", "", "serve Prometheus metrics on this address (e.g. :8080); empty: off")
	flag.StringVar(&cfg.HealthAddress, "health-address", ":8081", "serve /healthz and /readyz on this address; empty: off")
	flag.DurationVar(&cfg.ResyncPeriod, "resync-period", 15*time.Minute, "informer resync; failed operations are also retried then")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()

	if *showVersion {
		fmt.Println("carve provisioner", buildinfo.Version)
		return
	}
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "unexpected arguments: %v\n", flag.Args())
		os.Exit(2)
	}
	if cfg.Threadiness < 1 || *qps <= 0 || *burst < 1 {
		fmt.Fprintln(os.Stderr, "--threadiness, --kube-api-qps and --kube-api-burst must be positive")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := klog.FromContext(ctx)
	ctx = klog.NewContext(ctx, logger)
	if len(cfg.MountMap) == 0 && cfg.MountsDir == "" {
		// deploy/provisioner as shipped: it runs, and every claim of a class
		// naming a share fails with an event that says which flag is missing.
		logger.Info("WARNING: no share configured (--mount-map SERVER:SHARE=LOCALPATH or --mounts-dir DIR): " +
			"only Gluster classes in mode volume can provision; deploy/examples adds a share")
	}

	client, err := kubeclient.New(*kubeconfig, "carve-provisioner", float32(*qps), *burst)
	if err != nil {
		logger.Error(err, "Cannot create Kubernetes client")
		klog.FlushAndExit(klog.ExitFlushTimeout, 1)
	}
	events, err := kubeclient.New(*kubeconfig, "carve-provisioner", float32(*qps), *burst)
	if err != nil {
		logger.Error(err, "Cannot create Kubernetes client")
		klog.FlushAndExit(klog.ExitFlushTimeout, 1)
	}
	client = kubeclient.EventsApart(client, events)
	if err := provisioner.Run(ctx, client, cfg); err != nil {
		logger.Error(err, "Provisioner failed")
		klog.FlushAndExit(klog.ExitFlushTimeout, 1)
	}
	klog.Flush()
}
