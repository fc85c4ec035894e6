package csidriver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"

	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/volid"
)

func glusterID(servers []string, vol string, dir ...string) volid.ID {
	return volid.ID{Backend: "gluster", Servers: servers, Share: vol, Dir: dir, OnDelete: "delete"}
}

// glusterHarness is the fake-mounter harness with the node's Gluster client
// logs in a temp dir and the FUSE check recorded.
func glusterHarness(t *testing.T, fuseErr error) (*harness, *[]string) {
	h := newHarness(t, nil)
	h.d.cfg.GlusterLogDir = filepath.Join(t.TempDir(), "logs")
	h.d.node.checkMount = noCheck
	var checked []string
	h.d.node.checkFUSE = func(target string) error { checked = append(checked, target); return fuseErr }
	return h, &checked
}

func TestPublishGlusterDirect(t *testing.T) {
	for _, tc := range []struct {
		name     string
		readonly bool
		mode     csi.VolumeCapability_AccessMode_Mode
		flags    []string
		want     []string
		wantNot  []string
	}{
		{"read-write", false, csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, []string{"noatime"},
			[]string{"backup-volfile-servers=g2:g3", "auto_unmount", "noatime"}, []string{"ro"}},
		{"readonly flag", true, csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, nil,
			[]string{"backup-volfile-servers=g2:g3", "auto_unmount", "ro"}, nil},
		{"reader-only access mode", false, csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY, nil,
			[]string{"ro"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, checked := glusterHarness(t, nil)
			id := glusterID([]string{"g1", "g2", "g3"}, "gv0", "ns", "c")
			target := h.target(t)
			if _, err := h.d.node.NodePublishVolume(h.ctx, publishReq(id.String(), target, tc.readonly, tc.mode, tc.flags...)); err != nil {
				t.Fatal(err)
			}
			mp, ok := h.mountOf(target)
			if !ok {
				t.Fatalf("nothing mounted at the target; mounts %v", h.fake.MountPoints)
			}
			if mp.Device != "g1:/gv0/ns/c" || mp.Type != "glusterfs" {
				t.Errorf("mounted %s (%s), want g1:/gv0/ns/c (glusterfs)", mp.Device, mp.Type)
			}
			for _, o := range append(tc.want, "log-file="+glusterLogFile(h.d.cfg.GlusterLogDir, id)) {
				if !slices.Contains(mp.Opts, o) {
					t.Errorf("options %v lack %s", mp.Opts, o)
				}
			}
			for _, o := range tc.wantNot {
				if slices.Contains(mp.Opts, o) {
					t.Errorf("options %v contain %s", mp.Opts, o)
				}
			}
			if st, err := os.Stat(h.d.cfg.GlusterLogDir); err != nil || !st.IsDir() {
				t.Errorf("log directory not created: %v", err)
			}
			if !slices.Equal(*checked, []string{target}) {
				t.Errorf("FUSE check on %v, want the target", *checked)
			}
			// Idempotent: a second call checks the existing mount, mounts nothing.
			if _, err := h.d.node.NodePublishVolume(h.ctx, publishReq(id.String(), target, tc.readonly, tc.mode, tc.flags...)); err != nil {
				t.Fatal(err)
			}
			if got := h.actions(); !slices.Equal(got, []string{"mount"}) {
				t.Errorf("actions %v, want one mount", got)
			}
			if len(*checked) != 2 {
				t.Errorf("existing mount not checked for FUSE: %v", *checked)
			}
		})
	}
}

func TestPublishGlusterKeepsLogFileOption(t *testing.T) {
	h, _ := glusterHarness(t, nil)
	id := glusterID([]string{"g1"}, "gv0", "a")
	target := h.target(t)
	if _, err := h.d.node.NodePublishVolume(h.ctx, publishReq(id.String(), target, false,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "log-file=/elsewhere.log")); err != nil {
		t.Fatal(err)
	}
	mp, _ := h.mountOf(target)
	var logs []string
	for _, o := range mp.Opts {
		if strings.HasPrefix(o, "log-file=") {
			logs = append(logs, o)
		}
	}
	if !slices.Equal(logs, []string{"log-file=/elsewhere.log"}) {
		t.Errorf("log-file options %v, want only the PV's", logs)
	}
	if slices.ContainsFunc(mp.Opts, func(o string) bool { return strings.HasPrefix(o, "backup-volfile-servers") }) {
		t.Errorf("one server, yet backup-volfile-servers in %v", mp.Opts)
	}
}

// mount.glusterfs exits 0 when the FUSE client fails after forking (missing
// directory): the mount table check fails, the publish is undone and the
// error carries the client log's tail.
func TestPublishGlusterUnverifiedIsUndone(t *testing.T) {
	h, _ := glusterHarness(t, errors.New("nothing is mounted at the target"))
	id := glusterID([]string{"g1"}, "gv0", "missing")
	logFile := glusterLogFile(h.d.cfg.GlusterLogDir, id)
	if err := os.MkdirAll(filepath.Dir(logFile), 0o750); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	for i := range 30 {
		fmt.Fprintf(&log, "line %02d\n", i)
	}
	log.WriteString("[fuse-bridge.c] E: subdir '/missing' not found\n")
	if err := os.WriteFile(logFile, []byte(log.String()), 0o640); err != nil {
		t.Fatal(err)
	}
	target := h.target(t)
	_, err := h.d.node.NodePublishVolume(h.ctx, publishReq(id.String(), target, false, csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER))
	wantCode(t, err, codes.Internal, "nothing is mounted", logFile, "subdir '/missing' not found")
	if strings.Contains(err.Error(), "line 10\n") || !strings.Contains(err.Error(), "line 11\n") {
		t.Errorf("error carries the whole log, want its tail: %v", err)
	}
	if got := h.actions(); !slices.Equal(got, []string{"mount", "unmount"}) {
		t.Errorf("actions %v, want the mount undone", got)
	}
}

