package csidriver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"k8s.io/klog/v2/ktesting"
	mount "k8s.io/mount-utils"

	"github.com/carve-csi/carve/pkg/csidriver/internal/sanitytest"
	"github.com/carve-csi/carve/pkg/safemount"
	"github.com/carve-csi/carve/pkg/volid"
)

// noCheck stands in for verifyMount: the fake mounter mounts nothing.
func noCheck(string, bool, *os.File) error { return nil }

func publishReq(id, target string, readonly bool, mode csi.VolumeCapability_AccessMode_Mode, flags ...string) *csi.NodePublishVolumeRequest {
	c := mountCap(mode)
	c.GetMount().MountFlags = flags
	return &csi.NodePublishVolumeRequest{VolumeId: id, TargetPath: target, VolumeCapability: c, Readonly: readonly}
}

func nfsID(dir ...string) string {
	return volid.ID{Backend: "nfs", Servers: []string{"10.9.9.9"}, Share: "/unmapped", Dir: dir, OnDelete: "retain"}.String()
}

func mappedID(dir ...string) string {
	return volid.ID{Backend: "nfs", Servers: []string{testServer}, Share: testExport, Dir: dir, OnDelete: "retain"}.String()
}

func (h *harness) target(t *testing.T) string {
	return filepath.Join(t.TempDir(), "pods", "uid", "volumes", "pv", "mount")
}

func (h *harness) mountOf(target string) (mount.MountPoint, bool) {
	mps, _ := h.fake.List()
	for _, mp := range mps {
		if mp.Path == target {
			return mp, true
		}
	}
	return mount.MountPoint{}, false
}

func (h *harness) actions() []string {
	var out []string
	for _, a := range h.fake.GetLog() {
		out = append(out, a.Action)
	}
	return out
}

func TestPublishNFSDirect(t *testing.T) {
	h := newHarness(t, nil)
	h.d.node.checkMount = noCheck
	target := h.target(t)
	_, err := h.d.node.NodePublishVolume(h.ctx, publishReq(nfsID("ns", "c"), target, true,
		csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, "nfsvers=4.1", "hard"))
	if err != nil {
		t.Fatal(err)
	}
	mp, ok := h.mountOf(target)
	if !ok {
		t.Fatalf("nothing mounted at the target; mounts %v", h.fake.MountPoints)
	}
	if mp.Device != "10.9.9.9:/unmapped/ns/c" || mp.Type != "nfs" {
		t.Errorf("mounted %s (%s), want 10.9.9.9:/unmapped/ns/c (nfs)", mp.Device, mp.Type)
	}
	for _, o := range []string{"nfsvers=4.1", "hard", "ro"} {
		if !slices.Contains(mp.Opts, o) {
			t.Errorf("options %v lack %s", mp.Opts, o)
		}
	}
	// Idempotent: a second call finds the mount.
	if _, err := h.d.node.NodePublishVolume(h.ctx, publishReq(nfsID("ns", "c"), target, true, csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)); err != nil {
		t.Fatal(err)
	}
	if n := len(h.fake.GetLog()); n != 1 {
		t.Errorf("%d mount actions, want 1", n)
	}
}

func TestPublishReadOnlyAccessMode(t *testing.T) {
	h := newHarness(t, nil)
	h.d.node.checkMount = noCheck
	target := h.target(t)
	if _, err := h.d.node.NodePublishVolume(h.ctx, publishReq(nfsID("a"), target, false, csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY)); err != nil {
		t.Fatal(err)
	}
	if mp, _ := h.mountOf(target); !slices.Contains(mp.Opts, "ro") {
		t.Errorf("reader-only access mode mounted with %v", mp.Opts)
	}
}

