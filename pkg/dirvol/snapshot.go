package dirvol

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/carve-csi/carve/pkg/params"
)

// Snapshots are copies kept in carve's own area at the share's root, which
// no volume directory is inside and which is inside no volume directory:
//
//	.carve-snapshots/<entry>/snapshot.json   the record (SnapshotRecord)
//	.carve-snapshots/<entry>/data/           the copy of the volume
//	.carve-snapshots/.new-<random>/          a snapshot being taken
//
// A snapshot is taken under a temporary name and renamed to its entry once
// the copy and its record are complete, so an entry that exists is a whole
// snapshot (ready); Purge removes temporary ones a crash left behind.

// ErrSnapshotNotFound: no snapshot entry of that name on the share.
var ErrSnapshotNotFound = errors.New("snapshot not found")

const (
	snapDir       = ".carve-snapshots"
	snapNewPrefix = ".new-"
	snapRecord    = "snapshot.json"
	snapData      = "data"
	// snapStale: a snapshot being taken refreshes its temporary entry's
	// times every progressEvery; one older than this was left by a crash.
	snapStale = 3 * progressEvery
)

// SnapshotRecord is carve's record of a snapshot, written before the
// snapshot gets its entry name.
type SnapshotRecord struct {
	// Entry is the snapshot's name under .carve-snapshots.
	Entry string `json:"entry"`
	// ID is the snapshot ID carve handed out (pkg/volid), so a scan of the
	// share can list snapshots without any cluster state.
	ID string `json:"id"`
	// Name is the name the snapshot was requested with (CSI: idempotency).
	Name string `json:"name"`
	// SourceID is the ID of the volume it copies; SourceDir its directory.
	SourceID  string `json:"sourceID"`
	SourceDir string `json:"sourceDir"`
	// Namespace of the source volume's claim ("" when unknown).
	Namespace string `json:"namespace,omitempty"`
	// SizeBytes: the source volume's recorded size, the least a restore needs.
	SizeBytes int64     `json:"sizeBytes"`
	Created   time.Time `json:"created"`
	Stats     CopyStats `json:"stats"`
}

// SnapshotEntry is the entry name of a snapshot requested as name: the name
// itself when it is a plain short name, else a digest of it. The same name
// always gives the same entry, which makes a retry find its snapshot.
func SnapshotEntry(name string) string {
	if params.CheckSnapshotEntry(name) == nil {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return "h-" + hex.EncodeToString(sum[:16])
}

// CheckSnapshotEntry refuses names that SnapshotEntry never makes.
func CheckSnapshotEntry(entry string) error {
	if err := params.CheckSnapshotEntry(entry); err != nil {
		return fmt.Errorf("%w: %v", ErrUnsafe, err)
	}
	return nil
}

// CreateSnapshot copies the volume directory src into the snapshot entry
// rec.Entry and records rec there. If the entry exists already its record
// is returned with created false and nothing is copied (the caller decides
// whether that is a retry). The copy does not hold the tree lock.
func (s *Share) CreateSnapshot(ctx context.Context, src []string, rec SnapshotRecord) (_ *SnapshotRecord, created bool, err error) {
	if err := checkDir(src); err != nil {
		return nil, false, err
	}
	if err := CheckSnapshotEntry(rec.Entry); err != nil {
		return nil, false, err
	}
	if got, err := s.Snapshot(rec.Entry); err == nil {
		return got, false, nil
	} else if !errors.Is(err, ErrSnapshotNotFound) {
		return nil, false, err
	}
	root, sfd, err := s.open(src)
	if err != nil {
		return nil, false, err
	}
	defer unix.Close(root)
	defer unix.Close(sfd)

	s.mu.Lock()
	area, err := mkdirAll(root, []string{snapDir}, stateMode)
	s.mu.Unlock()
	if err != nil {
		return nil, false, permanent(err)
	}
	defer unix.Close(area)
	tmp := snapNewPrefix + randomSuffix()
	if err := unix.Mkdirat(area, tmp, 0o700); err != nil {
		return nil, false, fmt.Errorf("make snapshot %s: %w", rec.Entry, err)
	}
	ok := false
	defer func() {
		if !ok {
			if err := s.removeAt(ctx, area, []string{snapDir}, tmp); err != nil {
				klog.FromContext(ctx).Error(err, "Removing an unfinished snapshot failed; Purge retries", "share", s.root, "tmp", tmp)
			}
		}
	}()
	tfd, err := openDirAt(area, tmp)
	if err != nil {
		return nil, false, err
	}
	defer unix.Close(tfd)
	rec.SourceDir = strings.Join(src, "/")
	ops := s.btrfs()
	subvol, err := ops.isSubvolume(ctx, sfd, src)
	if err != nil {
		return nil, false, err
	}
	if subvol {
		// The btrfs layout: a read-only snapshot of the volume's subvolume,
		// instant whatever its size, shares every extent with it.
		start := time.Now()
		if err := ops.snapshot(ctx, sfd, src, tfd, []string{snapDir, tmp}, snapData, true); err != nil {
			return nil, false, fmt.Errorf("snapshot %s as %s: %w", rec.SourceDir, rec.Entry, err)
		}
		rec.Stats = CopyStats{Subvolume: true, Elapsed: time.Since(start)}
	} else {
		if err := unix.Mkdirat(tfd, snapData, 0o700); err != nil {
			return nil, false, fmt.Errorf("make snapshot %s: %w", rec.Entry, err)
		}
		dfd, err := openDirAt(tfd, snapData)
		if err != nil {
			return nil, false, err
		}
		beat := func() {
			now := unix.NsecToTimeval(time.Now().UnixNano())
			_ = unix.Futimes(tfd, []unix.Timeval{now, now})
		}
		rec.Stats, err = copyTree(ctx, sfd, dfd, true, CopySnapshot, "snapshot "+rec.Entry, beat)
		unix.Close(dfd)
		if err != nil {
			return nil, false, fmt.Errorf("copy %s into snapshot %s: %w", rec.SourceDir, rec.Entry, err)
		}
	}
	if err := writeJSON(tfd, snapRecord, rec); err != nil {
		return nil, false, err
	}
	s.mu.Lock()
	err = renameNoReplace(area, tmp, area, rec.Entry)
	s.mu.Unlock()
	if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY) {
		// Taken meanwhile (by another process): that one stands.
		got, gerr := s.Snapshot(rec.Entry)
		return got, false, gerr
	}
	if err != nil {
		return nil, false, fmt.Errorf("move snapshot %s into place: %w", rec.Entry, err)
	}
	ok = true
	klog.FromContext(ctx).V(2).Info("Took snapshot", "share", s.root, "dir", rec.SourceDir, "entry", rec.Entry,
		"files", rec.Stats.Files, "bytes", rec.Stats.Bytes, "reflinked", rec.Stats.Reflinked, "holeBytes", rec.Stats.HoleBytes, "subvolume", rec.Stats.Subvolume,
		"elapsed", rec.Stats.Elapsed)
	return &rec, true, nil
}

