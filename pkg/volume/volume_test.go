package volume_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/volid"
	"github.com/carve-csi/carve/pkg/volume/volumetest"
)

// plainDir is the smallest backend: every share is one local directory.
// The core's policy is tested on it without any server.
type plainDir struct{ root string }

func (p plainDir) Kind() string                        { return params.BackendNFS }
func (p plainDir) Servers(cfg *params.Config) []string { return []string{cfg.Server} }
func (p plainDir) Share(context.Context, []string, string) (*dirvol.Share, error) {
	return dirvol.Open(p.root)
}
func (p plainDir) MountSpec(volid.ID, []string) backend.MountSpec { return backend.MountSpec{} }

func TestConformancePlainDirectory(t *testing.T) {
	volumetest.Run(t, func(t *testing.T) volumetest.Env {
		root := filepath.Join(t.TempDir(), "share")
		if err := os.Mkdir(root, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := dirvol.Declare(root); err != nil {
			t.Fatal(err)
		}
		return volumetest.Env{
			Backend:   plainDir{root: root},
			Params:    map[string]string{"backend": "nfs", "server": "plain", "share": "/plain"},
			LocalRoot: root,
		}
	})
}
