package dirvol

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/carve-csi/carve/pkg/params"
)

// The btrfs layout (StorageClass layout: btrfs): each volume is a btrfs
// subvolume whose qgroup limits the bytes it references to the claim's size;
// snapshots are read-only subvolume snapshots, clones and restores writable
// ones. Every call is an ioctl on a descriptor resolved by carve (a parent
// directory plus one name, or the subvolume itself), never on a path, so a
// symlink a pod planted is never followed.
//
// x/sys/unix has the filesystem magic but none of the btrfs ioctls, so the
// request numbers and argument structures below are the kernel's ABI as
// declared in include/uapi/linux/btrfs.h and btrfs_tree.h.
const (
	// _IOW(0x94, 23/24/63, struct btrfs_ioctl_vol_args_v2), 4096 bytes.
	iocSnapCreateV2   = 0x50009417
	iocSubvolCreateV2 = 0x50009418
	iocSnapDestroyV2  = 0x5000943f
	// _IOR(0x94, 43, struct btrfs_ioctl_qgroup_limit_args), 48 bytes.
	iocQgroupLimit = 0x8030942b
	// _IOWR(0x94, 17, struct btrfs_ioctl_search_args), 4096 bytes.
	iocTreeSearch = 0xd0009411
	// _IOWR(0x94, 18, struct btrfs_ioctl_ino_lookup_args), 4096 bytes.
	iocInoLookup = 0xd0009412

	subvolRdonly       = 1 << 1 // BTRFS_SUBVOL_RDONLY
	qgroupLimitMaxRfer = 1 << 0 // BTRFS_QGROUP_LIMIT_MAX_RFER

	// BTRFS_FIRST_FREE_OBJECTID: the inode number of every subvolume's root.
	firstFreeObjectID = 256
	quotaTreeObjectID = 8   // BTRFS_QUOTA_TREE_OBJECTID
	qgroupStatusKey   = 240 // BTRFS_QGROUP_STATUS_KEY
	qgroupInfoKey     = 242 // BTRFS_QGROUP_INFO_KEY
	qgroupLimitKey    = 244 // BTRFS_QGROUP_LIMIT_KEY

	subvolNameMax = 4039 // BTRFS_SUBVOL_NAME_MAX
)

// struct btrfs_ioctl_vol_args_v2 (the size/qgroup_inherit union is unused).
type btrfsVolArgsV2 struct {
	Fd      int64
	Transid uint64
	Flags   uint64
	Unused  [4]uint64
	Name    [subvolNameMax + 1]byte
}

// struct btrfs_ioctl_qgroup_limit_args with its struct btrfs_qgroup_limit.
type btrfsQgroupLimitArgs struct {
	QgroupID uint64
	Flags    uint64
	MaxRfer  uint64
	MaxExcl  uint64
	RsvRfer  uint64
	RsvExcl  uint64
}

// struct btrfs_ioctl_search_key.
type btrfsSearchKey struct {
	TreeID      uint64
	MinObjectID uint64
	MaxObjectID uint64
	MinOffset   uint64
	MaxOffset   uint64
	MinTransid  uint64
	MaxTransid  uint64
	MinType     uint32
	MaxType     uint32
	NrItems     uint32
	Unused      uint32
	Unused1     [4]uint64
}

// struct btrfs_ioctl_search_args: the key, then items, each a struct
// btrfs_ioctl_search_header (32 bytes) followed by its data.
type btrfsSearchArgs struct {
	Key btrfsSearchKey
	Buf [4096 - 104]byte
}

// struct btrfs_ioctl_ino_lookup_args.
type btrfsInoLookupArgs struct {
	TreeID   uint64
	ObjectID uint64
	Name     [4080]byte
}

// ErrLayout: the share cannot hold the StorageClass's layout (not btrfs,
// quota off). Retrying does not help until an administrator acts.
var ErrLayout = errors.New("the share does not support the requested layout")

func btrfsIoctl(fd int, req uintptr, arg unsafe.Pointer) error {
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg)); e != 0 {
		return e
	}
	return nil
}

func isBtrfs(fd int) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return false, fmt.Errorf("statfs: %w", err)
	}
	return uint32(st.Type) == uint32(unix.BTRFS_SUPER_MAGIC), nil
}

// isSubvolume reports whether fd is the root of a btrfs subvolume.
func isSubvolume(fd int) (bool, error) {
	if ok, err := isBtrfs(fd); err != nil || !ok {
		return false, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false, fmt.Errorf("stat: %w", err)
	}
	return st.Ino == firstFreeObjectID && st.Mode&unix.S_IFMT == unix.S_IFDIR, nil
}

