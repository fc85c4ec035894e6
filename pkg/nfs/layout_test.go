package nfs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2/ktesting"

	"github.com/carve-csi/carve/internal/testenv/loopfs"
	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/sharemount"
	"github.com/carve-csi/carve/pkg/volume"
	"github.com/carve-csi/carve/pkg/volume/volumetest"
)

func btrfsEnv(t *testing.T) volumetest.Env {
	root := loopfs.Btrfs(t, 512<<20)
	if err := dirvol.Declare(root); err != nil {
		t.Fatal(err)
	}
	m := sharemount.Map{}
	if err := m.Set("nfs.example:/export=" + root); err != nil {
		t.Fatal(err)
	}
	return volumetest.Env{
		Backend:   New(&sharemount.Resolver{Map: m}),
		Params:    map[string]string{"backend": "nfs", "server": "nfs.example", "share": "/export", "layout": "btrfs"},
		LocalRoot: root,
	}
}

// The core's policy (re-attach, onDelete retain/archive/delete, live PVs,
// nesting, symlinks, snapshots, restores and clones) holds in the btrfs
// layout on a real btrfs filesystem.
func TestConformanceBtrfs(t *testing.T) {
	volumetest.Run(t, btrfsEnv)
}

// write appends n bytes to path and returns how many were written before
// the first error.
func write(path string, n int) (int, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	buf := bytes.Repeat([]byte{1}, 1<<20)
	done := 0
	for done < n {
		w, err := f.Write(buf[:min(len(buf), n-done)])
		done += w
		if err != nil {
			f.Close()
			return done, err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return done, err
	}
	return done, f.Close()
}

// A claim's size is enforced from its creation; ControllerExpandVolume
// (Service.Expand) raises it; data re-attached from a plain directory is
// kept with a warning that its size is not enforced.
func TestBtrfsLayoutSizeAndExpansion(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	env := btrfsEnv(t)
	svc := testService(ctx, env.Backend)
	cfg, err := params.Parse(env.Params)
	if err != nil {
		t.Fatal(err)
	}
	r := volume.Request{Name: "pvc-1", Namespace: "ns", Claim: "c", Config: cfg, SizeBytes: 8 << 20,
		Vars: params.Vars{Namespace: "ns", Name: "c", PVName: "pvc-1"}}
	res, err := svc.Create(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	vol := filepath.Join(env.LocalRoot, res.ID.DirPath())
	n, err := write(filepath.Join(vol, "f"), 16<<20)
	if !errors.Is(err, unix.EDQUOT) || n > 8<<20 {
		t.Fatalf("16 MiB into an 8 MiB claim: %d bytes, %v", n, err)
	}
	got, err := svc.Expand(ctx, res.ID, 24<<20)
	if err != nil || got != 24<<20 {
		t.Fatalf("Expand: %d %v", got, err)
	}
	if n, err := write(filepath.Join(vol, "g"), 8<<20); err != nil {
		t.Fatalf("8 MiB more after expanding to 24 MiB: %d %v", n, err)
	}
	share, err := svc.Share(ctx, res.ID)
	if err != nil {
		t.Fatal(err)
	}
	if q, err := share.Quota(res.ID.Dir); err != nil || q.LimitBytes != 24<<20 {
		t.Fatalf("quota after Expand: %+v %v", q, err)
	}
	// A retry of the create must not lower the expanded limit.
	if _, err := svc.Create(ctx, r); err != nil {
		t.Fatal(err)
	}
	if q, _ := share.Quota(res.ID.Dir); q.LimitBytes != 24<<20 {
		t.Fatalf("a retried create lowered the limit to %d", q.LimitBytes)
	}

	// Retained data in a plain directory, re-attached by a btrfs class.
	if err := os.MkdirAll(filepath.Join(env.LocalRoot, "ns", "old"), 0o2770); err != nil {
		t.Fatal(err)
	}
	r2 := volume.Request{Name: "pvc-2", Namespace: "ns", Claim: "old", Config: cfg, SizeBytes: 8 << 20,
		Vars: params.Vars{Namespace: "ns", Name: "old", PVName: "pvc-2"}}
	res2, err := svc.Create(ctx, r2)
	if err != nil || !res2.Reattached || len(res2.Warnings) != 1 || !strings.Contains(res2.Warnings[0], "not enforced") {
		t.Fatalf("re-attach of a plain directory: %+v %v", res2, err)
	}
}

// A btrfs class on a share that is not btrfs is refused before anything
// is written, as a conflict the administrator must fix, naming the share.
func TestBtrfsLayoutRefusedOnOtherFilesystems(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
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
	svc := testService(ctx, New(&sharemount.Resolver{Map: m}))
	_, err := createClaim(t, ctx, svc, map[string]string{"backend": "nfs", "server": "nfs.example", "share": "/export", "layout": "btrfs"}, "c", 1<<20)
	if !errors.Is(err, backend.ErrConflict) || !errors.Is(err, dirvol.ErrLayout) || !strings.Contains(err.Error(), root) {
		t.Fatalf("btrfs layout on a non-btrfs share: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(root, "ns")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("something was carved: %v", err)
	}
}

// testService is the volume service on b, with a fake cluster.
func testService(ctx context.Context, b backend.Backend) *volume.Service {
	return volume.New(volume.Options{Referrers: &volumetest.FakeCluster{}, GIDs: &volumetest.GIDs{}, PurgeContext: ctx}, b)
}

// createClaim asks svc for the claim ns/claim (PV pvc-1) of size bytes in
// a class with parameters p.
func createClaim(t *testing.T, ctx context.Context, svc *volume.Service, p map[string]string, claim string, size int64) (*volume.Result, error) {
	t.Helper()
	cfg, err := params.Parse(p)
	if err != nil {
		t.Fatal(err)
	}
	return svc.Create(ctx, volume.Request{Name: "pvc-1", Namespace: "ns", Claim: claim, Config: cfg, SizeBytes: size,
		Vars: params.Vars{Namespace: "ns", Name: claim, PVName: "pvc-1"}})
}
