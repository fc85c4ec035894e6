package volume_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/klog/v2/ktesting"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/volume"
)

// TestCopySourceCannotBeDeleted: while a restore reads a snapshot (or a
// clone its source volume), deleting that source is ErrBusy: a purge under
// the copy would make it silently partial.
func TestCopySourceCannotBeDeleted(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	root := filepath.Join(t.TempDir(), "share")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := dirvol.Declare(root); err != nil {
		t.Fatal(err)
	}
	svc := volume.New(volume.Options{PurgeContext: ctx}, plainDir{root: root})
	t.Cleanup(svc.WaitPurges)
	cfg, err := params.Parse(map[string]string{"backend": "nfs", "server": "plain", "share": "/plain", "onDelete": "delete"})
	if err != nil {
		t.Fatal(err)
	}
	request := func(name string, src *volume.Source) volume.Request {
		return volume.Request{Name: name, Namespace: "ns", Claim: name, Config: cfg, SizeBytes: 1 << 30, Source: src,
			Vars: params.Vars{Namespace: "ns", Name: name, PVName: name}}
	}
	src, err := svc.Create(ctx, request("src", nil))
	if err != nil {
		t.Fatal(err)
	}
	block := bytes.Repeat([]byte{1}, 16<<10)
	for i := range 4000 {
		d := filepath.Join(root, "ns", "src", fmt.Sprint(i%40))
		_ = os.MkdirAll(d, 0o755)
		if err := os.WriteFile(filepath.Join(d, fmt.Sprint(i)), block, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := svc.CreateSnapshot(ctx, "snap", src.ID)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		source *volume.Source
		del    func() error
	}{
		{"restore", &volume.Source{Snapshot: &snap.ID}, func() error { return svc.DeleteSnapshot(ctx, snap.ID) }},
		{"clone", &volume.Source{Volume: &src.ID}, func() error { _, err := svc.Delete(ctx, "src", src.ID); return err }},
	} {
		done := make(chan error, 1)
		go func() { _, err := svc.Create(ctx, request(tc.name, tc.source)); done <- err }()
		// The copy runs once its temporary directory exists.
		deadline := time.Now().Add(30 * time.Second)
		for !copying(t, filepath.Join(root, "ns")) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if err := tc.del(); !errors.Is(err, backend.ErrBusy) {
			t.Errorf("%s: deleting the source during the copy: %v, want ErrBusy", tc.name, err)
		}
		if err := <-done; err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if n := count(t, filepath.Join(root, "ns", tc.name)); n != 4000 {
			t.Errorf("%s: %d files copied, want 4000", tc.name, n)
		}
	}
	if err := svc.DeleteSnapshot(ctx, snap.ID); err != nil {
		t.Errorf("deleting the snapshot after the restore: %v", err)
	}
}

func copying(t *testing.T, dir string) bool {
	des, _ := os.ReadDir(dir)
	for _, d := range des {
		if strings.HasPrefix(d.Name(), ".carve-new-") {
			return true
		}
	}
	return false
}

func count(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
