package volume_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/klog/v2/ktesting"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/volid"
	"github.com/carve-csi/carve/pkg/volume"
	"github.com/carve-csi/carve/pkg/volume/volumetest"
)

// adoptFixture is a declared share holding directories another provisioner
// made, each with a file in it.
func adoptFixture(t *testing.T, dirs ...string) (string, *volumetest.FakeCluster, *volume.Service) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "share")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := dirvol.Declare(root); err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(root, d), 0o777); err != nil { // as nfs-subdir leaves it
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, d, "data.txt"), []byte("old data\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cluster := &volumetest.FakeCluster{}
	return root, cluster, volume.New(volume.Options{Referrers: cluster}, plainDir{root: root})
}

func nfsID(dir ...string) volid.ID {
	return volid.ID{Backend: params.BackendNFS, Servers: []string{"plain"}, Share: "/plain", Dir: dir, OnDelete: params.OnDeleteRetain}
}

func TestAdoptRecordsOwnershipAndKeepsData(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	root, _, svc := adoptFixture(t, "web-data-web-0-pvc-1")
	req := volume.AdoptRequest{ID: nfsID("web-data-web-0-pvc-1"), Name: "pvc-1", Namespace: "web", Claim: "data-web-0",
		SizeBytes: 1 << 30, GID: 2001, DryRun: true}

	// A dry run checks and writes nothing: no record, and the declared
	// share's identity is not even filled in.
	if err := svc.Adopt(ctx, req); err != nil {
		t.Fatalf("dry run: %v", err)
	}
	for _, p := range []string{".carve-meta", ".carve-share.id"} {
		if _, err := os.Stat(filepath.Join(root, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("dry run left %s (stat: %v)", p, err)
		}
	}

	req.DryRun = false
	for i := range 2 { // the second run finds its own record: idempotent
		if err := svc.Adopt(ctx, req); err != nil {
			t.Fatalf("adopt (run %d): %v", i+1, err)
		}
	}
	share, err := dirvol.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	info, err := share.Lookup(req.ID.Dir)
	if err != nil {
		t.Fatal(err)
	}
	m := info.Meta
	if m == nil || m.PV != "pvc-1" || m.Namespace != "web" || m.Claim != "data-web-0" || m.GID != 2001 || m.CapacityBytes != 1<<30 {
		t.Fatalf("record after adoption: %+v", m)
	}
	if info.Mode != 0o777 {
		t.Errorf("adoption changed the directory's mode to %#o", info.Mode)
	}
	if b, err := os.ReadFile(filepath.Join(root, "web-data-web-0-pvc-1", "data.txt")); err != nil || string(b) != "old data\n" {
		t.Errorf("data after adoption: %q %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(root, ".carve-share.id")); err != nil {
		t.Errorf("the share has no identity after a write: %v", err)
	}
}

func TestAdoptRefusals(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	root, cluster, svc := adoptFixture(t, "a", "outer/inner/x", "taken")
	adopt := func(name string, dir ...string) error {
		return svc.Adopt(ctx, volume.AdoptRequest{ID: nfsID(dir...), Name: name, Namespace: "ns", Claim: "c-" + name})
	}
	if err := adopt("pv-inner", "outer", "inner"); err != nil {
		t.Fatal(err)
	}
	if err := adopt("pv-taken", "taken"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	cluster.Set(nfsID("a").Location(), volume.Ref{PV: "carve-pv", Namespace: "ns", Live: true})

	for _, c := range []struct {
		name string
		err  error
		pv   string
		dir  []string
	}{
		{"missing directory", backend.ErrNotFound, "pv-x", []string{"missing"}},
		{"recorded for another volume", backend.ErrConflict, "pv-other", []string{"taken"}},
		{"holds an adopted volume", backend.ErrConflict, "pv-outer", []string{"outer"}},
		{"inside an adopted volume", backend.ErrConflict, "pv-deeper", []string{"outer", "inner", "x"}},
		{"used by a live carve PV", backend.ErrConflict, "pv-a", []string{"a"}},
		{"a symlink", backend.ErrConflict, "pv-link", []string{"link"}},
		{"outside the share", backend.ErrInvalid, "pv-up", []string{"..", "etc"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := adopt(c.pv, c.dir...)
			if !errors.Is(err, c.err) {
				t.Fatalf("adopt %v: %v, want %v", c.dir, err, c.err)
			}
			t.Logf("refused: %v", err)
		})
	}
	// Nothing refused got a record.
	share, _ := dirvol.Open(root)
	recs, err := share.Records(ctx)
	if err != nil || len(recs) != 2 {
		t.Fatalf("records after the refusals: %+v %v, want pv-inner's and pv-taken's", recs, err)
	}
}