// A Gluster volume whose volume is in --mount-map is bind-mounted from the
// node's FUSE mount, like NFS; the FUSE check is for direct mounts only.
func TestPublishGlusterMapped(t *testing.T) {
	h, checked := glusterHarness(t, nil)
	local := filepath.Join(t.TempDir(), "gv0")
	if err := os.MkdirAll(filepath.Join(local, "ns", "c"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := dirvol.Declare(local); err != nil {
		t.Fatal(err)
	}
	h.d.cfg.MountMap["g2:gv0"] = local
	id := glusterID([]string{"g1", "g2"}, "gv0", "ns", "c")
	target := h.target(t)
	if _, err := h.d.node.NodePublishVolume(h.ctx, publishReq(id.String(), target, false, csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "noatime", "acl")); err != nil {
		t.Fatal(err)
	}
	mp, _ := h.mountOf(target)
	if !slices.Contains(mp.Opts, "bind") || !slices.Contains(mp.Opts, "noatime") || slices.Contains(mp.Opts, "acl") {
		t.Errorf("bind options %v: want bind and noatime, not acl", mp.Opts)
	}
	if len(*checked) != 0 {
		t.Errorf("FUSE check on a bind mount: %v", *checked)
	}
}

func TestGlusterLogFile(t *testing.T) {
	dir := "/var/log/carve/glusterfs"
	a := glusterLogFile(dir, glusterID([]string{"g1"}, "gv0", "ns", "claim"))
	if !strings.HasPrefix(a, dir+"/gv0_ns_claim-") || !strings.HasSuffix(a, ".log") {
		t.Errorf("log file %s, want %s/gv0_ns_claim-<hash>.log", a, dir)
	}
	// Names that map to the same characters still get their own file.
	b := glusterLogFile(dir, glusterID([]string{"g1"}, "gv0", "ns_claim"))
	if a == b {
		t.Errorf("two volumes share the log %s", a)
	}
	weird := glusterLogFile(dir, glusterID([]string{"g1"}, "gv0", "..", "a b", strings.Repeat("x", 300)))
	base := filepath.Base(weird)
	if filepath.Dir(weird) != dir || strings.ContainsAny(base, " /") || strings.HasPrefix(base, ".") || len(base) > 140 {
		t.Errorf("unsafe or long log file name %q", weird)
	}
	whole := glusterLogFile(dir, glusterID([]string{"g1"}, "pvc_ns_c_12345678"))
	if !strings.HasPrefix(filepath.Base(whole), "pvc_ns_c_12345678-") {
		t.Errorf("whole-volume log file %s", whole)
	}
}

func TestCheckGlusterMountinfo(t *testing.T) {
	const (
		root   = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
		tmp    = "30 22 0:30 / /tmp rw shared:2 - tmpfs tmpfs rw\n"
		fuse   = "40 30 0:40 / /tmp/t/mount rw,relatime shared:3 - fuse.glusterfs g1:/gv0/ns/c rw,user_id=0,group_id=0\n"
		bindT  = "41 30 8:1 /x /tmp/t/mount rw shared:4 - ext4 /dev/sda1 rw\n"
		spaced = "42 30 0:41 / /tmp/a\\040b rw - fuse.glusterfs g1:/gv0 rw\n"
	)
	for _, tc := range []struct {
		name, table, target string
		wantErr             string
	}{
		{"gluster mount", root + tmp + fuse, "/tmp/t/mount", ""},
		{"nothing mounted", root + tmp, "/tmp/t/mount", "nothing is mounted"},
		{"another filesystem", root + tmp + bindT, "/tmp/t/mount", "ext4"},
		{"gluster under a bind: the top one counts", root + tmp + bindT + fuse, "/tmp/t/mount", ""},
		{"bind over gluster: the top one counts", root + tmp + fuse + bindT, "/tmp/t/mount", "not a fuse.glusterfs"},
		{"escaped path", root + tmp + spaced, "/tmp/a b", ""},
		{"parent mount only", root + tmp, "/tmp", "tmpfs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkGlusterMountinfo([]byte(tc.table), tc.target)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("error %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestGlusterOptions(t *testing.T) {
	got := glusterOptions([]string{"auto_unmount"}, "/l.log", true)
	if !slices.Equal(got, []string{"auto_unmount", "log-file=/l.log", "ro"}) {
		t.Errorf("options %v", got)
	}
	got = glusterOptions([]string{"ro"}, "/l.log", true)
	if !slices.Equal(got, []string{"ro", "log-file=/l.log"}) {
		t.Errorf("ro twice or lost: %v", got)
	}
}
