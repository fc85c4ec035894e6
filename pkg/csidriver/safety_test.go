package csidriver

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"

	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/volid"
)

func needRoot(t *testing.T, why string) {
	t.Helper()
	if os.Getuid() != 0 {
		if os.Getenv("CARVE_REQUIRE_REAL") == "1" {
			t.Fatalf("CARVE_REQUIRE_REAL=1: needs root for %s", why)
		}
		t.Skipf("needs root for %s", why)
	}
}

// unmountAll removes every mount stacked at p.
func unmountAll(p string) {
	for unix.Unmount(p, unix.MNT_DETACH) == nil {
	}
}

func idOn(onDelete params.OnDeletePolicy, dir ...string) string {
	return volid.ID{Backend: "nfs", Servers: []string{testServer}, Share: testExport, Dir: dir, OnDelete: onDelete}.String()
}

// TestShareMountGone (issue 9, D1): the controller's share is a real mount
// (a bind mount standing in for the NFS pod volume). When it goes away, or
// another filesystem takes its place, CreateVolume and DeleteVolume answer
// Unavailable naming the share, readiness fails and nothing at all is written
// to the directory left behind; when the mount returns, work resumes without
// a restart.
func TestShareMountGone(t *testing.T) {
	needRoot(t, "bind mounts")
	h := newHarness(t, nil)
	backing := h.share // declared share content (what the server exports)
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unmountAll(mnt) })
	bind := func() {
		t.Helper()
		if err := unix.Mount(backing, mnt, "", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
	}
	bind()
	h.d.cfg.MountMap[testServer+":"+testExport] = mnt
	h.share = mnt
	p := classParams("onDelete", "delete")
	v1 := h.create(t, createReq("pvc-1", 1, claim(p, "ns", "c1", "pvc-1")))
	if _, err := os.Stat(filepath.Join(backing, "ns", "c1")); err != nil {
		t.Fatalf("volume not on the share: %v", err)
	}
	if err := h.d.checkShares(h.ctx); err != nil {
		t.Fatalf("readiness with the share mounted: %v", err)
	}

	empty := func(what string) {
		t.Helper()
		if entries, _ := os.ReadDir(mnt); len(entries) != 0 {
			t.Errorf("%s: %d entries written to %s (first %s)", what, len(entries), mnt, entries[0].Name())
		}
	}
	gone := func(what string) {
		t.Helper()
		_, err := h.d.controller.CreateVolume(h.ctx, createReq("pvc-2", 1, claim(p, "ns", "c2", "pvc-2")))
		wantCode(t, err, codes.Unavailable, mnt)
		_, err = h.d.controller.DeleteVolume(h.ctx, &csi.DeleteVolumeRequest{VolumeId: v1.VolumeId})
		wantCode(t, err, codes.Unavailable, mnt)
		_, err = h.d.controller.ControllerExpandVolume(h.ctx, &csi.ControllerExpandVolumeRequest{
			VolumeId: v1.VolumeId, CapacityRange: &csi.CapacityRange{RequiredBytes: 2}})
		wantCode(t, err, codes.Unavailable, mnt)
		if err := h.d.checkShares(h.ctx); err == nil {
			t.Errorf("%s: readiness passes", what)
		}
		empty(what)
	}

	if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	gone("mount gone")
	// Another filesystem mounted in the share's place is not the share either.
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	gone("tmpfs in its place")
	unmountAll(mnt)

	bind()
	h.create(t, createReq("pvc-2", 1, claim(p, "ns", "c2", "pvc-2")))
	if _, err := os.Stat(filepath.Join(backing, "ns", "c2")); err != nil {
		t.Fatalf("volume not on the share after the mount returned: %v", err)
	}
	if err := h.d.checkShares(h.ctx); err != nil {
		t.Fatalf("readiness after the mount returned: %v", err)
	}
}

// TestVolumesNeverNest (issue 9, D2): with two classes on one share whose
// patterns render a directory and one inside it, neither order makes a
// volume inside another, and a DeleteVolume naming a directory that holds a
// volume, or that carve never recorded, deletes nothing.
func TestVolumesNeverNest(t *testing.T) {
	h := newHarness(t, nil)
	inner := classParams("onDelete", "delete")
	outer := classParams("onDelete", "delete", "pathPattern", "${pvc.metadata.namespace}")

	// The inner volume first: the outer class would "re-attach" its parent.
	h.create(t, createReq("pvc-inner", 1, claim(inner, "nest", "inner", "pvc-inner")))
	data := filepath.Join(h.share, "nest", "inner", "data")
	if err := os.WriteFile(data, []byte("live"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := h.d.controller.CreateVolume(h.ctx, createReq("pvc-outer", 1, claim(outer, "nest", "outer", "pvc-outer")))
	wantCode(t, err, codes.FailedPrecondition, "nest", "pvc-inner", "never nest")
	// DeleteVolume of an ID naming the parent: nothing is deleted.
	if _, err := h.d.controller.DeleteVolume(h.ctx, &csi.DeleteVolumeRequest{VolumeId: idOn("delete", "nest")}); err != nil {
		t.Fatal(err)
	}
	h.d.svc.WaitPurges()
	if b, err := os.ReadFile(data); err != nil || string(b) != "live" {
		t.Fatalf("the live inner volume's data: %q, %v", b, err)
	}

	// The outer volume first: the inner class would carve inside it.
	h.create(t, createReq("pvc-outer2", 1, claim(outer, "other", "x", "pvc-outer2")))
	_, err = h.d.controller.CreateVolume(h.ctx, createReq("pvc-inner2", 1, claim(inner, "other", "y", "pvc-inner2")))
	wantCode(t, err, codes.FailedPrecondition, "other/y", "pvc-outer2", "never nest")
	if h.exists("other/y") {
		t.Error("a volume was carved inside another volume")
	}

	// A nesting made before this check existed: deleting the outer one keeps both.
	sh, err := dirvol.Open(h.share)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	own := dirvol.Owner{Mode: 0o755}
	if _, err := sh.Create(ctx, []string{"legacy"}, own, dirvol.Meta{PV: "pvc-old-outer"}); err != nil {
		t.Fatal(err)
	}
	if _, err := sh.Create(ctx, []string{"legacy", "in"}, own, dirvol.Meta{PV: "pvc-old-inner"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.d.controller.DeleteVolume(h.ctx, &csi.DeleteVolumeRequest{VolumeId: idOn("delete", "legacy")}); err != nil {
		t.Fatal(err)
	}
	h.d.svc.WaitPurges()
	if !h.exists("legacy/in") {
		t.Fatal("deleting the outer volume destroyed the volume inside it")
	}
	// The inner one alone is an ordinary volume.
	if _, err := h.d.controller.DeleteVolume(h.ctx, &csi.DeleteVolumeRequest{VolumeId: idOn("delete", "legacy", "in")}); err != nil {
		t.Fatal(err)
	}
	h.d.svc.WaitPurges()
	if h.exists("legacy/in") {
		t.Error("the inner volume was not deleted")
	}
}
