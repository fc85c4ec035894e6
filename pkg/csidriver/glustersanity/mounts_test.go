package glustersanity

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/carve-csi/carve/pkg/csidriver/internal/sanitytest"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/klog/v2/ktesting"
	mount "k8s.io/mount-utils"

	"github.com/carve-csi/carve/internal/testenv/glusterd"
	"github.com/carve-csi/carve/pkg/csidriver"
	"github.com/carve-csi/carve/pkg/sharemount"
	"github.com/carve-csi/carve/pkg/volid"
)

// TestNodeGlusterMounts publishes Gluster volumes for real, outside the
// sanity suite: the node's own FUSE mount (read-write, read-only, a missing
// directory) and the bind mount from a --mount-map path that is a FUSE mount
// of the volume.
func TestNodeGlusterMounts(t *testing.T) {
	c := glusterd.Start(t)
	vol := fmt.Sprintf("carvenode%d", os.Getpid())
	c.CreateVolume(t, vol, 1)
	fuse := c.Mount(t, vol)
	for _, d := range []string{"real/a", "real/b"} {
		if err := os.MkdirAll(filepath.Join(fuse, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}

	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	dir := t.TempDir()
	t.Cleanup(func() { sanitytest.UnmountUnder(t, dir) })
	logDir := filepath.Join(dir, "logs")
	direct := serveNode(t, ctx, filepath.Join(dir, "direct.sock"), csidriver.Config{GlusterLogDir: logDir})
	mapped := serveNode(t, ctx, filepath.Join(dir, "mapped.sock"), csidriver.Config{
		GlusterLogDir: logDir, MountMap: sharemount.Map{sharemount.Key(c.Host(), vol): fuse}})
	t.Cleanup(cancel)

	id := func(d ...string) string {
		return volid.ID{Backend: "gluster", Servers: []string{c.Host()}, Share: vol, Dir: d, OnDelete: "retain"}.String()
	}
	publish := func(node csi.NodeClient, volID, target string, readonly bool) error {
		_, err := node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
			VolumeId: volID, TargetPath: target, Readonly: readonly,
			VolumeCapability: &csi.VolumeCapability{
				AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
				AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
			},
		})
		return err
	}
	unpublish := func(node csi.NodeClient, volID, target string) {
		t.Helper()
		if _, err := node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: volID, TargetPath: target}); err != nil {
			t.Fatalf("unpublish %s: %v", target, err)
		}
		if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("target %s left after unpublish: %v", target, err)
		}
	}

	t.Run("direct read-write", func(t *testing.T) {
		target := filepath.Join(dir, "rw")
		if err := publish(direct, id("real", "a"), target, false); err != nil {
			t.Fatal(err)
		}
		if typ, src := mountAt(t, target); typ != "fuse.glusterfs" {
			t.Errorf("target holds %s (%s), want fuse.glusterfs", typ, src)
		}
		if err := os.WriteFile(filepath.Join(target, "f"), []byte("through the node's mount"), 0o644); err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(filepath.Join(fuse, "real", "a", "f")); err != nil || string(got) != "through the node's mount" {
			t.Errorf("file in the volume's directory: %q, %v", got, err)
		}
		// Idempotent.
		if err := publish(direct, id("real", "a"), target, false); err != nil {
			t.Errorf("second publish: %v", err)
		}
		logs, _ := filepath.Glob(filepath.Join(logDir, vol+"_real_a-*.log"))
		if len(logs) != 1 {
			t.Errorf("client logs %v, want one for %s/real/a", logs, vol)
		}
		unpublish(direct, id("real", "a"), target)
	})

	t.Run("direct read-only", func(t *testing.T) {
		target := filepath.Join(dir, "ro")
		if err := publish(direct, id("real", "a"), target, true); err != nil {
			t.Fatal(err)
		}
		err := os.WriteFile(filepath.Join(target, "g"), nil, 0o644)
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("write on a read-only publish: %v, want EROFS", err)
		}
		// Read-write over the read-only mount is refused.
		if err := publish(direct, id("real", "a"), target, false); err == nil || !strings.Contains(err.Error(), "AlreadyExists") {
			t.Errorf("read-write publish over a read-only one: %v, want AlreadyExists", err)
		}
		unpublish(direct, id("real", "a"), target)
	})

	t.Run("direct missing directory", func(t *testing.T) {
		target := filepath.Join(dir, "missing")
		err := publish(direct, id("real", "missing"), target, false)
		if err == nil {
			t.Fatal("published a directory that does not exist")
		}
		t.Logf("publish of a missing directory: %v", err)
		if !strings.Contains(err.Error(), "Gluster client log") {
			t.Errorf("error does not show the client log: %v", err)
		}
		if m := sanitytest.MountsUnder(t, target); len(m) > 0 {
			t.Errorf("mounts left at the target: %v", m)
		}
		unpublish(direct, id("real", "missing"), target)
	})

	t.Run("dead client", func(t *testing.T) {
		target := filepath.Join(dir, "dead")
		if err := publish(direct, id("real", "a"), target, false); err != nil {
			t.Fatal(err)
		}
		// Stop, then kill, the FUSE client and its auto_unmount watcher,
		// so neither can unmount: what a crashed client leaves behind.
		pids := clientPIDs(t, target)
		if len(pids) == 0 {
			t.Fatalf("no glusterfs process serves %s", target)
		}
		for _, sig := range []syscall.Signal{syscall.SIGSTOP, syscall.SIGKILL} {
			for _, pid := range pids {
				_ = syscall.Kill(pid, sig)
			}
		}
		// The kernel aborts the FUSE connection once the client is gone.
		var err error
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, err = os.Stat(target)
			if err != nil || len(sanitytest.MountsUnder(t, target)) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("stat of the target after killing the client %v: %v", pids, err)
		if !mount.IsCorruptedMnt(err) {
			t.Errorf("stat of a mount whose client was killed: %v, want ENOTCONN", err)
		} else {
			resp, err := direct.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id("real", "a"), VolumePath: target})
			if err != nil || !resp.GetVolumeCondition().GetAbnormal() {
				t.Errorf("stats of a dead mount: %v, %v; want an abnormal condition", resp, err)
			}
		}
		unpublish(direct, id("real", "a"), target)
		if m := sanitytest.MountsUnder(t, target); len(m) > 0 {
			t.Errorf("mounts left at the target: %v", m)
		}
	})

	t.Run("bind from a mapped FUSE mount", func(t *testing.T) {
		target := filepath.Join(dir, "bind")
		if err := publish(mapped, id("real", "b"), target, false); err != nil {
			t.Fatal(err)
		}
		if typ, src := mountAt(t, target); typ != "fuse.glusterfs" {
			t.Errorf("target holds %s (%s), want a bind of the fuse.glusterfs mount", typ, src)
		}
		if err := os.WriteFile(filepath.Join(target, "f"), []byte("bind"), 0o644); err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(filepath.Join(fuse, "real", "b", "f")); err != nil || string(got) != "bind" {
			t.Errorf("file in the volume's directory: %q, %v", got, err)
		}
		// The bind shows exactly the volume's directory.
		var want, got unix.Stat_t
		if err := unix.Stat(filepath.Join(fuse, "real", "b"), &want); err != nil {
			t.Fatal(err)
		}
		if err := unix.Stat(target, &got); err != nil {
			t.Fatal(err)
		}
		if want.Ino != got.Ino || want.Dev != got.Dev {
			t.Errorf("target is another directory than real/b")
		}
		unpublish(mapped, id("real", "b"), target)
	})

	if m := sanitytest.MountsUnder(t, dir); len(m) > 0 {
		t.Errorf("mounts left: %v", m)
	}
}

// serveNode runs the node service alone on sock and returns a client.
func serveNode(t *testing.T, ctx context.Context, sock string, cfg csidriver.Config) csi.NodeClient {
	t.Helper()
	cfg.Endpoint = "unix://" + sock
	cfg.Mode = csidriver.ModeNode
	cfg.NodeID = "node"
	d, err := csidriver.New(cfg, mount.New(""))
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- d.Serve(ctx) }()
	t.Cleanup(func() {
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	sanitytest.WaitForSocket(t, sock)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return csi.NewNodeClient(conn)
}

// mountAt returns the type and source of the topmost mount at target.
func mountAt(t *testing.T, target string) (fstype, source string) {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if len(f) > 4 && sep > 4 && sep+2 < len(f) && f[4] == target {
			fstype, source = f[sep+1], f[sep+2]
		}
	}
	return fstype, source
}

// clientPIDs returns the glusterfs processes whose command line names target
// (the FUSE client and its auto_unmount watcher).
func clientPIDs(t *testing.T, target string) []int {
	t.Helper()
	procs, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmd), "\x00")
		if strings.Contains(filepath.Base(args[0]), "glusterfs") && slices.Contains(args, target) {
			pids = append(pids, pid)
		}
	}
	return pids
}