// isSubvolumeAt: name below dirfd (not followed) is a subvolume root.
func isSubvolumeAt(dirfd int, name string) bool {
	var st unix.Stat_t
	if unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil ||
		st.Ino != firstFreeObjectID || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return false
	}
	ok, _ := isBtrfs(dirfd)
	return ok
}

func volArgs(name string) (*btrfsVolArgsV2, error) {
	if len(name) == 0 || len(name) > subvolNameMax {
		return nil, fmt.Errorf("subvolume name %q: want 1 to %d bytes", name, subvolNameMax)
	}
	a := &btrfsVolArgsV2{}
	copy(a.Name[:], name)
	return a, nil
}

// createSubvolume makes an empty subvolume name in the directory parent.
func createSubvolume(parent int, name string) error {
	a, err := volArgs(name)
	if err != nil {
		return err
	}
	if err := btrfsIoctl(parent, iocSubvolCreateV2, unsafe.Pointer(a)); err != nil {
		return fmt.Errorf("create subvolume %s: %w", name, err)
	}
	return nil
}

// snapshotSubvolume snapshots the subvolume src as name in parent.
func snapshotSubvolume(src, parent int, name string, readonly bool) error {
	a, err := volArgs(name)
	if err != nil {
		return err
	}
	a.Fd = int64(src)
	if readonly {
		a.Flags = subvolRdonly
	}
	if err := btrfsIoctl(parent, iocSnapCreateV2, unsafe.Pointer(a)); err != nil {
		return fmt.Errorf("snapshot subvolume as %s: %w", name, err)
	}
	return nil
}

// destroySubvolume deletes the subvolume name in parent with everything in
// it, without walking it. Subvolumes nested inside it make it fail
// (ENOTEMPTY); removeAllAt then walks it.
func destroySubvolume(parent int, name string) error {
	a, err := volArgs(name)
	if err != nil {
		return err
	}
	if err := btrfsIoctl(parent, iocSnapDestroyV2, unsafe.Pointer(a)); err != nil {
		return fmt.Errorf("delete subvolume %s: %w", name, err)
	}
	return nil
}

// setQgroupLimit limits the bytes the subvolume fd references (its own data
// and what it shares with snapshots: what its user sees).
func setQgroupLimit(fd int, bytes int64) error {
	if bytes <= 0 {
		return nil
	}
	a := &btrfsQgroupLimitArgs{Flags: qgroupLimitMaxRfer, MaxRfer: uint64(bytes)} // QgroupID 0: fd's subvolume
	if err := btrfsIoctl(fd, iocQgroupLimit, unsafe.Pointer(a)); err != nil {
		if errors.Is(err, unix.ENOTCONN) {
			return fmt.Errorf("%w: btrfs quota is not enabled (run `btrfs quota enable <mount point>` on the filesystem): %w", ErrLayout, err)
		}
		return fmt.Errorf("set qgroup limit: %w", err)
	}
	return nil
}

// subvolumeID returns the ID of the subvolume holding fd.
func subvolumeID(fd int) (uint64, error) {
	a := &btrfsInoLookupArgs{ObjectID: firstFreeObjectID}
	if err := btrfsIoctl(fd, iocInoLookup, unsafe.Pointer(a)); err != nil {
		return 0, fmt.Errorf("look up subvolume: %w", err)
	}
	return a.TreeID, nil
}

// searchQuotaItem returns the data of the quota tree item (0, typ, offset),
// or nil when there is none. ENOENT: quota is off (no quota tree).
func searchQuotaItem(fd int, typ uint32, offset uint64) ([]byte, error) {
	a := &btrfsSearchArgs{Key: btrfsSearchKey{
		TreeID:     quotaTreeObjectID,
		MinOffset:  offset,
		MaxOffset:  offset,
		MaxTransid: ^uint64(0),
		MinType:    typ,
		MaxType:    typ,
		NrItems:    1,
	}}
	if err := btrfsIoctl(fd, iocTreeSearch, unsafe.Pointer(a)); err != nil {
		return nil, err
	}
	if a.Key.NrItems == 0 {
		return nil, nil
	}
	h := a.Buf[:32]
	gotOff := binary.LittleEndian.Uint64(h[16:24])
	gotType := binary.LittleEndian.Uint32(h[24:28])
	n := binary.LittleEndian.Uint32(h[28:32])
	if gotType != typ || gotOff != offset || int(n) > len(a.Buf)-32 {
		return nil, nil
	}
	return append([]byte(nil), a.Buf[32:32+n]...), nil
}

