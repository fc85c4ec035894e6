package csidriver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
	mount "k8s.io/mount-utils"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/volid"
)

// NodeServer implements the CSI node service with k8s.io/mount-utils.
type NodeServer struct {
	csi.UnimplementedNodeServer
	d       *Driver
	mounter mount.Interface
	// checkMount verifies a fresh or existing mount at target: read-only when
	// asked, and for a bind mount, exactly the directory dir. Tests with a fake
	// mounter, which mounts nothing, replace it.
	checkMount func(target string, readonly bool, dir *os.File) error
	// checkFUSE verifies that target holds a Gluster FUSE mount (the mount
	// table); tests with a fake mounter replace it.
	checkFUSE func(target string) error
	// statsTimeout bounds a statfs, which hangs on a dead hard NFS mount.
	statsTimeout time.Duration
}

func newNodeServer(d *Driver, mounter mount.Interface) *NodeServer {
	return &NodeServer{d: d, mounter: mounter, checkMount: verifyMount, checkFUSE: verifyGlusterMount, statsTimeout: 10 * time.Second}
}

// NodeGetCapabilities returns what capabilities.go advertises.
func (n *NodeServer) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	return &csi.NodeGetCapabilitiesResponse{Capabilities: nodeCapabilities()}, nil
}

// NodeGetInfo returns the node ID; no volume limit, no topology.
func (n *NodeServer) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: n.d.cfg.NodeID}, nil
}