// Snapshot reads the record of a snapshot entry, or ErrSnapshotNotFound.
func (s *Share) Snapshot(entry string) (*SnapshotRecord, error) {
	if err := CheckSnapshotEntry(entry); err != nil {
		return nil, err
	}
	root, err := s.openRoot(false)
	if err != nil {
		return nil, err
	}
	defer unix.Close(root)
	fd, err := resolve(root, []string{snapDir, entry})
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrSnapshotNotFound, entry)
	}
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var rec SnapshotRecord
	if err := readJSON(fd, snapRecord, &rec); err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", entry, err)
	}
	if rec.Entry != entry {
		return nil, fmt.Errorf("%w: snapshot %s records entry %q", ErrUnsafe, entry, rec.Entry)
	}
	return &rec, nil
}

// Snapshots returns the records of every whole snapshot on the share, by
// entry name. Unreadable records are skipped (logged).
func (s *Share) Snapshots(ctx context.Context) ([]SnapshotRecord, error) {
	area, err := s.openArea(snapDir)
	if err != nil || area < 0 {
		return nil, err
	}
	defer unix.Close(area)
	names, err := readDirNames(area)
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var out []SnapshotRecord
	for _, n := range names {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if CheckSnapshotEntry(n) != nil {
			continue // a snapshot being taken, or not carve's
		}
		rec, err := s.Snapshot(n)
		if err != nil {
			if !errors.Is(err, ErrSnapshotNotFound) {
				klog.FromContext(ctx).V(2).Info("Skipping unreadable snapshot", "share", s.root, "entry", n, "err", err)
			}
			continue
		}
		out = append(out, *rec)
	}
	return out, nil
}

// DeleteSnapshot moves a snapshot entry to the trash (Purge removes it). It
// touches nothing but .carve-snapshots/<entry>; a missing entry is not an
// error.
func (s *Share) DeleteSnapshot(ctx context.Context, entry string) error {
	if err := CheckSnapshotEntry(entry); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	root, err := s.openRoot(true)
	if err != nil {
		return err
	}
	defer unix.Close(root)
	area, err := openAreaAt(root, snapDir)
	if err != nil || area < 0 {
		return err
	}
	defer unix.Close(area)
	if fd, err := openDirAt(area, entry); errors.Is(err, ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	} else {
		unix.Close(fd)
	}
	trash, err := mkdirAll(root, []string{trashDir}, stateMode)
	if err != nil {
		return permanent(err)
	}
	defer unix.Close(trash)
	target := fitName("snapshot_"+entry, "-"+time.Now().UTC().Format("20060102T150405Z")+"-"+randomSuffix())
	if err := renameRetry(area, entry, trash, target); err != nil {
		return fmt.Errorf("move snapshot %s to the trash: %w", entry, err)
	}
	klog.FromContext(ctx).V(2).Info("Deleted snapshot", "share", s.root, "entry", entry, "trash", target)
	return nil
}