// quotaEnabled reports whether the btrfs filesystem holding fd has quota on.
func quotaEnabled(fd int) (bool, error) {
	item, err := searchQuotaItem(fd, qgroupStatusKey, 0)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read the quota status: %w", err)
	}
	return item != nil, nil
}

// Quota is a subvolume's qgroup: its limit and what it uses.
type Quota struct {
	SubvolumeID uint64
	// LimitBytes is the referenced-bytes limit (0: none).
	LimitBytes int64
	// ReferencedBytes: all data the subvolume references, shared with
	// snapshots or not (what the limit counts); ExclusiveBytes: only its own.
	ReferencedBytes int64
	ExclusiveBytes  int64
}

// SubvolumeQuota reads the qgroup of the subvolume whose root is f (for
// callers holding an opened volume, e.g. a node's mount of it). It returns
// nil when f is no btrfs subvolume root or quota is off.
func SubvolumeQuota(fd int) (*Quota, error) {
	if ok, err := isSubvolume(fd); err != nil || !ok {
		return nil, err
	}
	id, err := subvolumeID(fd)
	if err != nil {
		return nil, err
	}
	info, err := searchQuotaItem(fd, qgroupInfoKey, id) // level 0: qgroupid is the subvolume ID
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read qgroup 0/%d: %w", id, err)
	}
	if len(info) < 40 {
		return nil, nil
	}
	q := &Quota{
		SubvolumeID:     id,
		ReferencedBytes: int64(binary.LittleEndian.Uint64(info[8:16])),
		ExclusiveBytes:  int64(binary.LittleEndian.Uint64(info[24:32])),
	}
	lim, err := searchQuotaItem(fd, qgroupLimitKey, id)
	if err != nil {
		return nil, fmt.Errorf("read the limit of qgroup 0/%d: %w", id, err)
	}
	if len(lim) >= 16 && binary.LittleEndian.Uint64(lim[0:8])&qgroupLimitMaxRfer != 0 {
		q.LimitBytes = int64(binary.LittleEndian.Uint64(lim[8:16]))
	}
	return q, nil
}

// checkBtrfsLayout verifies that the share root can hold btrfs-layout
// volumes: btrfs with quota enabled. carve does not enable quota itself:
// it costs every write on the filesystem some accounting, which is the
// administrator's call.
func (s *Share) checkBtrfsLayout(root int) error {
	ok, err := isBtrfs(root)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: layout btrfs needs the share on btrfs, and share %s is not (use layout directory, or put the share on btrfs)",
			ErrLayout, s.root)
	}
	on, err := quotaEnabled(root)
	if err != nil {
		return fmt.Errorf("share %s: %w", s.root, err)
	}
	if !on {
		return fmt.Errorf("%w: layout btrfs enforces sizes with btrfs qgroups, and quota is off on the filesystem of share %s: "+
			"run `btrfs quota enable <its mount point>` on the server", ErrLayout, s.root)
	}
	return nil
}

// CheckLayout verifies that the share can hold volumes of layout (params
// Layout*): for btrfs, the share is btrfs with quota enabled.
func (s *Share) CheckLayout(layout string) error {
	if layout != params.LayoutBtrfs {
		return nil
	}
	root, err := s.openRoot(false)
	if err != nil {
		return err
	}
	defer unix.Close(root)
	return s.btrfs().check(context.Background(), root)
}

// SetLimit raises (or sets) the size limit of a volume that is a btrfs
// subvolume; enforced is false, and nothing changes, for a plain directory.
func (s *Share) SetLimit(dir []string, bytes int64) (enforced bool, err error) {
	root, fd, err := s.open(dir)
	if err != nil {
		return false, err
	}
	defer unix.Close(root)
	defer unix.Close(fd)
	enforced, err = s.btrfs().setLimit(context.Background(), fd, dir, bytes)
	if err != nil {
		return false, fmt.Errorf("%s on %s: %w", strings.Join(dir, "/"), s.root, err)
	}
	return enforced, nil
}

// Quota reads the qgroup of a volume that is a btrfs subvolume (nil for a
// plain directory).
func (s *Share) Quota(dir []string) (*Quota, error) {
	root, fd, err := s.open(dir)
	if err != nil {
		return nil, err
	}
	defer unix.Close(root)
	defer unix.Close(fd)
	return s.btrfs().quota(context.Background(), fd, dir)
}
