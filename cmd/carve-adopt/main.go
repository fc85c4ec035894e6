// Command carve-adopt takes over PersistentVolumes made by
// nfs-subdir-external-provisioner, csi-driver-nfs or the in-tree glusterfs
// plugin with heketi: each becomes a carve PV for the same data, bound to
// the same claim. It prints what it would do unless given --apply
// (docs/adopt.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/carve-csi/carve/pkg/adopt"
	"github.com/carve-csi/carve/pkg/buildinfo"
	"github.com/carve-csi/carve/pkg/gluster"
	"github.com/carve-csi/carve/pkg/kubeclient"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/sharemount"
)

// list is a repeatable, comma-separable string flag.
type list []string

func (l *list) String() string { return strings.Join(*l, ",") }

func (l *list) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

func main() {
	klog.InitFlags(nil)
	mountMap := sharemount.Map{}
	var classes, glusterServers list
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: %s [flags] [PV...]\n\n"+
			"Replaces PersistentVolumes of nfs-subdir-external-provisioner, csi-driver-nfs and heketi (in-tree glusterfs)\n"+
			"by carve PVs for the same data, bound to the same claims. Without --apply it only prints what it would do.\n\n", os.Args[0])
		flag.PrintDefaults()
	}
	kubeconfig := flag.String("kubeconfig", defaultKubeconfig(), "kubeconfig file; empty: in-cluster configuration")
	flag.Var(mountMap, "mount-map", "SERVER:SHARE=LOCALPATH: the NFS share is mounted at LOCALPATH here (repeatable); "+
		"carve-adopt writes carve's record of each directory there")
	flag.Var(&classes, "storage-class", "adopt every PV of this StorageClass (repeatable, or comma-separated)")
	all := flag.Bool("all", false, "adopt every PV of a kind carve adopts")
	apply := flag.Bool("apply", false, "do it; without --apply nothing is changed")
	allowInUse := flag.Bool("allow-in-use", false, "also adopt PVs whose claim a running pod uses (running pods are not touched: restart them afterwards)")
	pattern := flag.String("path-pattern", adopt.SubdirDefaultPattern, "nfs-subdir PVs: the pathPattern their StorageClass had, "+
		"in carve's or nfs-subdir's syntax (${.PVC.namespace}/${.PVC.name})")
	volumeType := flag.String("volume-type", params.VolumeTypeCSI, "NFS PVs become: csi (carve.csi.dev, mounted by carve's node plugin) "+
		"or nfs (in-tree spec.nfs, as carve's classic provisioner writes them)")
	flag.Var(&glusterServers, "gluster-servers", "heketi PVs: the Gluster servers to use instead of the addresses in their Endpoints")
	executor := flag.String("gluster-executor", params.ExecutorLocal, "how to reach glusterd for heketi volumes: local (its socket) or ssh")
	secret := flag.String("gluster-executor-secret", "", "executor ssh: NAMESPACE/NAME of a Secret as for the StorageClass's executorSecretName")
	socket := flag.String("glusterd-socket", "", "executor local: glusterd's socket; empty: the gluster CLI's default")
	bindTimeout := flag.Duration("bind-timeout", 2*time.Minute, "how long to wait for each claim to be Bound to its new PV")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()

	if *showVersion {
		fmt.Println("carve-adopt", buildinfo.Version)
		return
	}
	usage := func(msg string) {
		fmt.Fprintln(os.Stderr, msg)
		os.Exit(2)
	}
	if *volumeType != params.VolumeTypeCSI && *volumeType != params.VolumeTypeNFS {
		usage("--volume-type must be csi or nfs")
	}
	p, err := params.ParseAnyPattern(*pattern)
	if err != nil {
		usage(fmt.Sprintf("--path-pattern: %v", err))
	}
	spec := gluster.ExecutorSpec{Kind: *executor}
	switch *executor {
	case params.ExecutorLocal:
	case params.ExecutorSSH:
		ns, name, ok := strings.Cut(*secret, "/")
		if !ok || ns == "" || name == "" {
			usage("--gluster-executor ssh needs --gluster-executor-secret NAMESPACE/NAME")
		}
		spec.SecretNamespace, spec.SecretName = ns, name
	default:
		usage("--gluster-executor must be local or ssh")
	}
	sel := adopt.Selection{PVs: flag.Args(), StorageClasses: classes, All: *all}
	if !sel.All && len(sel.PVs) == 0 && len(sel.StorageClasses) == 0 {
		usage("nothing selected: name PVs, or give --storage-class CLASS or --all")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := klog.FromContext(ctx)
	ctx = klog.NewContext(ctx, logger)
	client, err := kubeclient.New(*kubeconfig, "carve-adopt", 0, 0)
	if err != nil {
		logger.Error(err, "Cannot create Kubernetes client")
		klog.FlushAndExit(klog.ExitFlushTimeout, 1)
	}
	report, err := adopt.Run(ctx, adopt.Config{
		Client: client,
		Mapping: adopt.Options{
			MountMap:       mountMap,
			Pattern:        p,
			VolumeType:     *volumeType,
			GlusterServers: glusterServers,
		},
		Select:          sel,
		Apply:           *apply,
		AllowInUse:      *allowInUse,
		GlusterExecutor: spec,
		GlusterdSocket:  *socket,
		BindTimeout:     *bindTimeout,
		Out:             os.Stdout,
	})
	if err != nil {
		logger.Error(err, "carve-adopt failed")
		code := 1
		if errors.Is(err, params.ErrInvalid) {
			code = 2
		}
		klog.FlushAndExit(klog.ExitFlushTimeout, code)
	}
	klog.Flush()
	if report.Failed() {
		os.Exit(1)
	}
}

// defaultKubeconfig is where kubectl looks: $KUBECONFIG (its first file),
// else ~/.kube/config when it exists; "" means in-cluster.
func defaultKubeconfig() string {
	if v := os.Getenv("KUBECONFIG"); v != "" {
		return filepath.SplitList(v)[0]
	}
	if home, err := os.UserHomeDir(); err == nil {
		p := filepath.Join(home, ".kube", "config")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}
