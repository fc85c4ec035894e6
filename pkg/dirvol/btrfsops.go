package dirvol

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// btrfsOps are the btrfs calls of the btrfs layout on entries carve has
// resolved: fd is carve's descriptor of a directory, dir its path below the
// share root. localBtrfs issues the ioctls on fd (carve reaches the btrfs
// filesystem itself); remoteBtrfs asks the helper on the server (carve
// reaches the share over NFS), which resolves dir again there, beneath the
// export and without following symlinks (btrfsremote.go).
type btrfsOps interface {
	// check: the share is btrfs with quota enabled (else ErrLayout).
	check(ctx context.Context, root int) error
	createSubvolume(ctx context.Context, parent int, parentDir []string, name string) error
	snapshot(ctx context.Context, src int, srcDir []string, parent int, parentDir []string, name string, readonly bool) error
	// setLimit limits a subvolume; enforced is false for a plain directory.
	setLimit(ctx context.Context, fd int, dir []string, bytes int64) (enforced bool, err error)
	isSubvolume(ctx context.Context, fd int, dir []string) (bool, error)
	quota(ctx context.Context, fd int, dir []string) (*Quota, error)
	// remove deletes one of carve's own temporary or trashed entries,
	// subvolumes included (a read-only snapshot cannot be emptied file by
	// file, so over NFS only the server can remove it).
	remove(ctx context.Context, parent int, parentDir []string, name string) error
}

type localBtrfs struct{ s *Share }

func (l localBtrfs) check(_ context.Context, root int) error { return l.s.checkBtrfsLayout(root) }

func (localBtrfs) createSubvolume(_ context.Context, parent int, _ []string, name string) error {
	return createSubvolume(parent, name)
}

func (localBtrfs) snapshot(_ context.Context, src int, _ []string, parent int, _ []string, name string, readonly bool) error {
	return snapshotSubvolume(src, parent, name, readonly)
}

func (localBtrfs) setLimit(_ context.Context, fd int, _ []string, bytes int64) (bool, error) {
	if ok, err := isSubvolume(fd); err != nil || !ok {
		return false, err
	}
	return true, setQgroupLimit(fd, bytes)
}

func (localBtrfs) isSubvolume(_ context.Context, fd int, _ []string) (bool, error) {
	return isSubvolume(fd)
}

func (localBtrfs) quota(_ context.Context, fd int, _ []string) (*Quota, error) {
	return SubvolumeQuota(fd)
}

func (localBtrfs) remove(_ context.Context, parent int, _ []string, name string) error {
	return removeAllAt(parent, name)
}

// BtrfsRunner runs the btrfs helper (cmd/carve-btrfs) on the server of a
// share with the given arguments, adding the share's path on the server,
// and returns its stdout (a JSON answer, also when it exits non-zero).
// Failing to reach the server at all is an error without an answer.
type BtrfsRunner interface {
	RunBtrfs(ctx context.Context, args []string) ([]byte, error)
	String() string
}

type runnerBox struct{ r BtrfsRunner }

// UseBtrfsHelper makes the share's btrfs-layout calls go to the helper on
// its server through r (nil: ioctls on carve's own view of the share). The
// NFS backend sets it from the StorageClass (btrfsExecutor).
func (s *Share) UseBtrfsHelper(r BtrfsRunner) {
	if r == nil {
		s.helper.Store(nil)
		return
	}
	s.helper.Store(&runnerBox{r})
}

// btrfs returns the share's btrfs calls: the helper's when one is set.
func (s *Share) btrfs() btrfsOps {
	if b := s.helper.Load(); b != nil {
		return remoteBtrfs{s: s, r: b.r}
	}
	return localBtrfs{s}
}

// removeAt removes carve's entry name in parent (parentDir below the root):
// first through the btrfs helper when one is set (it drops subvolumes carve
// cannot remove over NFS), then whatever is left, locally.
func (s *Share) removeAt(ctx context.Context, parent int, parentDir []string, name string) error {
	if b := s.helper.Load(); b != nil {
		if err := (remoteBtrfs{s: s, r: b.r}).remove(ctx, parent, parentDir, name); err != nil {
			return err
		}
		// Gone on the server; carve's view may still list it for a moment
		// and then find it gone while emptying it.
		if err := removeAllAt(parent, name); err != nil && !errors.Is(err, unix.ENOENT) {
			return err
		}
		return nil
	}
	return removeAllAt(parent, name)
}

// helperSlot holds the share's btrfs helper; a field of Share.
type helperSlot = atomic.Pointer[runnerBox]

func joinDir(dir []string, name string) string {
	if name == "" {
		return strings.Join(dir, "/")
	}
	return strings.Join(append(append([]string(nil), dir...), name), "/")
}

// identityID is the share ID carve verified on the root (for the helper to
// check that the server's path is the same share).
func (s *Share) identityID() string {
	s.idMu.Lock()
	defer s.idMu.Unlock()
	return s.seen.id
}
