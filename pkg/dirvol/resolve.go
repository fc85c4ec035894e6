package dirvol

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// noOpenat2 is set once the kernel (or a seccomp profile) refuses openat2;
// from then on the O_NOFOLLOW walk is used.
var noOpenat2 atomic.Bool

const dirFlags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC

// resolve opens root/dir... as a directory without following any symlink and
// without leaving root. An empty dir returns a duplicate of root.
func resolve(root int, dir []string) (int, error) {
	if len(dir) == 0 {
		fd, err := unix.Dup(root)
		if err != nil {
			return -1, fmt.Errorf("dup: %w", err)
		}
		unix.CloseOnExec(fd)
		return fd, nil
	}
	if !noOpenat2.Load() {
		fd, err := unix.Openat2(root, strings.Join(dir, "/"), &unix.OpenHow{
			Flags:   dirFlags,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		})
		switch {
		case err == nil:
			return fd, nil
		case errors.Is(err, unix.ENOSYS):
			noOpenat2.Store(true)
		default:
			return -1, classify(strings.Join(dir, "/"), err)
		}
	}
	fd, err := unix.Dup(root)
	if err != nil {
		return -1, fmt.Errorf("dup: %w", err)
	}
	for _, seg := range dir {
		next, err := openDirAt(fd, seg)
		unix.Close(fd)
		if err != nil {
			return -1, fmt.Errorf("%s: %w", strings.Join(dir, "/"), err)
		}
		fd = next
	}
	return fd, nil
}

// openDirAt opens one segment below dirfd as a directory, refusing symlinks.
func openDirAt(dirfd int, name string) (int, error) {
	fd, err := unix.Openat(dirfd, name, dirFlags, 0)
	if err != nil {
		return -1, classify(name, err)
	}
	return fd, nil
}

func classify(p string, err error) error {
	switch {
	case errors.Is(err, unix.ENOENT):
		return fmt.Errorf("%s: %w", p, ErrNotFound)
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.EXDEV):
		return fmt.Errorf("%w: %s crosses a symlink or a non-directory", ErrUnsafe, p)
	case errors.Is(err, unix.ENAMETOOLONG), errors.Is(err, unix.EILSEQ):
		return fmt.Errorf("%w: open %s: %w", ErrPermanent, p, err)
	}
	return fmt.Errorf("open %s: %w", p, err)
}

// mkdirAll creates missing directories below root with mode and returns the
// last one opened. Existing components are reused but never followed if they
// are symlinks.
func mkdirAll(root int, dir []string, mode uint32) (int, error) {
	fd, err := unix.Dup(root)
	if err != nil {
		return -1, fmt.Errorf("dup: %w", err)
	}
	for _, seg := range dir {
		created := false
		if err := unix.Mkdirat(fd, seg, 0o700); err == nil {
			created = true
		} else if !errors.Is(err, unix.EEXIST) {
			unix.Close(fd)
			return -1, permanent(fmt.Errorf("mkdir %s: %w", seg, err))
		}
		next, err := openDirAt(fd, seg)
		unix.Close(fd)
		if err != nil {
			return -1, err
		}
		if created {
			// mkdirat obeys the umask; set the exact mode on the new directory.
			if err := unix.Fchmod(next, mode); err != nil {
				unix.Close(next)
				return -1, fmt.Errorf("chmod %s: %w", seg, err)
			}
		}
		fd = next
	}
	return fd, nil
}

// renameNoReplace renames without ever replacing the target. Filesystems
// without RENAME_NOREPLACE (NFS) fall back to a check then rename; callers hold
// the share lock, so no other carve operation races in between.
func renameNoReplace(oldDir int, oldName string, newDir int, newName string) error {
	err := unix.Renameat2(oldDir, oldName, newDir, newName, unix.RENAME_NOREPLACE)
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(newDir, newName, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		return unix.EEXIST
	} else if !errors.Is(err, unix.ENOENT) {
		return err
	}
	return unix.Renameat(oldDir, oldName, newDir, newName)
}

// removeAllAt removes name below dirfd and everything in it, by file
// descriptor: a symlink is unlinked, never followed.
func removeAllAt(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
		return fmt.Errorf("unlink %s: %w", name, err)
	}
	if isSubvolumeAt(dirfd, name) {
		// A btrfs-layout volume or snapshot: one ioctl drops it whole (a
		// read-only snapshot cannot be emptied file by file). One holding
		// subvolumes of its own is walked below instead.
		if destroySubvolume(dirfd, name) == nil {
			return nil
		}
	}
	fd, err := unix.Openat(dirfd, name, dirFlags, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", name, err)
	}
	// Owner-only or read-only directories written by a pod must still go.
	_ = unix.Fchmod(fd, 0o700)
	names, err := readDirNames(fd)
	if err == nil {
		for _, n := range names {
			if err = removeAllAt(fd, n); err != nil {
				break
			}
		}
	}
	unix.Close(fd)
	if err != nil {
		return err
	}
	if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("rmdir %s: %w", name, err)
	}
	return nil
}

// readDirNames lists a directory given by fd without consuming that fd.
func readDirNames(fd int) ([]string, error) {
	dup, err := unix.Openat(fd, ".", dirFlags, 0)
	if err != nil {
		return nil, fmt.Errorf("reopen directory: %w", err)
	}
	f := os.NewFile(uintptr(dup), "dir")
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list directory: %w", err)
	}
	return names, nil
}
