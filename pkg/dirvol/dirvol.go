// Package dirvol is carve's one directory engine: it creates, reuses, archives
// and deletes per-volume directories under a share root (an NFS export or a
// Gluster volume reached through a local path).
//
// Pods own the inside of their directories and may plant symlinks there, so no
// path under the root is ever resolved by following one: every lookup goes
// through openat2 with RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS (or, where openat2 is
// missing, a walk of O_NOFOLLOW openat calls), and every change is made relative
// to a directory file descriptor obtained that way.
//
// carve keeps its own state in folders at the root whose names start with
// ".carve" (params.ReservedPrefix), which no rendered path may use:
//
//	.carve-tmp/      markers of directories being created (each made as
//	                 <parent>/.carve-new-<random> and renamed into place)
//	.carve-meta/     one small JSON record per volume directory (who created it)
//	.carve-archive/  archived volumes, <path>-<UTC timestamp> (the last segment
//	                 cut and given a digest when too long), each with a
//	                 <entry>.json record naming the volume's path and claim
//	.carve-trash/    deleted volumes waiting to be purged
//	.carve-snapshots/ snapshots: copies of volumes and their records (snapshot.go)
//
// A Share is safe for concurrent use by one process: operations that change the
// tree shape are serialized.
package dirvol

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/carve-csi/carve/pkg/params"
)

var (
	// ErrUnsafe: a symlink or a non-directory sits where a directory should be.
	ErrUnsafe = errors.New("unsafe path")
	// ErrNotFound: the volume directory does not exist.
	ErrNotFound = errors.New("volume directory not found")
)

const (
	tmpDir     = ".carve-tmp"
	metaDir    = ".carve-meta"
	archiveDir = ".carve-archive"
	trashDir   = ".carve-trash"

	// parentMode lets the kubelet's mount helper traverse to a volume without
	// letting anyone who mounts the share list other tenants' claims.
	parentMode = 0o711
	stateMode  = 0o700
)

// Owner is the ownership and mode of a new volume directory.
type Owner struct {
	UID  int64
	GID  int64
	Mode uint32 // permission bits including setgid, e.g. 02770
}

// Meta records who a directory was carved for; kept outside the directory so
// the pod using the volume cannot forge it.
type Meta struct {
	// Dir is the volume directory relative to the root, "/"-joined. Records
	// are stored under a hash of it, so this is how a scan of the records
	// finds which directories are volumes (nesting checks, the GID table).
	// Records written before it existed lack it; writeMeta always sets it.
	Dir       string `json:"dir,omitempty"`
	PV        string `json:"pv"`
	Namespace string `json:"namespace"`
	Claim     string `json:"claim"`
	// CapacityBytes is the size requested when the volume was carved or last
	// expanded; CSI needs it to tell a retry from a conflicting request.
	CapacityBytes int64 `json:"capacityBytes,omitempty"`
	// GID is the group allocated to the directory (0: none). Recorded before
	// the PV exists, so a restart can rebuild the GID table from the share.
	GID int64 `json:"gid,omitempty"`
	// Source is the snapshot or volume ID the directory was filled from
	// ("" for an empty volume); a retry must name the same one.
	Source string `json:"source,omitempty"`
	// Layout is how the volume was made (params.Layout*; "" for a plain
	// directory). With params.LayoutBtrfs, Create makes a btrfs subvolume
	// limited to CapacityBytes (btrfs.go).
	Layout  string    `json:"layout,omitempty"`
	Updated time.Time `json:"updated"`
}

// Info describes an existing volume directory.
type Info struct {
	UID  uint32
	GID  uint32
	Mode uint32   // permission bits including setuid/setgid/sticky
	Meta *Meta    // nil when carve has no record (data from elsewhere)
	Path []string // the directory, relative to the root
}

// Share is a share root on the local filesystem.
type Share struct {
	root string
	mu   sync.Mutex // serializes changes to the tree shape

	idMu sync.Mutex
	seen seen // the share identity verified last (identity.go)

	helper helperSlot // the btrfs helper on the server, if any (btrfsops.go)
}