// NodePublishVolume mounts the volume's directory at the target path: a bind
// mount when the node has the share at a local path (--mount-map), else the
// backend's own mount (NFS: mount -t nfs SERVER:SHARE/DIR with the
// capability's mount flags; Gluster: mount -t glusterfs SERVER:/VOLUME/DIR
// with a per-volume client log, checked in the mount table, gluster_node.go).
// Read-only publishes are mounted read-only and checked. A target that
// already holds this volume is success.
func (n *NodeServer) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, invalidArg("volume_id is required")
	}
	if req.GetTargetPath() == "" {
		return nil, invalidArg("target_path is required")
	}
	if req.GetVolumeCapability() == nil {
		return nil, invalidArg("volume_capability is required")
	}
	if err := checkCapability(req.GetVolumeCapability()); err != nil {
		return nil, invalidArg("%v", err)
	}
	id, err := volid.Parse(req.GetVolumeId())
	if err != nil {
		return nil, toStatus(err, lookup)
	}
	b, err := n.d.backendOf(id)
	if err != nil {
		return nil, toStatus(err, lookup)
	}
	target := req.GetTargetPath()
	logger := klog.FromContext(ctx).WithValues("volumeID", req.GetVolumeId(), "target", target)
	ctx = klog.NewContext(ctx, logger)
	release, err := n.d.locks.tryAcquire("target:" + target)
	if err != nil {
		return nil, toStatus(err, lookup)
	}
	defer release()

	readonly := req.GetReadonly() || readOnlyMode(req.GetVolumeCapability())
	flags := req.GetVolumeCapability().GetMount().GetMountFlags()
	if err := n.publish(ctx, b, id, target, flags, readonly); err != nil {
		return nil, toStatus(err, lookup)
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

func (n *NodeServer) publish(ctx context.Context, b backend.Backend, id volid.ID, target string, flags []string, readonly bool) error {
	logger := klog.FromContext(ctx)
	// The bind source is opened first, so a missing or unsafe directory fails
	// before anything is created at the target.
	var dir *os.File
	local, mapped := n.d.localShare(id)
	if mapped {
		share, err := dirvol.Open(local)
		if err != nil {
			return fmt.Errorf("%w: mapped share %s: %w", backend.ErrUnavailable, local, err)
		}
		if len(id.Dir) == 0 {
			// A whole Gluster volume: the mapped path is the volume.
			dir, err = os.Open(share.Root())
		} else {
			dir, err = share.OpenDir(id.Dir)
		}
		if err != nil {
			return fmt.Errorf("volume directory %q on %s: %w", id.DirPath(), local, err)
		}
		defer dir.Close()
	}
	if err := os.MkdirAll(target, 0o750); err != nil && !mount.IsCorruptedMnt(err) {
		return fmt.Errorf("create target: %w", err)
	}
	mounted, err := n.mounted(ctx, target)
	if err != nil {
		return err
	}
	fuse := !mapped && isGluster(id)
	if mounted {
		err := n.checkMount(target, readonly, dir)
		if err == nil && fuse {
			err = n.checkFUSE(target)
		}
		if err != nil {
			return fmt.Errorf("%w: %s is already mounted and does not match this request: %w", errIncompatible, target, err)
		}
		logger.V(4).Info("Volume already published")
		return nil
	}

	logFile := ""
	if mapped {
		err = n.bindMount(ctx, id, dir, target, flags, readonly)
	} else {
		spec := b.MountSpec(id, flags)
		opts := slices.Clone(spec.Options)
		if fuse {
			logFile = glusterLogFile(n.d.cfg.GlusterLogDir, id)
			opts = glusterOptions(opts, logFile, readonly)
			if err := os.MkdirAll(n.d.cfg.GlusterLogDir, 0o750); err != nil {
				return fmt.Errorf("create Gluster client log directory: %w", err)
			}
		} else if readonly {
			opts = append(opts, "ro")
		}
		logger.V(2).Info("Mounting volume", "source", spec.Source, "fstype", spec.FSType, "options", opts)
		err = n.mounter.Mount(spec.Source, target, spec.FSType, opts)
		if err == nil && fuse {
			err = n.checkFUSE(target)
		}
	}
	if err == nil {
		err = n.checkMount(target, readonly, dir)
	}
	if err != nil && logFile != "" {
		err = fmt.Errorf("%w; Gluster client log %s ends with:\n%s", err, logFile, logTail(logFile, glusterLogTail))
	}
	if err != nil {
		// A half-done mount (bind done, read-only remount failed) must not
		// stay: the pod would get a writable volume.
		if m, _ := n.mounter.IsMountPoint(target); m {
			if uerr := n.mounter.Unmount(target); uerr != nil {
				logger.Error(uerr, "Cannot undo a failed publish")
			}
		}
		return fmt.Errorf("mount at %s: %w", target, err)
	}
	logger.V(2).Info("Published volume", "readonly", readonly, "bind", mapped)
	return nil
}

// bindFlags are the capability mount flags that mean something for a bind
// mount; the others (nfsvers, hard, ...) belong to the node's share mount.
var bindFlags = map[string]bool{
	"ro": true, "nosuid": true, "nodev": true, "noexec": true,
	"noatime": true, "nodiratime": true, "relatime": true, "strictatime": true,
}

// bindMount mounts dir, an O_NOFOLLOW descriptor of the volume directory,
// through its /proc magic link: the kernel binds exactly the directory that
// was checked, whatever happens to the path meanwhile. --no-canonicalize
// keeps mount(8) from turning the link back into a path.
func (n *NodeServer) bindMount(ctx context.Context, id volid.ID, dir *os.File, target string, flags []string, readonly bool) error {
	opts := []string{"bind"}
	for _, f := range flags {
		if bindFlags[f] {
			opts = append(opts, f)
		} else {
			klog.FromContext(ctx).V(4).Info("Mount flag does not apply to a bind mount; set it where the share is mounted", "flag", f)
		}
	}
	if readonly && !slices.Contains(opts, "ro") {
		opts = append(opts, "ro")
	}
	// mount(8) does not canonicalize the target either now; the kubelet's
	// target is trusted, so resolve it here.
	real, err := filepath.EvalSymlinks(target)
	if err != nil {
		return fmt.Errorf("resolve target: %w", err)
	}
	src := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), dir.Fd())
	klog.FromContext(ctx).V(2).Info("Bind-mounting volume", "dir", id.DirPath(), "share", id.Share, "options", opts)
	return n.mounter.MountSensitiveWithoutSystemdWithMountFlags(src, real, "", opts, nil, []string{"--no-canonicalize"})
}

