package glusterd

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/carve-csi/carve/internal/testenv/internal/realenv"
)

// Volume is a volume created by CreateVolume.
type Volume struct {
	Name string
	// Bricks are the "host:/path" brick specs; BrickDirs their local paths.
	Bricks    []string
	BrickDirs []string
}

// VolumeOption customizes CreateVolume.
type VolumeOption func(*volumeConfig)

type volumeConfig struct {
	set     [][2]string
	noStart bool
}

// WithOption runs `gluster volume set VOL key value` before the volume starts.
func WithOption(key, value string) VolumeOption {
	return func(vc *volumeConfig) { vc.set = append(vc.set, [2]string{key, value}) }
}

// WithoutStart leaves the created volume stopped.
func WithoutStart() VolumeOption {
	return func(vc *volumeConfig) { vc.noStart = true }
}

// CreateVolume creates and starts volume name with the given number of bricks
// on this host, under BrickRoot: one brick gives a plain volume, N > 1 a
// replica-N volume (`force` allows replicas on one host and bricks on the
// root file system). Cleanup stops and deletes the volume and removes the
// bricks.
func (c *Cluster) CreateVolume(t testing.TB, name string, bricks int, opts ...VolumeOption) *Volume {
	t.Helper()
	if bricks < 1 {
		t.Fatalf("CreateVolume(%q): bricks = %d, want >= 1", name, bricks)
	}
	var vc volumeConfig
	for _, o := range opts {
		o(&vc)
	}
	ctx := context.Background() // Gluster bounds each command
	vol := &Volume{Name: name}
	volDir := filepath.Join(c.brickRoot, name)
	for i := range bricks {
		dir := filepath.Join(volDir, "brick"+strconv.Itoa(i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatalf("create brick dir: %v", err)
		}
		vol.BrickDirs = append(vol.BrickDirs, dir)
		vol.Bricks = append(vol.Bricks, c.host+":"+dir)
	}
	args := []string{"volume", "create", name}
	if bricks > 1 {
		args = append(args, "replica", strconv.Itoa(bricks))
	}
	args = append(args, vol.Bricks...)
	args = append(args, "force")

	start := time.Now()
	if _, err := c.Gluster(ctx, args...); err != nil {
		_ = os.RemoveAll(volDir)
		t.Fatalf("create volume %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
		defer cancel()
		if err := c.ensureRunning(ctx); err != nil {
			t.Errorf("delete volume %s: %v", name, err)
			return
		}
		if err := c.deleteVolume(ctx, name); err != nil {
			t.Errorf("delete volume %s: %v", name, err)
			return
		}
		if err := os.RemoveAll(volDir); err != nil {
			t.Errorf("remove bricks of %s: %v", name, err)
		}
	})
	created := time.Since(start)
	for _, kv := range vc.set {
		if _, err := c.Gluster(ctx, "volume", "set", name, kv[0], kv[1]); err != nil {
			t.Fatalf("set %s=%s on volume %s: %v", kv[0], kv[1], name, err)
		}
	}
	if !vc.noStart {
		if _, err := c.Gluster(ctx, "volume", "start", name); err != nil {
			t.Fatalf("start volume %s: %v", name, err)
		}
	}
	t.Logf("glusterd: volume %s (%d brick(s)) created in %s, ready in %s",
		name, bricks, created.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	return vol
}

// deleteVolume stops (force also succeeds on a stopped volume) and deletes a
// volume. Brick directories are left to the caller.
func (c *Cluster) deleteVolume(ctx context.Context, name string) error {
	if _, err := c.Gluster(ctx, "volume", "stop", name, "force"); err != nil {
		return fmt.Errorf("stop volume %s: %w", name, err)
	}
	if _, err := c.Gluster(ctx, "volume", "delete", name); err != nil {
		return fmt.Errorf("delete volume %s: %w", name, err)
	}
	return nil
}

// EnableQuota enables quota on vol; it is not an error if it already is.
// Limits are enforced lazily: writes may overshoot a limit for seconds.
func (c *Cluster) EnableQuota(t testing.TB, vol string) {
	t.Helper()
	_, err := c.Gluster(context.Background(), "volume", "quota", vol, "enable")
	if err != nil && !strings.Contains(err.Error(), "already enabled") {
		t.Fatalf("enable quota on %s: %v", vol, err)
	}
}

// Mount FUSE-mounts HOST:/VOL or HOST:/VOL/SUBDIR ("vol" or "vol/sub") on a
// new temporary directory and returns it. The subdirectory must exist.
// Cleanup unmounts it, lazily if a plain unmount fails.
func (c *Cluster) Mount(t testing.TB, volOrVolSubdir string) string {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Fatalf("glusterfs mount needs FUSE: %v", err)
	}
	dir, err := os.MkdirTemp("", mountDirPrefix)
	if err != nil {
		t.Fatal(err)
	}
	// The mount table holds resolved paths (TMPDIR may be a symlink).
	if dir, err = filepath.EvalSymlinks(dir); err != nil {
		t.Fatal(err)
	}
	src := c.host + ":/" + strings.TrimPrefix(volOrVolSubdir, "/")
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	_, err = realenv.Run(ctx, "mount", "-t", "glusterfs", src, dir)
	if err == nil {
		// mount.glusterfs exits 0 for a missing subdirectory without
		// mounting anything, so check the mount table.
		var mounts []string
		if mounts, err = glusterMounts(); err == nil && !slices.Contains(mounts, dir) {
			err = errors.New("mount exited 0 but nothing is mounted (does the volume or subdirectory exist?)")
		}
	}
	if err != nil {
		_ = os.Remove(dir)
		t.Fatalf("mount %s on %s: %v (client logs in /var/log/glusterfs)", src, dir, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
		defer cancel()
		if err := unmount(ctx, dir); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// unmount unmounts dir, lazily if a plain unmount fails, and removes the
// mount point if it is one of the fixture's. os.Remove, not RemoveAll: if
// the unmount did not take, removing recursively would delete volume data.
func unmount(ctx context.Context, dir string) error {
	if _, err := realenv.Run(ctx, "umount", dir); err != nil {
		if _, lerr := realenv.Run(ctx, "umount", "-l", dir); lerr != nil {
			return fmt.Errorf("%w; lazy unmount: %w", err, lerr)
		}
	}
	if !strings.HasPrefix(filepath.Base(dir), mountDirPrefix) {
		return nil
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove mount point: %w", err)
	}
	return nil
}

// removeLeftovers deletes volumes and unmounts mounts that a crashed earlier
// run of this fixture left behind (recognized by the marker prefixes).
func (c *Cluster) removeLeftovers(ctx context.Context) error {
	var errs []error
	mounts, err := glusterMounts()
	if err != nil {
		return err
	}
	for _, m := range mounts {
		if strings.HasPrefix(filepath.Base(m), mountDirPrefix) {
			c.logf("glusterd: unmounting %s, left by an earlier run", m)
			errs = append(errs, unmount(ctx, m))
		}
	}
	vols, err := c.volumes(ctx)
	if err != nil {
		return err
	}
	for _, v := range vols {
		roots := v.markedRoots()
		if len(roots) == 0 {
			continue
		}
		c.logf("glusterd: deleting volume %s, left by an earlier run", v.Name)
		if err := c.deleteVolume(ctx, v.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		for _, r := range roots {
			errs = append(errs, os.RemoveAll(r))
		}
	}
	return errors.Join(errs...)
}

type volumeInfo struct {
	Name   string `xml:"name"`
	Bricks []struct {
		Name string `xml:"name"` // host:/path
	} `xml:"bricks>brick"`
}

func (v volumeInfo) brickPaths() []string {
	var paths []string
	for _, b := range v.Bricks {
		if _, p, ok := strings.Cut(b.Name, ":"); ok {
			paths = append(paths, p)
		}
	}
	return paths
}

func (v volumeInfo) hasBrickUnder(root string) bool {
	if root == "" {
		return false
	}
	for _, p := range v.brickPaths() {
		if strings.HasPrefix(p, root+"/") {
			return true
		}
	}
	return false
}

// markedRoots returns the fixture brick roots (marker-prefixed directories)
// holding the volume's bricks.
func (v volumeInfo) markedRoots() []string {
	var roots []string
	for _, p := range v.brickPaths() {
		i := strings.Index(p, "/"+brickRootPrefix)
		if i < 0 {
			continue
		}
		root := p[:i+1] + strings.SplitN(p[i+1:], "/", 2)[0]
		if !slices.Contains(roots, root) {
			roots = append(roots, root)
		}
	}
	return roots
}

// volumes lists all volumes with their bricks.
func (c *Cluster) volumes(ctx context.Context) ([]volumeInfo, error) {
	out, err := c.Gluster(ctx, "volume", "info", "--xml")
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	var res struct {
		Volumes []volumeInfo `xml:"volInfo>volumes>volume"`
	}
	if err := xml.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("parse volume info: %w", err)
	}
	return res.Volumes, nil
}