// Open returns the engine of the share at root: one per root in a process,
// so every caller shares its lock and its verified identity. The root is
// verified by every operation, not here: a share that is down at start-up
// works once it is back.
func Open(root string) (*Share, error) {
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("share root %q is not an absolute path", root)
	}
	root = cleanRoot(root)
	registry.Lock()
	defer registry.Unlock()
	if s, ok := registry.m[root]; ok {
		return s, nil
	}
	s := &Share{root: root}
	registry.m[root] = s
	return s, nil
}

// Root returns the local path of the share.
func (s *Share) Root() string { return s.root }

// openRoot opens the share root and verifies it is the share (Verify);
// write says whether the caller is about to change the share.
func (s *Share) openRoot(write bool) (int, error) {
	fd, err := unix.Open(s.root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("%w: open share root %s: %w", ErrShareUnverified, s.root, err)
	}
	if err := s.verify(fd, write); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// open resolves a volume directory safely. It returns the share root's and
// the directory's descriptors; the caller closes both.
func (s *Share) open(dir []string) (root, fd int, err error) {
	if err := checkDir(dir); err != nil {
		return -1, -1, err
	}
	if root, err = s.openRoot(false); err != nil {
		return -1, -1, err
	}
	if fd, err = resolve(root, dir); err != nil {
		unix.Close(root)
		return -1, -1, err
	}
	return root, fd, nil
}

// Lookup returns the directory's ownership and carve's record of it, or
// ErrNotFound.
func (s *Share) Lookup(dir []string) (*Info, error) {
	root, fd, err := s.open(dir)
	if err != nil {
		return nil, err
	}
	defer unix.Close(root)
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", strings.Join(dir, "/"), err)
	}
	info := &Info{UID: st.Uid, GID: st.Gid, Mode: st.Mode & 0o7777, Path: dir}
	info.Meta, err = s.readMeta(root, dir)
	if err != nil {
		return nil, err
	}
	return info, nil
}

// Create makes the directory with the given owner and records meta. It is
// built under a temporary name in its parent and renamed into place, so a
// crash never leaves a half-initialized volume at the final path (and Purge
// removes the half-made one). If the directory already exists it is left
// untouched and created is false. Errors no retry can fix wrap ErrPermanent.
func (s *Share) Create(ctx context.Context, dir []string, own Owner, meta Meta) (created bool, err error) {
	return s.create(ctx, dir, own, meta, nil, nil)
}

// maker makes the new, empty or filled, volume directory name in parent
// (root is the share's root); nil makes a plain directory, or an empty
// subvolume in the btrfs layout.
type maker func(root, parent int, name string) error

// filler populates a new volume directory (fd) before it gets its final
// name; beat refreshes the creation's marker during a long fill.
type filler func(ctx context.Context, root, fd int, beat func()) error

