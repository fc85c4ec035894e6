package nfs

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	mount "k8s.io/mount-utils"

	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/sharemount"
	"github.com/carve-csi/carve/pkg/volume/volumetest"
)

// The NFS backend on a share reached through --mount-map (here a local
// directory; nfs_real_test.go serves it over NFS too).
func TestConformance(t *testing.T) {
	volumetest.Run(t, func(t *testing.T) volumetest.Env {
		root := filepath.Join(t.TempDir(), "export")
		if err := os.Mkdir(root, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := dirvol.Declare(root); err != nil {
			t.Fatal(err)
		}
		m := sharemount.Map{}
		if err := m.Set("nfs.example:/export=" + root); err != nil {
			t.Fatal(err)
		}
		return volumetest.Env{
			Backend:   New(&sharemount.Resolver{Map: m}),
			Params:    map[string]string{"backend": "nfs", "server": "nfs.example", "share": "/export"},
			LocalRoot: root,
		}
	})
}

// TestOnDemandShareRemounted: a share the backend mounted itself
// (--mounts-dir) and that went away is mounted again on the next use; the
// backend does not hold on to a dead mount.
func TestOnDemandShareRemounted(t *testing.T) {
	ctx := context.Background()
	fake := mount.NewFakeMounter(nil)
	b := New(&sharemount.Resolver{MountsDir: t.TempDir(), Mounter: fake})
	s1, err := b.Share(ctx, []string{"srv"}, "/export")
	if err != nil {
		t.Fatal(err)
	}
	if err := fake.Unmount(s1.Root()); err != nil {
		t.Fatal(err)
	}
	s2, err := b.Share(ctx, []string{"srv"}, "/export")
	if err != nil {
		t.Fatal(err)
	}
	if s2 != s1 {
		t.Error("a second engine for the same local path")
	}
	n := 0
	for _, a := range fake.GetLog() {
		if a.Action == "mount" && a.Source == "srv:/export" && a.FSType == "nfs" {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d mounts of srv:/export, want 2 (mounted again after it went away)", n)
	}
}
