package csidriver

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/carve-csi/carve/pkg/csidriver/internal/sanitytest"
	"github.com/carve-csi/carve/pkg/dirvol"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"k8s.io/klog/v2/ktesting"
	mount "k8s.io/mount-utils"

	"github.com/carve-csi/carve/pkg/sharemount"
)

// TestSanity runs csi-test v5.4.0's sanity suite in-process against the
// driver in mode "all" on a unix socket, with the real NFS backend on a local
// share (--mount-map 127.0.0.1:/exports=<tmp>) and the real mounter, so every
// NodePublishVolume is a real bind mount (read-only ones remounted ro) and
// every NodeUnpublishVolume a real unmount.
//
// Specs that do not run, and why (csi-test v5.4.0: 92 specs, 55 run, 36
// skipped, 1 pending):
//
//	skipped  specs                                   reason
//	3 (+1)   ListVolumes (+ the pending pagination   LIST_VOLUMES not advertised: a retained volume's
//	         XIt)                                    directory and record outlive DeleteVolume
//	10       ControllerPublishVolume 7 (incl. max    PUBLISH_UNPUBLISH_VOLUME: nothing to attach on a
//	         attach limit), ControllerUnpublish 1,   shared filesystem (CSIDriver attachRequired: false)
//	         Controller "volume lifecycle" 2
//	5        NodeStageVolume 3, NodeUnstageVolume 2  STAGE_UNSTAGE_VOLUME: one mount per publish
//	4        NodeExpandVolume                        node EXPAND_VOLUME: ControllerExpandVolume returns
//	                                                 NodeExpansionRequired=false
//	6        group snapshots                         GROUP_CONTROLLER_SERVICE: not implemented
//	8        CreateVolume with a VolumeAttributes-   MODIFY_VOLUME: not implemented
//	         Class 2, ControllerModifyVolume 6
//
// The 55 that run must pass: identity 3; ControllerGetCapabilities 1,
// CreateVolume 7 and from a snapshot or a volume 4 (copies, pkg/dirvol),
// CreateSnapshot 5, DeleteSnapshot 3, ListSnapshots 7, DeleteVolume 3, ValidateVolumeCapabilities 4, GetCapacity 1,
// ControllerExpandVolume 3; NodeGetCapabilities 1, NodeGetInfo 1,
// NodePublishVolume 3, NodeUnpublishVolume 3, NodeGetVolumeStats 4, and the
// node "should work" and "should be idempotent" lifecycles (create, publish,
// stats, unpublish, delete).
func TestSanity(t *testing.T) {
	if os.Getuid() != 0 {
		if os.Getenv("CARVE_REQUIRE_REAL") == "1" {
			t.Fatal("CARVE_REQUIRE_REAL=1: the sanity run needs root for its bind mounts")
		}
		t.Skip("the sanity run does real bind mounts and needs root (set CARVE_REQUIRE_REAL=1 to make this a failure)")
	}
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)

	dir := t.TempDir()
	share := filepath.Join(dir, "share")
	if err := os.Mkdir(share, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := dirvol.Declare(share); err != nil {
		t.Fatal(err)
	}
	// Runs before TempDir's removal: a mount left behind would make it fail
	// and hide the real error.
	t.Cleanup(func() { sanitytest.UnmountUnder(t, dir) })

	sock := filepath.Join(dir, "csi.sock")
	d, err := New(Config{
		Name:     DefaultName,
		NodeID:   "sanity-node",
		Endpoint: "unix://" + sock,
		Mode:     ModeAll,
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
		"backend": "nfs",
		"server":  "127.0.0.1",
		"share":   "/exports",
		// CSI names are unique; the claim's name is not in the requests
		// (no --extra-create-metadata here).
		"pathPattern": "sanity/${pv.metadata.name}",
		"onDelete":    "delete",
	}
	cfg.IdempotentCount = 3
	sanity.Test(t, cfg)
	snapshots := filepath.Join(share, ".carve-snapshots")

	d.svc.WaitPurges()
	if left := sanitytest.Entries(t, filepath.Join(share, "sanity")); len(left) > 0 {
		t.Errorf("volume directories left after the suite deleted every volume: %v", left)
	}
	if left := sanitytest.Entries(t, snapshots); len(left) > 0 {
		t.Errorf("snapshots left after the suite deleted every snapshot: %v", left)
	}
	if m := sanitytest.MountsUnder(t, dir); len(m) > 0 {
		t.Errorf("mounts left after the suite unpublished every volume: %v", m)
	}
}
