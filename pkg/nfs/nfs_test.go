package nfs

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/carve-csi/carve/pkg/volume/volumetest"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/sharemount"
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