func TestPublishBindFromMappedShare(t *testing.T) {
	h := newHarness(t, nil)
	var checked *os.File
	h.d.node.checkMount = func(_ string, _ bool, dir *os.File) error { checked = dir; return nil }
	if err := os.MkdirAll(filepath.Join(h.share, "ns", "c"), 0o755); err != nil {
		t.Fatal(err)
	}
	target := h.target(t)
	_, err := h.d.node.NodePublishVolume(h.ctx, publishReq(mappedID("ns", "c"), target, true,
		csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, "nfsvers=4.1", "noexec"))
	if err != nil {
		t.Fatal(err)
	}
	mp, ok := h.mountOf(target)
	if !ok {
		t.Fatal("nothing mounted")
	}
	if want := fmt.Sprintf("/proc/%d/fd/", os.Getpid()); !strings.HasPrefix(mp.Device, want) {
		t.Errorf("bind source %q is not a descriptor of this process (%s...)", mp.Device, want)
	}
	if checked == nil {
		t.Error("the mount was not checked against the volume directory")
	}
	for _, o := range []string{"bind", "ro", "noexec"} {
		if !slices.Contains(mp.Opts, o) {
			t.Errorf("options %v lack %s", mp.Opts, o)
		}
	}
	if slices.Contains(mp.Opts, "nfsvers=4.1") {
		t.Errorf("NFS option passed to a bind mount: %v", mp.Opts)
	}
}

func TestPublishRefusesUnsafeOrMissingDirectory(t *testing.T) {
	h := newHarness(t, nil)
	h.d.node.checkMount = noCheck
	// A tenant replaced a parent of its own directory by a symlink to the host.
	if err := os.Symlink("/etc", filepath.Join(h.share, "ns")); err != nil {
		t.Fatal(err)
	}
	target := h.target(t)
	_, err := h.d.node.NodePublishVolume(h.ctx, publishReq(mappedID("ns", "ssl"), target, false, csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER))
	wantCode(t, err, codes.FailedPrecondition, "symlink")
	_, err = h.d.node.NodePublishVolume(h.ctx, publishReq(mappedID("missing"), target, false, csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER))
	wantCode(t, err, codes.NotFound)
	_, err = h.d.node.NodePublishVolume(h.ctx, publishReq("fake-vol-id", target, false, csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER))
	wantCode(t, err, codes.NotFound)
	if len(h.fake.GetLog()) != 0 {
		t.Errorf("mounted anyway: %v", h.fake.GetLog())
	}
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("target created for a refused publish: %v", err)
	}
}

func TestPublishUndoesFailedCheck(t *testing.T) {
	h := newHarness(t, nil)
	h.d.node.checkMount = func(string, bool, *os.File) error { return errors.New("still writable") }
	target := h.target(t)
	_, err := h.d.node.NodePublishVolume(h.ctx, publishReq(nfsID("a"), target, true, csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER))
	wantCode(t, err, codes.Internal, "still writable")
	if got := h.actions(); !slices.Equal(got, []string{"mount", "unmount"}) {
		t.Errorf("actions %v, want the mount undone", got)
	}
}

func TestPublishOverIncompatibleMount(t *testing.T) {
	h := newHarness(t, nil)
	h.d.node.checkMount = func(string, bool, *os.File) error { return errors.New("writable") }
	target := h.target(t)
	if err := os.MkdirAll(target, 0o750); err != nil {
		t.Fatal(err)
	}
	h.fake.MountPoints = []mount.MountPoint{{Device: "10.9.9.9:/unmapped/a", Path: target, Type: "nfs"}}
	_, err := h.d.node.NodePublishVolume(h.ctx, publishReq(nfsID("a"), target, true, csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER))
	wantCode(t, err, codes.AlreadyExists)
	if len(h.fake.GetLog()) != 0 {
		t.Errorf("touched an existing mount: %v", h.fake.GetLog())
	}
}

// The corrupted-mount cases: a dead server leaves a mount point whose stat or
// statx fails with ENOTCONN (FUSE) or ESTALE (NFS).
func corrupted(target string, errno syscall.Errno) error {
	return &os.PathError{Op: "statx", Path: target, Err: errno}
}

func TestPublishRemountsCorruptedTarget(t *testing.T) {
	h := newHarness(t, nil)
	h.d.node.checkMount = noCheck
	target := h.target(t)
	if err := os.MkdirAll(target, 0o750); err != nil {
		t.Fatal(err)
	}
	h.fake.MountPoints = []mount.MountPoint{{Device: "10.9.9.9:/unmapped/a", Path: target, Type: "nfs"}}
	h.fake.MountCheckErrors = map[string]error{target: corrupted(target, syscall.ENOTCONN)}
	if _, err := h.d.node.NodePublishVolume(h.ctx, publishReq(nfsID("a"), target, false, csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)); err != nil {
		t.Fatal(err)
	}
	if got := h.actions(); !slices.Equal(got, []string{"unmount", "mount"}) {
		t.Errorf("actions %v, want unmount then mount", got)
	}
}

