// Command carve-resizer expands CSI volumes when their claims ask for more:
// csi-resizer's work for a driver that expands in the controller
// (ControllerExpandVolume). It accepts the flags deploy/csi-driver's
// controller.yaml gives csi-resizer, so an image of it is a drop-in
// replacement there:
//
//	--csi-address                  the driver's socket
//	--kubeconfig                   empty: in-cluster
//	--leader-election              elect a leader with the Lease external-resizer-<driver>
//	--leader-election-namespace    where the Lease lives (default: the pod's namespace)
//	--kube-api-qps, --kube-api-burst
//	--workers                      claims resized at once
//	--timeout                      of each ControllerExpandVolume call
//	--retry-interval-start, --retry-interval-max   backoff of failed resizes
//	--v                            log verbosity
//
// The controller logic is in build/sidecars/internal/resize.
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

	"github.com/carve-csi/carve/build/sidecars/internal/resize"
)

// version is set with -ldflags -X main.version=...
var version = "dev"

func main() {
	klog.InitFlags(flag.CommandLine) // --v and klog's other flags
	var cfg resize.Config
	flag.StringVar(&cfg.CSIAddress, "csi-address", "/run/csi/socket", "the CSI driver's socket, as this container sees it")
	flag.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig file (empty: in-cluster config)")
	flag.BoolVar(&cfg.LeaderElection, "leader-election", false, "elect a leader with a Lease; only the leader resizes")
	flag.StringVar(&cfg.LeaderElectionNamespace, "leader-election-namespace", "", "namespace of the Lease (default: this pod's)")
	qps := flag.Float64("kube-api-qps", 5, "API server requests per second")
	flag.IntVar(&cfg.KubeAPIBurst, "kube-api-burst", 10, "API server request burst")
	flag.IntVar(&cfg.Workers, "workers", 10, "claims resized concurrently")
	flag.DurationVar(&cfg.Timeout, "timeout", 10*time.Second, "timeout of each CSI call")
	flag.DurationVar(&cfg.RetryStart, "retry-interval-start", time.Second, "first retry interval of a failed resize; doubles on each failure")
	flag.DurationVar(&cfg.RetryMax, "retry-interval-max", 5*time.Minute, "longest retry interval of a failed resize")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println("carve-resizer", version)
		return
	}
	cfg.KubeAPIQPS = float32(*qps)
	cfg.Version = version
	if cfg.Workers < 1 {
		fmt.Fprintln(os.Stderr, "--workers must be at least 1")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	logger := klog.Background().WithName("carve-resizer")
	ctx = klog.NewContext(ctx, logger)
	if err := resize.Run(ctx, cfg); err != nil {
		logger.Error(err, "carve-resizer failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}
