// Command csi-driver is carve's CSI plugin: identity, controller and node
// services in one binary; --mode picks which of controller and node it runs.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/carve-csi/carve/pkg/buildinfo"
	"github.com/carve-csi/carve/pkg/csidriver"
	"github.com/carve-csi/carve/pkg/kubeclient"
	"github.com/carve-csi/carve/pkg/sharemount"
)

func main() {
	klog.InitFlags(nil)
	cfg := csidriver.Config{MountMap: sharemount.Map{}, Mode: csidriver.ModeAll, Version: buildinfo.Version}
	flag.StringVar(&cfg.Endpoint, "endpoint", "unix:///csi/csi.sock", "CSI endpoint: unix:///path/csi.sock, or tcp://host:port")
	flag.StringVar(&cfg.NodeID, "nodeid", "", "this node's name (required for the node service)")
	flag.StringVar(&cfg.Name, "driver-name", csidriver.DefaultName, "CSI driver name; the CSIDriver object and StorageClass.provisioner must match")
	flag.Var(&cfg.Mode, "mode", "services to run: all, controller or node; or fuse: the node's FUSE holder (--fuse-socket), which makes the node's Gluster mounts so they outlive node plugin restarts")
	flag.Var(cfg.MountMap, "mount-map", "SERVER:SHARE=LOCALPATH: the share is mounted at LOCALPATH here (repeatable); "+
		"the controller carves there, the node bind-mounts volumes from there")
	flag.StringVar(&cfg.MountsDir, "mounts-dir", "", "controller: mount unmapped shares under this directory (needs privileges)")
	flag.StringVar(&cfg.GlusterLogDir, "gluster-log-dir", csidriver.DefaultGlusterLogDir,
		"node: where Gluster FUSE clients log, one file per volume (mount option log-file)")
	flag.StringVar(&cfg.FUSESocket, "fuse-socket", "", "node: the FUSE holder's socket (carve-csi-fuse); Gluster FUSE mounts are made there, "+
		"so restarting this process's pod does not end them; empty: mount here. Mode fuse: the socket to serve")
	flag.StringVar(&cfg.FUSERoot, "fuse-root", "/var/lib/kubelet/pods", "mode fuse: mount only beneath this directory (the kubelet's pods directory)")
	flag.StringVar(&cfg.MetricsAddress, "metrics-address", "", "serve Prometheus metrics on this address (e.g. :8080); empty: off")
	flag.StringVar(&cfg.HealthAddress, "health-address", "", "serve /healthz and /readyz on this address (e.g. :8081); empty: off")
	kubeReferrers := flag.Bool("kube-referrers", true, "controller: watch PersistentVolumes, and read the claims of those that point at "+
		"a directory, so a directory is never deleted or handed out while another live volume uses it (needs list/watch RBAC on both)")
	// A DeleteVolume reads the deleted PV's claim: client-go's 5/s would
	// hold a mass deletion to 5 volumes/s.
	qps := flag.Float64("kube-api-qps", 50, "controller: client-side limit of API requests per second (--kube-referrers)")
	burst := flag.Int("kube-api-burst", 100, "controller: client-side burst of API requests (--kube-referrers)")
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig file for --kube-referrers; empty: in-cluster configuration")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()

	if *showVersion {
		fmt.Println("carve csi-driver", buildinfo.Version)
		return
	}
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "unexpected arguments: %v\n", flag.Args())
		os.Exit(2)
	}
	if *qps <= 0 || *burst <= 0 {
		fmt.Fprintln(os.Stderr, "--kube-api-qps and --kube-api-burst must be positive")
		os.Exit(2)
	}
	if cfg.Mode == csidriver.ModeFUSE && cfg.FUSESocket == "" {
		fmt.Fprintln(os.Stderr, "--mode=fuse needs --fuse-socket PATH")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := klog.FromContext(ctx)
	ctx = klog.NewContext(ctx, logger)
	if cfg.Mode.Controller() && len(cfg.MountMap) == 0 && cfg.MountsDir == "" {
		// deploy/csi-driver as shipped: it runs, and every claim of a class
		// naming a share fails with an event that says which flag is missing.
		logger.Info("WARNING: no share configured (--mount-map SERVER:SHARE=LOCALPATH or --mounts-dir DIR): " +
			"only Gluster classes in mode volume can provision; deploy/examples adds a share")
	}

	if *kubeReferrers && cfg.Mode.Controller() {
		client, err := kubeclient.New(*kubeconfig, "carve-csi-driver", float32(*qps), *burst)
		if err != nil {
			logger.Error(err, "Cannot create Kubernetes client for --kube-referrers (set --kube-referrers=false to run without a cluster view)")
			klog.FlushAndExit(klog.ExitFlushTimeout, 1)
		}
		cfg.KubeClient = client
	}
	if err := csidriver.Run(ctx, cfg); err != nil {
		logger.Error(err, "CSI driver failed")
		klog.FlushAndExit(klog.ExitFlushTimeout, 1)
	}
	klog.Flush()
}