func TestUnpublish(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mounted bool
		errno   syscall.Errno // corrupted mount
		want    []string
	}{
		{"not mounted", false, 0, nil},
		{"mounted", true, 0, []string{"unmount"}},
		{"transport endpoint is not connected", true, syscall.ENOTCONN, []string{"unmount"}},
		{"stale file handle", true, syscall.ESTALE, []string{"unmount"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			target := h.target(t)
			if err := os.MkdirAll(target, 0o750); err != nil {
				t.Fatal(err)
			}
			if tc.mounted {
				h.fake.MountPoints = []mount.MountPoint{{Device: "s:/e/a", Path: target, Type: "nfs"}}
			}
			if tc.errno != 0 {
				h.fake.MountCheckErrors = map[string]error{target: corrupted(target, tc.errno)}
			}
			req := &csi.NodeUnpublishVolumeRequest{VolumeId: nfsID("a"), TargetPath: target}
			if _, err := h.d.node.NodeUnpublishVolume(h.ctx, req); err != nil {
				t.Fatal(err)
			}
			if got := h.actions(); !slices.Equal(got, tc.want) {
				t.Errorf("actions %v, want %v", got, tc.want)
			}
			if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("target not removed: %v", err)
			}
			// Idempotent: the target is gone, the call still succeeds.
			if _, err := h.d.node.NodeUnpublishVolume(h.ctx, req); err != nil {
				t.Errorf("second unpublish: %v", err)
			}
		})
	}
}

func TestUnpublishValidates(t *testing.T) {
	h := newHarness(t, nil)
	_, err := h.d.node.NodeUnpublishVolume(h.ctx, &csi.NodeUnpublishVolumeRequest{TargetPath: "/x"})
	wantCode(t, err, codes.InvalidArgument)
	_, err = h.d.node.NodeUnpublishVolume(h.ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "x"})
	wantCode(t, err, codes.InvalidArgument)
}

func TestNodeGetVolumeStats(t *testing.T) {
	h := newHarness(t, nil)
	target := h.target(t)
	if err := os.MkdirAll(target, 0o750); err != nil {
		t.Fatal(err)
	}
	stats := func() (*csi.NodeGetVolumeStatsResponse, error) {
		return h.d.node.NodeGetVolumeStats(h.ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: nfsID("a"), VolumePath: target})
	}

	resp, err := stats()
	if err != nil || !resp.GetVolumeCondition().GetAbnormal() || !strings.Contains(resp.VolumeCondition.Message, "not mounted") {
		t.Errorf("unmounted path: %+v, %v; want abnormal, not mounted", resp, err)
	}

	h.fake.MountPoints = []mount.MountPoint{{Device: "s:/e/a", Path: target, Type: "nfs"}}
	resp, err = stats()
	if err != nil || resp.GetVolumeCondition().GetAbnormal() || len(resp.Usage) != 2 {
		t.Fatalf("mounted path: %+v, %v", resp, err)
	}
	for _, u := range resp.Usage {
		if u.Total <= 0 || u.Available < 0 || u.Used < 0 {
			t.Errorf("usage %+v", u)
		}
	}
	if resp.Usage[0].Unit != csi.VolumeUsage_BYTES || resp.Usage[1].Unit != csi.VolumeUsage_INODES {
		t.Errorf("units %v, %v", resp.Usage[0].Unit, resp.Usage[1].Unit)
	}

	h.fake.MountCheckErrors = map[string]error{target: corrupted(target, syscall.ENOTCONN)}
	resp, err = stats()
	if err != nil || !resp.GetVolumeCondition().GetAbnormal() || !strings.Contains(resp.VolumeCondition.Message, "corrupted") {
		t.Errorf("corrupted mount: %+v, %v; want abnormal", resp, err)
	}

	_, err = h.d.node.NodeGetVolumeStats(h.ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: nfsID("a"), VolumePath: target + "-gone"})
	wantCode(t, err, codes.NotFound)
	_, err = h.d.node.NodeGetVolumeStats(h.ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: "fake-vol-id", VolumePath: target})
	wantCode(t, err, codes.NotFound)
	_, err = h.d.node.NodeGetVolumeStats(h.ctx, &csi.NodeGetVolumeStatsRequest{VolumePath: target})
	wantCode(t, err, codes.InvalidArgument)

	// A statfs still hanging on a dead server is reported, not queued behind.
	release, _ := h.d.locks.tryAcquire("stats:" + target)
	defer release()
	h.fake.MountCheckErrors = nil
	resp, err = stats()
	if err != nil || !resp.GetVolumeCondition().GetAbnormal() {
		t.Errorf("pending statfs: %+v, %v; want abnormal", resp, err)
	}
}