func (s *Share) create(ctx context.Context, dir []string, own Owner, meta Meta, mk maker, fill filler) (created bool, err error) {
	if err := checkDir(dir); err != nil {
		return false, err
	}
	s.mu.Lock()
	locked := true
	defer func() {
		if locked {
			s.mu.Unlock()
		}
	}()
	root, err := s.openRoot(true)
	if err != nil {
		return false, err
	}
	defer unix.Close(root)
	btrfs := meta.Layout == params.LayoutBtrfs
	ops := s.btrfs()
	if btrfs {
		if err := ops.check(ctx, root); err != nil {
			return false, err
		}
	}

	parent, err := mkdirAll(root, dir[:len(dir)-1], parentMode)
	if err != nil {
		return false, permanent(err)
	}
	defer unix.Close(parent)
	leaf := dir[len(dir)-1]
	if fd, err := openDirAt(parent, leaf); err == nil {
		unix.Close(fd)
		return false, nil
	} else if !errors.Is(err, ErrNotFound) {
		return false, fmt.Errorf("%s: %w", strings.Join(dir, "/"), err)
	}

	// Built under a temporary name next to its final one and renamed within
	// the parent (see newPrefix); a marker in .carve-tmp names it until
	// then, so Purge can remove what a crash leaves half made.
	tmp, err := mkdirAll(root, []string{tmpDir}, stateMode)
	if err != nil {
		return false, permanent(err)
	}
	defer unix.Close(tmp)
	id := randomSuffix()
	name := newPrefix + id
	if err := writeMarker(tmp, id, creation{Dir: strings.Join(dir, "/"), Tmp: name, Started: time.Now().UTC(), Fill: fill != nil}); err != nil {
		return false, err
	}
	defer unix.Unlinkat(tmp, markerName(id), 0)
	switch {
	case mk != nil:
		// Its errors say themselves what they are (a source gone, ...).
		err = mk(root, parent, name)
	case btrfs:
		err = permanent(ops.createSubvolume(ctx, parent, dir[:len(dir)-1], name))
	default:
		err = permanent(unix.Mkdirat(parent, name, 0))
	}
	discard := func() {
		if err := s.removeAt(ctx, parent, dir[:len(dir)-1], name); err != nil {
			klog.FromContext(ctx).Error(err, "Removing an unfinished volume directory failed; Purge retries", "share", s.root, "tmp", name)
		}
	}
	if err != nil {
		discard()
		return false, fmt.Errorf("make %s in %s: %w", name, strings.Join(dir[:len(dir)-1], "/"), err)
	}
	fd, err := openDirAt(parent, name)
	if err != nil {
		discard()
		return false, err
	}
	if btrfs && meta.CapacityBytes > 0 {
		// Limited before it gets its name: the volume is never usable
		// without its size.
		if _, err := ops.setLimit(ctx, fd, append(append([]string(nil), dir[:len(dir)-1]...), name), meta.CapacityBytes); err != nil {
			unix.Close(fd)
			discard()
			return false, fmt.Errorf("%s on %s: %w", strings.Join(dir, "/"), s.root, err)
		}
	}
	if fill != nil {
		// A copy can take long: other volumes on the share must not wait.
		// The directory has a name no one else uses, and the marker's
		// heartbeat keeps Purge away from it.
		s.mu.Unlock()
		locked = false
		beat := func() {
			now := unix.NsecToTimespec(time.Now().UnixNano())
			_ = unix.UtimesNanoAt(tmp, markerName(id), []unix.Timespec{now, now}, unix.AT_SYMLINK_NOFOLLOW)
		}
		err = fill(ctx, root, fd, beat)
		s.mu.Lock()
		locked = true
		if err != nil {
			unix.Close(fd)
			discard()
			return false, err
		}
	}
	// Chown before chmod: chown clears the setgid bit.
	err = unix.Fchown(fd, int(own.UID), int(own.GID))
	if err == nil {
		err = unix.Fchmod(fd, own.Mode)
	}
	unix.Close(fd)
	if err != nil {
		discard()
		return false, fmt.Errorf("set owner %d:%d mode %#o: %w", own.UID, own.GID, own.Mode, err)
	}
	if err := renameRetry(parent, name, parent, leaf); err != nil {
		discard()
		if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY) {
			return false, nil
		}
		return false, permanent(fmt.Errorf("move new directory into place: %w", err))
	}
	if err := s.writeMeta(root, dir, meta); err != nil {
		return true, err
	}
	klog.FromContext(ctx).V(4).Info("Created volume directory", "share", s.root, "dir", strings.Join(dir, "/"),
		"uid", own.UID, "gid", own.GID, "mode", fmt.Sprintf("%#o", own.Mode), "filled", fill != nil || mk != nil, "layout", meta.Layout)
	return true, nil
}

// SetMeta replaces carve's record of a directory (on re-attach to a new PV).
func (s *Share) SetMeta(dir []string, meta Meta) error {
	if err := checkDir(dir); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	root, err := s.openRoot(true)
	if err != nil {
		return err
	}
	defer unix.Close(root)
	return s.writeMeta(root, dir, meta)
}

// Archive moves the directory to .carve-archive/<dir>-<timestamp>, never
// replacing an older archive, and returns the new path relative to the root.
// A last segment too long for the suffix is cut and given a digest; an
// ArchiveRecord beside the entry (<entry>.json) names the volume's path and
// its record. A missing directory is not an error (returns "").
func (s *Share) Archive(ctx context.Context, dir []string, now time.Time) (string, error) {
	if err := checkDir(dir); err != nil {
		return "", err
	}
	stamp := now.UTC().Format("20060102T150405Z")
	return s.moveAway(ctx, dir, archiveDir, dir[:len(dir)-1], fitName(dir[len(dir)-1], "-"+stamp), now)
}

