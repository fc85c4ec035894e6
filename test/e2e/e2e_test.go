//go:build e2e

// Package e2e runs carve's StatefulSet story on a real local control plane
// with a real NFS server: `make e2e`.
package e2e

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/carve-csi/carve/internal/testenv/ganesha"
	"github.com/carve-csi/carve/test/cluster"
	"github.com/carve-csi/carve/test/scenario"
)

func TestStatefulSetStory(t *testing.T) {
	share := filepath.Join(t.TempDir(), "export")
	if err := os.Mkdir(share, 0o755); err != nil {
		t.Fatal(err)
	}
	nfs := ganesha.Start(t, share)
	c := cluster.StartForTest(t, cluster.Options{Nodes: 3})
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	env := &scenario.Env{Cluster: c, NFS: nfs, ShareDir: share, Repo: repo, Namespace: "mongo", Logf: t.Logf}
	ctx := t.Context()
	if err := env.StartProvisioner(ctx); err != nil {
		t.Fatal(err)
	}
	if err := env.Run(ctx); err != nil {
		t.Logf("share:\n%s", scenario.Tree(share))
		t.Fatal(err)
	}
	t.Logf("share at the end:\n%s", scenario.Tree(share))
}