// TestRealReadOnlyBind publishes through the real mounter: the read-only bind
// mount refuses writes and shows exactly the volume's directory.
func TestRealReadOnlyBind(t *testing.T) {
	if os.Getuid() != 0 {
		if os.Getenv("CARVE_REQUIRE_REAL") == "1" {
			t.Fatal("CARVE_REQUIRE_REAL=1: needs root for bind mounts")
		}
		t.Skip("needs root for bind mounts")
	}
	h := newHarness(t, nil)
	h.d.node.mounter = mount.New("")
	dir := filepath.Join(h.share, "ns", "c")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "marker"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	target := h.target(t)
	t.Cleanup(func() { sanitytest.UnmountUnder(t, filepath.Dir(target)) })
	req := publishReq(mappedID("ns", "c"), target, true, csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)
	if _, err := h.d.node.NodePublishVolume(h.ctx, req); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(filepath.Join(target, "marker")); err != nil {
		t.Errorf("volume content not visible: %v", err)
	}
	err := os.WriteFile(filepath.Join(target, "new"), []byte("x"), 0o644)
	if !errors.Is(err, syscall.EROFS) {
		t.Errorf("write to a read-only publish: %v, want EROFS", err)
	}
	// Again read-only: the same publish. Read-write: another one.
	if _, err := h.d.node.NodePublishVolume(h.ctx, req); err != nil {
		t.Errorf("repeated publish: %v", err)
	}
	_, err = h.d.node.NodePublishVolume(h.ctx, publishReq(mappedID("ns", "c"), target, false, csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER))
	wantCode(t, err, codes.AlreadyExists, "read-only")
	// A different volume at the same target is refused.
	if err := os.MkdirAll(filepath.Join(h.share, "ns", "other"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = h.d.node.NodePublishVolume(h.ctx, publishReq(mappedID("ns", "other"), target, true, csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER))
	wantCode(t, err, codes.AlreadyExists)

	resp, err := h.d.node.NodeGetVolumeStats(h.ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: mappedID("ns", "c"), VolumePath: target})
	if err != nil || resp.GetVolumeCondition().GetAbnormal() {
		t.Errorf("stats of a live bind mount: %+v, %v", resp, err)
	}
	if _, err := h.d.node.NodeUnpublishVolume(h.ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: mappedID("ns", "c"), TargetPath: target}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("target left: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "marker")); err != nil {
		t.Errorf("unpublish touched the data: %v", err)
	}
}

// TestPublishRefusesOptionLikeServer: an ID whose server mount(8) would read
// as an option is refused as an invalid argument, and nothing is mounted,
// through the mounter the binary uses.
func TestPublishRefusesOptionLikeServer(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root for the real mounter")
	}
	_, ctx := ktesting.NewTestContext(t)
	d, err := New(Config{NodeID: "node-1", Mode: ModeNode}, mount.New(""))
	if err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(t.TempDir(), "mount")
	for _, id := range []string{"1#nfs#-oremount#/export#ns/c#retain", "1#gluster#-oremount#gv0#ns/c#retain"} {
		_, err := d.node.NodePublishVolume(ctx, publishReq(id, target, false, csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER))
		wantCode(t, err, codes.InvalidArgument, "must not start with '-'")
	}
	if m, _ := d.node.mounter.IsMountPoint(target); m {
		t.Error("something was mounted at the target")
	}
	// Below the ID check, the node's mounter refuses such a source itself.
	err = d.node.mounter.Mount("-oremount:/export/ns/c", target, "nfs", nil)
	if !errors.Is(err, safemount.ErrOptionLike) {
		t.Errorf("node mounter: %v; want safemount.ErrOptionLike", err)
	}
}