// Trash moves the directory to .carve-trash, where Purge removes it. The move is
// quick and atomic, so a crash between the two leaves nothing half deleted
// at the volume's path. A missing directory is not an error. The entry's
// name starts with the volume's path (cut with a digest when long); the move
// is logged with the whole path.
func (s *Share) Trash(ctx context.Context, dir []string) (string, error) {
	if err := checkDir(dir); err != nil {
		return "", err
	}
	now := time.Now()
	name := fitName(strings.Join(dir, "_"), "-"+now.UTC().Format("20060102T150405Z")+"-"+randomSuffix())
	return s.moveAway(ctx, dir, trashDir, nil, name, time.Time{})
}

// moveAway moves dir to into/sub.../name (name-2, name-3... if taken). With a
// non-zero archived time it writes an ArchiveRecord beside the entry.
func (s *Share) moveAway(ctx context.Context, dir []string, into string, sub []string, name string, archived time.Time) (string, error) {
	if err := checkDir(dir); err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	root, err := s.openRoot(true)
	if err != nil {
		return "", err
	}
	defer unix.Close(root)

	parent, err := resolve(root, dir[:len(dir)-1])
	if errors.Is(err, ErrNotFound) {
		return "", s.removeMeta(root, dir)
	}
	if err != nil {
		return "", err
	}
	defer unix.Close(parent)
	leaf := dir[len(dir)-1]
	fd, err := openDirAt(parent, leaf)
	if errors.Is(err, ErrNotFound) {
		return "", s.removeMeta(root, dir)
	}
	if err != nil {
		return "", fmt.Errorf("%s: %w", strings.Join(dir, "/"), err)
	}
	unix.Close(fd)

	var record *Meta
	if !archived.IsZero() {
		// Read before the move: the record goes with the directory.
		if record, err = s.readMeta(root, dir); err != nil {
			klog.FromContext(ctx).Error(err, "Archiving a volume whose record cannot be read", "share", s.root, "dir", strings.Join(dir, "/"))
			record = nil
		}
	}
	dest, err := mkdirAll(root, append([]string{into}, sub...), stateMode)
	if err != nil {
		return "", permanent(err)
	}
	defer unix.Close(dest)
	target := name
	for i := 2; ; i++ {
		err = renameRetry(parent, leaf, dest, target)
		if !errors.Is(err, unix.EEXIST) && !errors.Is(err, unix.ENOTEMPTY) {
			break
		}
		// name fits nameBudget, so the counter never makes it too long.
		target = fmt.Sprintf("%s-%d", name, i)
	}
	if err != nil {
		return "", permanent(fmt.Errorf("move %s to %s: %w", strings.Join(dir, "/"), into, err))
	}
	moved := strings.Join(append(append([]string{into}, sub...), target), "/")
	klog.FromContext(ctx).V(2).Info("Moved volume directory", "share", s.root, "dir", strings.Join(dir, "/"), "to", moved)
	if !archived.IsZero() {
		rec := ArchiveRecord{Dir: strings.Join(dir, "/"), Entry: moved, Archived: archived.UTC(), Record: record}
		if err := writeArchiveRecord(dest, target, rec); err != nil {
			// The data is archived; only the note beside it is missing.
			klog.FromContext(ctx).Error(err, "Archived volume without its record", "share", s.root, "dir", rec.Dir, "to", moved)
		}
	}
	if err := s.removeMeta(root, dir); err != nil {
		return moved, err
	}
	removeEmptyParents(root, dir)
	return moved, nil
}

