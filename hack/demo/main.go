// Command demo shows carve on a local Kubernetes control plane: a real NFS
// server, the classic provisioner and the MongoDB StatefulSet example, walked
// through scale up and down, deletion and re-attach. Run it with `make demo`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/carve-csi/carve/internal/testenv/ganesha"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/test/cluster"
	"github.com/carve-csi/carve/test/scenario"
)

func main() {
	exit := flag.Bool("exit", false, "stop everything at the end instead of staying up until Ctrl-C")
	flag.Parse()
	if err := run(*exit); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(exitAtEnd bool) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("run as root: the demo starts an NFS server on port 2049 (sudo make demo)")
	}
	repo, err := os.Getwd()
	if err != nil {
		return err
	}
	deps := exec.Command("bash", filepath.Join(repo, "hack/install-deps.sh"))
	deps.Stdout, deps.Stderr = os.Stdout, os.Stderr
	if err := deps.Run(); err != nil {
		return fmt.Errorf("installing the NFS server: %w", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	work, err := os.MkdirTemp("", "carve-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	share := filepath.Join(work, "export")
	if err := os.Mkdir(share, 0o755); err != nil {
		return err
	}
	// carve reaches the export without a mount of its own: declare it the share.
	if err := dirvol.Declare(share); err != nil {
		return err
	}
	fmt.Println("Starting NFS-Ganesha exporting", share, "as 127.0.0.1:/export")
	nfs, err := ganesha.StartServer(ctx, ganesha.Options{ExportDir: share})
	if err != nil {
		return err
	}
	defer nfs.Stop()

	fmt.Println("Starting a local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok);")
	fmt.Println("the first run builds them from source, about 10-20 minutes on 2 cores.")
	c, err := cluster.Start(ctx, cluster.Options{Nodes: 3, Logf: func(f string, a ...any) { fmt.Printf("  "+f+"\n", a...) }})
	if err != nil {
		return err
	}
	defer c.Stop()

	env := &scenario.Env{
		Cluster: c, NFS: nfs, ShareDir: share, Repo: repo, Namespace: "mongo",
		Logf: func(f string, a ...any) { fmt.Printf(f+"\n", a...) },
		Show: func(ctx context.Context, title string) {
			out, err := c.Kubectl(ctx, "get", "sts,pods,pvc,pv", "-n", "mongo", "-o", "wide")
			if err != nil {
				out = err.Error()
			}
			fmt.Printf("\n$ kubectl get sts,pods,pvc,pv -n mongo\n%s\n$ tree of the NFS share (%s)\n%s\n\n", out, share, scenario.Tree(share))
		},
	}
	if err := env.StartProvisioner(ctx); err != nil {
		return err
	}
	if err := env.Run(ctx); err != nil {
		c.MarkFailed()
		return err
	}
	fmt.Println("Done: every step held.")
	if exitAtEnd {
		return nil
	}
	fmt.Printf("The cluster stays up: KUBECONFIG=%s kubectl get pv\nCtrl-C to stop.\n", c.Kubeconfig)
	<-ctx.Done()
	return nil
}
