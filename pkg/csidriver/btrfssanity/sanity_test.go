package btrfssanity

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"k8s.io/klog/v2/ktesting"
	mount "k8s.io/mount-utils"

	"github.com/carve-csi/carve/internal/testenv/loopfs"
	"github.com/carve-csi/carve/pkg/csidriver"
	"github.com/carve-csi/carve/pkg/csidriver/internal/sanitytest"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/sharemount"
)

// TestBtrfsSanity runs csi-test v5.4.0's sanity suite in-process against the
// driver in mode "all" with the NFS backend and layout btrfs, the share a
// btrfs filesystem with quota on a loop device the test makes and removes
// (--mount-map 127.0.0.1:/exports=<its mount>). Every volume is a subvolume
// with a qgroup limit; every snapshot, and every volume made from a
// snapshot or another volume, a subvolume snapshot; stats come from the
// qgroup; publishes are real bind mounts. The specs that run and those
// skipped, and why, are the NFS run's (pkg/csidriver/sanity_test.go): 55
// run and must pass.
func TestBtrfsSanity(t *testing.T) {
	if os.Getuid() != 0 {
		if os.Getenv("CARVE_REQUIRE_REAL") == "1" {
			t.Fatal("CARVE_REQUIRE_REAL=1: the sanity run needs root for its bind mounts")
		}
		t.Skip("the sanity run does real bind mounts and needs root (set CARVE_REQUIRE_REAL=1 to make this a failure)")
	}
	share := loopfs.Btrfs(t, 4<<30)
	if err := dirvol.Declare(share); err != nil {
		t.Fatal(err)
	}
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	dir := t.TempDir()
	// Runs before the loop filesystem's unmount: a bind mount left behind
	// would keep it busy and hide the real error.
	t.Cleanup(func() { sanitytest.UnmountUnder(t, dir) })

	sock := filepath.Join(dir, "csi.sock")
	d, err := csidriver.New(csidriver.Config{
		Name:     csidriver.DefaultName,
		NodeID:   "sanity-node",
		Endpoint: "unix://" + sock,
		Mode:     csidriver.ModeAll,
		MountMap: sharemount.Map{sharemount.Key("127.0.0.1", "/exports"): share},
		Version:  "sanity",
	}, mount.New(""))
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- d.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	sanitytest.WaitForSocket(t, sock)

	cfg := sanity.NewTestConfig()
	addr, dial := sanitytest.Address(sock)
	cfg.Address = addr
	cfg.DialOptions = append(cfg.DialOptions, dial)
	cfg.TargetPath = filepath.Join(dir, "mnt")
	cfg.StagingPath = filepath.Join(dir, "staging")
	cfg.TestVolumeSize = 1 << 30
	cfg.TestVolumeParameters = map[string]string{
		"backend":     "nfs",
		"server":      "127.0.0.1",
		"share":       "/exports",
		"layout":      "btrfs",
		"pathPattern": "sanity/${pv.metadata.name}",
		"onDelete":    "delete",
	}
	cfg.IdempotentCount = 3
	sanity.Test(t, cfg)

	d.WaitPurges()
	if left := sanitytest.Entries(t, filepath.Join(share, "sanity")); len(left) > 0 {
		t.Errorf("volume directories left after the suite deleted every volume: %v", left)
	}
	if left := sanitytest.Entries(t, filepath.Join(share, ".carve-snapshots")); len(left) > 0 {
		t.Errorf("snapshots left after the suite deleted every snapshot: %v", left)
	}
	if left := sanitytest.Entries(t, filepath.Join(share, ".carve-trash")); len(left) > 0 {
		t.Errorf("trash left after the purges: %v", left)
	}
	if m := sanitytest.MountsUnder(t, dir); len(m) > 0 {
		t.Errorf("mounts left after the suite unpublished every volume: %v", m)
	}
}