// Purge removes everything in .carve-trash and stale leftovers of creations:
// directories that a crash left half made (named by markers in .carve-tmp)
// and, from older versions, directories in .carve-tmp itself. It can take
// long on big volumes; it does not hold the tree lock.
func (s *Share) Purge(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	root, err := s.openRoot(true)
	if err != nil {
		return err
	}
	defer unix.Close(root)
	var errs []error
	for _, d := range []string{trashDir, tmpDir} {
		fd, err := resolve(root, []string{d})
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		names, err := readDirNames(fd)
		if err != nil {
			unix.Close(fd)
			errs = append(errs, err)
			continue
		}
		for _, n := range names {
			if ctx.Err() != nil {
				unix.Close(fd)
				return ctx.Err()
			}
			if d == tmpDir {
				if !s.staleTmp(fd, n) {
					continue
				}
				if c, ok := readMarker(fd, n); ok {
					if err := s.finishMarker(ctx, root, fd, n, c); err != nil {
						errs = append(errs, fmt.Errorf("purge unfinished creation of %s: %w", c.Dir, err))
						continue
					}
					logger.V(2).Info("Removed an unfinished volume creation", "share", s.root, "dir", c.Dir, "tmp", c.Tmp)
					continue
				}
			}
			if err := s.removeAt(ctx, fd, []string{d}, n); err != nil {
				errs = append(errs, fmt.Errorf("purge %s/%s: %w", d, n, err))
				continue
			}
			logger.V(2).Info("Purged deleted volume", "share", s.root, "entry", d+"/"+n)
		}
		unix.Close(fd)
	}
	if err := s.purgeSnapshotTemps(ctx, root); err != nil {
		errs = append(errs, fmt.Errorf("purge unfinished snapshots: %w", err))
	}
	return errors.Join(errs...)
}

// staleTmp: a creation in progress is younger than a minute (it holds the
// tree lock for a few file operations).
func (s *Share) staleTmp(dirfd int, name string) bool {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return false
	}
	return time.Since(time.Unix(st.Mtim.Unix())) > time.Minute
}

// Usage reports the share filesystem's size and free space.
type Usage struct {
	TotalBytes, AvailableBytes, UsedBytes int64
	TotalInodes, FreeInodes, UsedInodes   int64
}

// Statfs reports the usage of the filesystem holding dir (nil: the root).
func (s *Share) Statfs(dir []string) (Usage, error) {
	root, err := s.openRoot(false)
	if err != nil {
		return Usage{}, err
	}
	defer unix.Close(root)
	fd := root
	if len(dir) > 0 {
		if fd, err = resolve(root, dir); err != nil {
			return Usage{}, err
		}
		defer unix.Close(fd)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return Usage{}, fmt.Errorf("statfs: %w", err)
	}
	bs := int64(st.Bsize)
	return Usage{
		TotalBytes:     int64(st.Blocks) * bs,
		AvailableBytes: int64(st.Bavail) * bs,
		UsedBytes:      int64(st.Blocks-st.Bfree) * bs,
		TotalInodes:    int64(st.Files),
		FreeInodes:     int64(st.Ffree),
		UsedInodes:     int64(st.Files - st.Ffree),
	}, nil
}

// OpenDir opens a volume directory without following any symlink, for callers
// that must act on exactly that directory: a node bind-mounts it through
// /proc/<pid>/fd/<n>, so a symlink swapped in after the lookup cannot redirect
// the mount. The caller closes the file.
func (s *Share) OpenDir(dir []string) (*os.File, error) {
	root, fd, err := s.open(dir)
	if err != nil {
		return nil, err
	}
	unix.Close(root)
	return os.NewFile(uintptr(fd), s.Path(dir)), nil
}

// Path returns the local path of a volume directory for a bind mount. Callers
// that mount it must still refuse symlinks (mount-utils does not follow the
// last component only); use Lookup first.
func (s *Share) Path(dir []string) string {
	return s.root + "/" + strings.Join(dir, "/")
}

func checkDir(dir []string) error {
	if len(dir) == 0 {
		return fmt.Errorf("%w: empty directory path", ErrUnsafe)
	}
	for _, seg := range dir {
		if err := params.CheckSegment(seg); err != nil {
			return fmt.Errorf("%w: %v", ErrUnsafe, err)
		}
	}
	return nil
}

// meta records live in .carve-meta under a hash of the path, so any path fits
// in one file name.
func metaName(dir []string) string {
	sum := sha256.Sum256([]byte(strings.Join(dir, "/")))
	return hex.EncodeToString(sum[:16]) + ".json"
}