// mounted reports whether target is a mount point. A corrupted mount (dead
// server: "transport endpoint is not connected", stale file handle) is
// unmounted so the caller can mount afresh.
func (n *NodeServer) mounted(ctx context.Context, target string) (bool, error) {
	m, err := n.mounter.IsMountPoint(target)
	switch {
	case err == nil:
		return m, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case mount.IsCorruptedMnt(err) || mount.IsCorruptedMnt(errors.Unwrap(err)):
		klog.FromContext(ctx).Info("Unmounting corrupted mount before publishing", "err", err)
		if err := n.unmountCorrupted(target); err != nil {
			return false, fmt.Errorf("unmount corrupted %s: %w", target, err)
		}
		return false, nil
	}
	return false, fmt.Errorf("check mount point %s: %w", target, err)
}

// verifyMount is checkMount on a real system.
func verifyMount(target string, readonly bool, dir *os.File) error {
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", target, err)
	}
	switch ro := st.Flags&unix.ST_RDONLY != 0; {
	case readonly && !ro:
		return fmt.Errorf("%s is writable, but the publish is read-only", target)
	case !readonly && ro:
		return fmt.Errorf("%s is read-only, but the publish is read-write", target)
	}
	if dir != nil {
		var want, got unix.Stat_t
		if err := unix.Fstat(int(dir.Fd()), &want); err != nil {
			return fmt.Errorf("stat volume directory: %w", err)
		}
		if err := unix.Stat(target, &got); err != nil {
			return fmt.Errorf("stat %s: %w", target, err)
		}
		if want.Dev != got.Dev || want.Ino != got.Ino {
			return fmt.Errorf("%s shows another directory than the volume's", target)
		}
	}
	return nil
}

// NodeUnpublishVolume unmounts and removes the target. A missing target is
// success; a corrupted mount is unmounted without looking inside it.
func (n *NodeServer) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, invalidArg("volume_id is required")
	}
	if req.GetTargetPath() == "" {
		return nil, invalidArg("target_path is required")
	}
	target := req.GetTargetPath()
	logger := klog.FromContext(ctx).WithValues("volumeID", req.GetVolumeId(), "target", target)
	ctx = klog.NewContext(ctx, logger)
	release, err := n.d.locks.tryAcquire("target:" + target)
	if err != nil {
		return nil, toStatus(err, noLookup)
	}
	defer release()
	if err := n.unpublish(ctx, target); err != nil {
		return nil, toStatus(err, noLookup)
	}
	logger.V(2).Info("Unpublished volume")
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

func (n *NodeServer) unpublish(ctx context.Context, target string) error {
	// CleanupMountPoint stats the target first and handles a corrupted mount
	// it sees there; a mount that only the mount-point check finds corrupted
	// (statx on a dead FUSE or NFS mount) makes it give up, so look first.
	_, err := n.mounter.IsMountPoint(target)
	if mount.IsCorruptedMnt(err) || mount.IsCorruptedMnt(errors.Unwrap(err)) {
		klog.FromContext(ctx).Info("Unmounting corrupted mount", "err", err)
		if err := n.unmountCorrupted(target); err != nil {
			return fmt.Errorf("unmount corrupted %s: %w", target, err)
		}
	}
	if err := mount.CleanupMountPoint(target, n.mounter, true); err != nil {
		return fmt.Errorf("clean up %s: %w", target, err)
	}
	return nil
}

// unmountCorrupted unmounts a dead mount, forcing it when the mounter can
// (umount of a dead hard NFS mount can hang).
func (n *NodeServer) unmountCorrupted(target string) error {
	if f, ok := n.mounter.(mount.MounterForceUnmounter); ok {
		return f.UnmountWithForce(target, 30*time.Second)
	}
	return n.mounter.Unmount(target)
}