// CreateFromSnapshot creates the volume directory dir (as Create does)
// filled with a copy of snapshot entry's data; the directory gets its final
// name only once the copy is complete.
func (s *Share) CreateFromSnapshot(ctx context.Context, dir []string, own Owner, meta Meta, entry string) (bool, CopyStats, error) {
	if err := CheckSnapshotEntry(entry); err != nil {
		return false, CopyStats{}, err
	}
	return s.createCopy(ctx, dir, own, meta, []string{snapDir, entry, snapData}, CopyRestore, "restore of snapshot "+entry)
}

// CreateFromDir creates the volume directory dir (as Create does) filled
// with a copy of the volume directory src (a clone).
func (s *Share) CreateFromDir(ctx context.Context, dir []string, own Owner, meta Meta, src []string) (bool, CopyStats, error) {
	if err := checkDir(src); err != nil {
		return false, CopyStats{}, err
	}
	return s.createCopy(ctx, dir, own, meta, src, CopyClone, "clone of "+strings.Join(src, "/"))
}

func (s *Share) createCopy(ctx context.Context, dir []string, own Owner, meta Meta, src []string, kind CopyKind, what string) (bool, CopyStats, error) {
	var stats CopyStats
	fill := func(ctx context.Context, root, fd int, beat func()) error {
		sfd, err := resolve(root, src)
		if errors.Is(err, ErrNotFound) && src[0] == snapDir {
			return fmt.Errorf("%w: %s", ErrSnapshotNotFound, src[1])
		}
		if err != nil {
			return err
		}
		defer unix.Close(sfd)
		stats, err = copyTree(ctx, sfd, fd, false, kind, what, beat)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if src[0] == snapDir && stats.Vanished > 0 {
			// Nothing writes to a snapshot: entries missing mid-copy mean
			// it is being removed, and a partial restore is worse than none.
			return fmt.Errorf("%s: %d entries disappeared during the copy", what, stats.Vanished)
		}
		return nil
	}
	if meta.Layout == params.LayoutBtrfs && s.subvolume(ctx, src) {
		// A subvolume source becomes a writable snapshot: instant, sharing
		// every extent until either side writes. Any other source is
		// copied into a new subvolume (fill).
		start := time.Now()
		snap := func(root, parent int, name string) error {
			sfd, err := resolve(root, src)
			if errors.Is(err, ErrNotFound) && src[0] == snapDir {
				return fmt.Errorf("%w: %s", ErrSnapshotNotFound, src[1])
			}
			if err != nil {
				return err
			}
			defer unix.Close(sfd)
			if err := s.btrfs().snapshot(ctx, sfd, src, parent, dir[:len(dir)-1], name, false); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			stats = CopyStats{Subvolume: true, Elapsed: time.Since(start)}
			return nil
		}
		created, err := s.create(ctx, dir, own, meta, snap, nil)
		return created, stats, err
	}
	created, err := s.create(ctx, dir, own, meta, nil, fill)
	return created, stats, err
}

// purgeSnapshotTemps removes snapshots a crash left half taken.
func (s *Share) purgeSnapshotTemps(ctx context.Context, root int) error {
	area, err := openAreaAt(root, snapDir)
	if err != nil || area < 0 {
		return err
	}
	defer unix.Close(area)
	names, err := readDirNames(area)
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		if !strings.HasPrefix(n, snapNewPrefix) {
			continue
		}
		var st unix.Stat_t
		if unix.Fstatat(area, n, &st, unix.AT_SYMLINK_NOFOLLOW) != nil || time.Since(time.Unix(st.Mtim.Unix())) < snapStale {
			continue
		}
		if err := s.removeAt(ctx, area, []string{snapDir}, n); err != nil {
			errs = append(errs, err)
			continue
		}
		klog.FromContext(ctx).V(2).Info("Removed an unfinished snapshot", "entry", snapDir+"/"+n)
	}
	return errors.Join(errs...)
}

func writeJSON(dirfd int, name string, v any) error {
	data, _ := json.MarshalIndent(v, "", "  ")
	fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	_, err = f.Write(append(data, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

func readJSON(dirfd int, name string, v any) error {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	if err := json.NewDecoder(io.LimitReader(f, 64<<10)).Decode(v); err != nil {
		return fmt.Errorf("decode %s: %w", name, err)
	}
	return nil
}

// Opened returns the engine of every share this process has opened, sorted
// by root.
func Opened() []*Share {
	registry.Lock()
	defer registry.Unlock()
	out := make([]*Share, 0, len(registry.m))
	for _, s := range registry.m {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].root < out[j].root })
	return out
}

// subvolume reports whether dir (below the root; a volume or carve's
// snapshot data, already checked by the caller) is a btrfs subvolume; any
// failure to tell is "no" (the caller then copies, which checks again).
func (s *Share) subvolume(ctx context.Context, dir []string) bool {
	root, err := s.openRoot(false)
	if err != nil {
		return false
	}
	defer unix.Close(root)
	fd, err := resolve(root, dir)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	ok, _ := s.btrfs().isSubvolume(ctx, fd, dir)
	return ok
}