func (s *Share) readMeta(root int, dir []string) (*Meta, error) {
	md, err := openAreaAt(root, metaDir)
	if err != nil || md < 0 {
		return nil, err
	}
	defer unix.Close(md)
	m, err := readMetaFile(md, metaName(dir))
	if m != nil && m.Dir == "" {
		m.Dir = strings.Join(dir, "/")
	}
	return m, err
}

// readMetaFile reads one record; a missing file is (nil, nil).
func readMetaFile(md int, name string) (*Meta, error) {
	fd, err := unix.Openat(md, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read volume record: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	var m Meta
	if err := json.NewDecoder(io.LimitReader(f, 64<<10)).Decode(&m); err != nil {
		return nil, fmt.Errorf("decode volume record %s: %w", name, err)
	}
	return &m, nil
}

func (s *Share) writeMeta(root int, dir []string, m Meta) error {
	md, err := mkdirAll(root, []string{metaDir}, stateMode)
	if err != nil {
		return err
	}
	defer unix.Close(md)
	m.Dir = strings.Join(dir, "/")
	data, _ := json.Marshal(m)
	tmp := metaName(dir) + "." + randomSuffix()
	fd, err := unix.Openat(md, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("write volume record: %w", err)
	}
	f := os.NewFile(uintptr(fd), tmp)
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat(md, tmp, md, metaName(dir))
	}
	if err != nil {
		_ = unix.Unlinkat(md, tmp, 0)
		return fmt.Errorf("write volume record: %w", err)
	}
	return nil
}

// Records returns every volume record on the share (records without a Dir,
// from before it was recorded, are returned with Dir empty). Unreadable or
// half-written records are skipped: a record is written to a temporary name
// and renamed, so only foreign files can be undecodable.
func (s *Share) Records(ctx context.Context) ([]Meta, error) {
	md, err := s.openArea(metaDir)
	if err != nil || md < 0 {
		return nil, err
	}
	defer unix.Close(md)
	names, err := readDirNames(md)
	if err != nil {
		return nil, fmt.Errorf("list volume records: %w", err)
	}
	out := make([]Meta, 0, len(names))
	for _, n := range names {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !strings.HasSuffix(n, ".json") {
			continue
		}
		m, err := readMetaFile(md, n)
		if err != nil || m == nil {
			if err != nil {
				klog.FromContext(ctx).V(2).Info("Skipping unreadable volume record", "share", s.root, "record", n, "err", err)
			}
			continue
		}
		out = append(out, *m)
	}
	return out, nil
}

// openArea opens carve's directory name (.carve-meta, .carve-snapshots) at
// the verified root, for reading: -1 when it does not exist yet.
func (s *Share) openArea(name string) (int, error) {
	root, err := s.openRoot(false)
	if err != nil {
		return -1, err
	}
	defer unix.Close(root)
	return openAreaAt(root, name)
}

// openAreaAt opens carve's directory name under root: -1 when it does not
// exist yet.
func openAreaAt(root int, name string) (int, error) {
	fd, err := resolve(root, []string{name})
	if errors.Is(err, ErrNotFound) {
		return -1, nil
	}
	if err != nil {
		return -1, err
	}
	return fd, nil
}

func (s *Share) removeMeta(root int, dir []string) error {
	md, err := openAreaAt(root, metaDir)
	if err != nil || md < 0 {
		return err
	}
	defer unix.Close(md)
	if err := unix.Unlinkat(md, metaName(dir), 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove volume record: %w", err)
	}
	return nil
}

// removeEmptyParents removes the now-empty parents that a nested pattern
// created (ns/ in ns/claim), deepest first, and stops at the first one in use.
func removeEmptyParents(root int, dir []string) {
	for i := len(dir) - 1; i >= 1; i-- {
		parent, err := resolve(root, dir[:i-1])
		if err != nil {
			return
		}
		err = unix.Unlinkat(parent, dir[i-1], unix.AT_REMOVEDIR)
		unix.Close(parent)
		if err != nil {
			return
		}
	}
}

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