// NodeGetVolumeStats reports bytes and inodes of the filesystem mounted at
// the volume path (statfs: for a directory on a share that is the share's
// filesystem, or the quota where the server reports it) and an abnormal
// condition when the mount is gone or dead.
func (n *NodeServer) NodeGetVolumeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, invalidArg("volume_id is required")
	}
	p := req.GetVolumePath()
	if p == "" {
		return nil, invalidArg("volume_path is required")
	}
	if _, err := volid.Parse(req.GetVolumeId()); err != nil {
		return nil, toStatus(err, lookup)
	}
	release, err := n.d.locks.tryAcquire("stats:" + p)
	if err != nil {
		return abnormal("an earlier statfs of the volume has not returned: the server may be unreachable"), nil
	}
	type result struct {
		resp *csi.NodeGetVolumeStatsResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		// The lock is held until statfs returns, so a hung mount costs one
		// goroutine, not one per kubelet poll. Released before the answer
		// is sent: a poll right after this one must not find it held.
		r, err := n.stats(p)
		release()
		done <- result{r, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, toStatus(r.err, lookup)
		}
		return r.resp, nil
	case <-time.After(n.statsTimeout):
		return abnormal("statfs of the volume did not return: the server may be unreachable"), nil
	case <-ctx.Done():
		return nil, toStatus(ctx.Err(), lookup)
	}
}

func (n *NodeServer) stats(p string) (*csi.NodeGetVolumeStatsResponse, error) {
	if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: volume path %s does not exist", backend.ErrNotFound, p)
	} else if mount.IsCorruptedMnt(err) {
		return abnormal(fmt.Sprintf("the mount is corrupted: %v", err)), nil
	} else if err != nil {
		return nil, fmt.Errorf("stat %s: %w", p, err)
	}
	m, err := n.mounter.IsMountPoint(p)
	if mount.IsCorruptedMnt(err) || mount.IsCorruptedMnt(errors.Unwrap(err)) {
		return abnormal(fmt.Sprintf("the mount is corrupted: %v", err)), nil
	}
	if err != nil {
		return nil, fmt.Errorf("check mount point %s: %w", p, err)
	}
	if !m {
		return abnormal("the volume is not mounted at " + p), nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		if mount.IsCorruptedMnt(err) {
			return abnormal(fmt.Sprintf("the mount is corrupted: %v", err)), nil
		}
		return nil, fmt.Errorf("statfs %s: %w", p, err)
	}
	bs := int64(st.Bsize)
	bytes := &csi.VolumeUsage{
		Unit:      csi.VolumeUsage_BYTES,
		Total:     int64(st.Blocks) * bs,
		Available: int64(st.Bavail) * bs,
		Used:      int64(st.Blocks-st.Bfree) * bs,
	}
	if uint32(st.Type) == uint32(unix.BTRFS_SUPER_MAGIC) {
		// The btrfs layout: statfs (and df in the pod) shows the whole
		// filesystem; the claim's own figures are its qgroup's.
		if q, err := volumeQuota(p); err != nil {
			return nil, err
		} else if q != nil && q.LimitBytes > 0 {
			bytes.Total = q.LimitBytes
			bytes.Used = q.ReferencedBytes
			bytes.Available = min(max(q.LimitBytes-q.ReferencedBytes, 0), bytes.Available)
		}
	}
	return &csi.NodeGetVolumeStatsResponse{
		Usage: []*csi.VolumeUsage{
			bytes,
			{
				Unit:      csi.VolumeUsage_INODES,
				Total:     int64(st.Files),
				Available: int64(st.Ffree),
				Used:      int64(st.Files - st.Ffree),
			},
		},
		VolumeCondition: &csi.VolumeCondition{Message: "mounted"},
	}, nil
}

// volumeQuota reads the qgroup of the subvolume mounted at p (nil: not a
// subvolume, or no quota).
func volumeQuota(p string) (*dirvol.Quota, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", p, err)
	}
	defer unix.Close(fd)
	q, err := dirvol.SubvolumeQuota(fd)
	if err != nil {
		return nil, fmt.Errorf("read the btrfs qgroup of %s: %w", p, err)
	}
	return q, nil
}

func abnormal(msg string) *csi.NodeGetVolumeStatsResponse {
	return &csi.NodeGetVolumeStatsResponse{VolumeCondition: &csi.VolumeCondition{Abnormal: true, Message: msg}}
}
