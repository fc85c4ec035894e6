package csidriver

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	mount "k8s.io/mount-utils"

	"github.com/carve-csi/carve/internal/testenv/loopfs"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/params"
)

// In the btrfs layout NodeGetVolumeStats reports the claim's qgroup (its
// limit and what it references), not the whole filesystem that statfs shows;
// a plain directory on the same filesystem still reports the filesystem.
func TestNodeGetVolumeStatsBtrfs(t *testing.T) {
	h := newHarness(t, nil)
	root := loopfs.Btrfs(t, 512<<20)
	if err := dirvol.Declare(root); err != nil {
		t.Fatal(err)
	}
	share, err := dirvol.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	own := dirvol.Owner{Mode: 0o2770}
	const limit = 64 << 20
	if _, err := share.Create(h.ctx, []string{"v"}, own, dirvol.Meta{PV: "v", CapacityBytes: limit, Layout: params.LayoutBtrfs}); err != nil {
		t.Fatal(err)
	}
	if _, err := share.Create(h.ctx, []string{"plain"}, own, dirvol.Meta{PV: "plain"}); err != nil {
		t.Fatal(err)
	}
	vol, plain := filepath.Join(root, "v"), filepath.Join(root, "plain")
	if err := os.WriteFile(filepath.Join(vol, "f"), bytes.Repeat([]byte{1}, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	// The qgroup counts the data once a transaction commits it.
	if f, err := os.Open(vol); err == nil {
		_ = unix.Syncfs(int(f.Fd()))
		f.Close()
	}
	// Stats read the path the kubelet names; here the volume itself plays
	// the bind mount of it.
	h.fake.MountPoints = []mount.MountPoint{{Path: vol}, {Path: plain}}
	stats := func(p string) *csi.VolumeUsage {
		t.Helper()
		resp, err := h.d.node.NodeGetVolumeStats(h.ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: nfsID("v"), VolumePath: p})
		if err != nil || resp.GetVolumeCondition().GetAbnormal() || len(resp.Usage) != 2 {
			t.Fatalf("stats of %s: %+v %v", p, resp, err)
		}
		return resp.Usage[0]
	}
	u := stats(vol)
	if u.Total != limit || u.Used < 4<<20 || u.Used > 5<<20 || u.Available != limit-u.Used {
		t.Errorf("btrfs-layout volume: %+v, want total %d, used about 4 MiB", u, limit)
	}
	t.Logf("btrfs-layout volume stats: total %d used %d available %d", u.Total, u.Used, u.Available)
	if p := stats(plain); p.Total <= limit {
		t.Errorf("plain directory: %+v, want the whole filesystem", p)
	}
}
