package dirvol

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// ErrUnsupportedFile: the tree holds a file carve will not copy (a device
// node). Refused rather than skipped, so a copy is never silently partial.
var ErrUnsupportedFile = errors.New("unsupported file type")

// CopyStats says what a copy did; Reflinked counts files cloned with FICLONE
// (no data copied, ReflinkedBytes of Bytes), the rest of Bytes went through
// copy_file_range or a plain read/write. Holes in files that were copied,
// not cloned, are left holes: HoleBytes of them, not in Bytes.
type CopyStats struct {
	Dirs, Files, Symlinks, HardLinks int64
	Reflinked                        int64
	Bytes                            int64
	ReflinkedBytes                   int64 `json:",omitempty"`
	HoleBytes                        int64 `json:",omitempty"`
	// Vanished counts entries removed or replaced while the copy ran (a
	// live source): they are left out, not an error.
	Vanished int64
	Elapsed  time.Duration
	// Subvolume: nothing was copied, the data is a btrfs subvolume
	// snapshot (the btrfs layout).
	Subvolume bool `json:",omitempty"`
}

// progressEvery is how often a long copy logs its progress (and refreshes
// its heartbeat, so Purge does not take it for a crash leftover).
const progressEvery = 10 * time.Second

type devIno struct{ dev, ino uint64 }

// copier copies one tree. Source paths are never resolved: every entry is
// reached from its parent's descriptor with O_NOFOLLOW, and symlinks are
// copied as symlinks (readlinkat/symlinkat), so a link a pod planted cannot
// make carve read or write anything outside the source and destination.
type copier struct {
	ctx     context.Context
	dstRoot int               // the destination's top directory
	links   map[devIno]string // hard-linked source inodes → their first copy, relative to dstRoot
	stats   CopyStats
	last    time.Time
	what    string // for progress logs
	beat    func() // called every progressEvery (heartbeat); may be nil
	obs     CopyProgress
	noClone bool // FICLONE failed once with "not supported": stop trying
	noSeek  bool // SEEK_DATA failed once with "not supported": copy files whole
}

// copyTree copies the contents of directory src into the empty directory
// dst. With withRoot, dst also takes src's owner, mode, xattrs and times.
// The context's CopyObserver, if any, follows it as a copy of kind.
func copyTree(ctx context.Context, src, dst int, withRoot bool, kind CopyKind, what string, beat func()) (stats CopyStats, err error) {
	c := &copier{ctx: ctx, dstRoot: dst, links: map[devIno]string{}, last: time.Now(), what: what, beat: beat, obs: noProgress{}}
	if o := copyObserver(ctx); o != nil {
		c.obs = o.CopyStarted(kind)
	}
	start := time.Now()
	defer func() {
		c.stats.Elapsed = time.Since(start)
		stats = c.stats
		c.obs.Finished(stats, err)
	}()
	err = c.dir(src, dst, "")
	if err == nil && withRoot {
		var st unix.Stat_t
		if err = unix.Fstat(src, &st); err == nil {
			err = c.meta(src, dst, &st, "")
		}
	}
	return c.stats, err
}

func join(rel, name string) string {
	if rel == "" {
		return name
	}
	return rel + "/" + name
}

func (c *copier) tick() {
	if time.Since(c.last) < progressEvery {
		return
	}
	c.last = time.Now()
	if c.beat != nil {
		c.beat()
	}
	klog.FromContext(c.ctx).Info("Copy in progress", "what", c.what, "files", c.stats.Files, "dirs", c.stats.Dirs,
		"bytes", c.stats.Bytes, "reflinked", c.stats.Reflinked, "holeBytes", c.stats.HoleBytes)
}

// destError marks a failure on the destination side, which is carve's own
// tree: never taken for a source entry that vanished.
type destError struct{ err error }

func (e *destError) Error() string { return e.err.Error() }
func (e *destError) Unwrap() error { return e.err }

func dest(err error) error { return &destError{err} }

// vanished: a source entry went away or changed type under a live writer.
func vanished(err error) bool {
	var d *destError
	if errors.As(err, &d) {
		return false
	}
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) ||
		errors.Is(err, unix.ENXIO)
}

func (c *copier) dir(src, dst int, rel string) error {
	names, err := readDirNames(src)
	if err != nil {
		return fmt.Errorf("list %s: %w", orDot(rel), err)
	}
	for _, name := range names {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		c.tick()
		if err := c.entry(src, dst, rel, name); err != nil {
			if vanished(err) {
				c.stats.Vanished++
				continue
			}
			return err
		}
	}
	return nil
}

func orDot(rel string) string {
	if rel == "" {
		return "."
	}
	return rel
}

func (c *copier) entry(src, dst int, rel, name string) error {
	p := join(rel, name)
	var st unix.Stat_t
	if err := unix.Fstatat(src, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("stat %s: %w", p, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return c.subdir(src, dst, rel, name)
	case unix.S_IFREG:
		return c.file(src, dst, rel, name, &st)
	case unix.S_IFLNK:
		return c.symlink(src, dst, p, name, &st)
	case unix.S_IFIFO:
		if err := unix.Mknodat(dst, name, unix.S_IFIFO|0o600, 0); err != nil {
			return dest(fmt.Errorf("mkfifo %s: %w", p, err))
		}
		c.stats.Files++
		c.obs.Copied(1, 0, 0)
		return c.metaAt(dst, name, &st, p)
	case unix.S_IFSOCK:
		// A socket is a rendezvous point of a running process, not data.
		klog.FromContext(c.ctx).V(2).Info("Not copying a socket", "what", c.what, "path", p)
		return nil
	}
	return fmt.Errorf("%w: %s is a device node (mode %#o); carve copies files, directories, symlinks and fifos only",
		ErrUnsupportedFile, p, st.Mode)
}

func (c *copier) subdir(src, dst int, rel, name string) error {
	p := join(rel, name)
	sfd, err := unix.Openat(src, name, dirFlags, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", p, err)
	}
	defer unix.Close(sfd)
	var st unix.Stat_t
	if err := unix.Fstat(sfd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", p, err)
	}
	if err := unix.Mkdirat(dst, name, 0o700); err != nil {
		return dest(fmt.Errorf("mkdir %s: %w", p, err))
	}
	dfd, err := unix.Openat(dst, name, dirFlags, 0)
	if err != nil {
		return dest(fmt.Errorf("open copy of %s: %w", p, err))
	}
	defer unix.Close(dfd)
	c.stats.Dirs++
	if err := c.dir(sfd, dfd, p); err != nil {
		return err
	}
	// After the contents: writing them changed the times, and a read-only
	// mode would have stopped them.
	return c.meta(sfd, dfd, &st, p)
}

func (c *copier) file(src, dst int, rel, name string, lst *unix.Stat_t) error {
	p := join(rel, name)
	key := devIno{uint64(lst.Dev), lst.Ino}
	if lst.Nlink > 1 {
		if first, ok := c.links[key]; ok {
			// The destination is carve's own tree (no pod reaches it during
			// the copy), so its path holds no symlink.
			if err := unix.Linkat(c.dstRoot, first, dst, name, 0); err != nil {
				return dest(fmt.Errorf("link %s to %s: %w", p, first, err))
			}
			c.stats.HardLinks++
			return nil
		}
	}
	// O_NONBLOCK: a fifo swapped in after the stat must not block the open.
	sfd, err := unix.Openat(src, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", p, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(sfd, &st); err != nil {
		unix.Close(sfd)
		return fmt.Errorf("stat %s: %w", p, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Ino != lst.Ino {
		unix.Close(sfd)
		return fmt.Errorf("%s changed while copying: %w", p, unix.ENOENT)
	}
	if _, err := unix.FcntlInt(uintptr(sfd), unix.F_SETFL, unix.O_RDONLY); err != nil {
		unix.Close(sfd)
		return fmt.Errorf("fcntl %s: %w", p, err)
	}
	sf := os.NewFile(uintptr(sfd), p)
	defer sf.Close()
	dfd, err := unix.Openat(dst, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return dest(fmt.Errorf("create copy of %s: %w", p, err))
	}
	df := os.NewFile(uintptr(dfd), p)
	defer df.Close()
	if err := c.data(sf, df, st.Size, p); err != nil {
		return err
	}
	c.stats.Files++
	c.obs.Copied(1, 0, 0)
	if err := c.meta(sfd, dfd, &st, p); err != nil {
		return err
	}
	if st.Nlink > 1 {
		c.links[key] = p
	}
	return nil
}

// data shares the source's extents where the filesystem can (FICLONE on
// XFS, btrfs: nearly free), else copies the data of the file's first size
// bytes (its size when opened) and leaves its holes holes.
func (c *copier) data(sf, df *os.File, size int64, p string) error {
	if !c.noClone {
		err := unix.IoctlFileClone(int(df.Fd()), int(sf.Fd()))
		if err == nil {
			var n int64
			if fi, err := df.Stat(); err == nil {
				n = fi.Size()
			}
			c.stats.Reflinked++
			c.stats.Bytes += n
			c.stats.ReflinkedBytes += n
			c.obs.Copied(0, n, n)
			return nil
		}
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.ENOSYS) {
			c.noClone = true
		}
		// EXDEV, EINVAL (e.g. inline data): copy this one.
	}
	var copied int64
	for off := int64(0); off < size; {
		start, end, err := c.extent(sf, off, size)
		if err != nil {
			return fmt.Errorf("copy %s: %w", p, err)
		}
		if start >= size {
			break // only a hole is left
		}
		n, err := c.copyRange(sf, df, start, end)
		copied += n
		if err != nil {
			return fmt.Errorf("copy %s: %w", p, err)
		}
		if start+n < end {
			break // the file shrank meanwhile: what was read is the copy
		}
		off = end
	}
	// The size, and with it the trailing hole, if any.
	if err := df.Truncate(size); err != nil {
		return dest(fmt.Errorf("truncate copy of %s: %w", p, err))
	}
	if copied < size {
		c.stats.HoleBytes += size - copied
	}
	return nil
}

// extent returns the next range of data at or after off, ending at size at
// most: [start, end). start is size when only a hole is left. Where
// SEEK_DATA is not supported the rest of the file is one range (copied
// dense, as before).
func (c *copier) extent(sf *os.File, off, size int64) (start, end int64, err error) {
	if c.noSeek {
		return off, size, nil
	}
	fd := int(sf.Fd())
	start, err = unix.Seek(fd, off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return size, size, nil // no data past off
	}
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		c.noSeek = true
		return off, size, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("seek data at %d: %w", off, err)
	}
	if start >= size {
		return size, size, nil
	}
	// Every file ends with a hole (its end), so SEEK_HOLE finds one.
	end, err = unix.Seek(fd, start, unix.SEEK_HOLE)
	if errors.Is(err, unix.ENXIO) {
		end = size // truncated meanwhile
	} else if err != nil {
		return 0, 0, fmt.Errorf("seek hole at %d: %w", start, err)
	}
	if end <= start {
		// A hole punched between the two seeks: copy the rest whole
		// rather than ask again forever.
		end = size
	}
	return start, min(end, size), nil
}

// copyRange copies [start, end) to the same offsets; io.Copy between two
// files uses copy_file_range, which servers that support it (NFS 4.2) do
// server-side. In chunks, so a huge file still beats the heartbeat (Purge
// would otherwise take the copy for a crash leftover).
func (c *copier) copyRange(sf, df *os.File, start, end int64) (int64, error) {
	if _, err := sf.Seek(start, io.SeekStart); err != nil {
		return 0, err
	}
	if _, err := df.Seek(start, io.SeekStart); err != nil {
		return 0, dest(err)
	}
	var done int64
	for done < end-start {
		n, err := io.CopyN(df, sf, min(copyChunk, end-start-done))
		done += n
		c.stats.Bytes += n
		c.obs.Copied(0, n, 0)
		c.tick()
		if errors.Is(err, io.EOF) {
			return done, nil
		}
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

const copyChunk = 64 << 20

func (c *copier) symlink(src, dst int, p, name string, st *unix.Stat_t) error {
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(src, name, buf)
	if err != nil {
		return fmt.Errorf("readlink %s: %w", p, err)
	}
	// The target is copied as text and never resolved.
	if err := unix.Symlinkat(string(buf[:n]), dst, name); err != nil {
		return dest(fmt.Errorf("symlink %s: %w", p, err))
	}
	c.stats.Symlinks++
	if err := unix.Fchownat(dst, name, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return dest(fmt.Errorf("chown symlink %s: %w", p, err))
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(dst, name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return dest(fmt.Errorf("set times of symlink %s: %w", p, err))
	}
	return nil
}

// metaAt applies st to an entry that cannot be opened for it (a fifo): by
// name, without following a symlink.
func (c *copier) metaAt(dst int, name string, st *unix.Stat_t, p string) error {
	if err := unix.Fchownat(dst, name, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return dest(fmt.Errorf("chown %s: %w", p, err))
	}
	if err := unix.Fchmodat(dst, name, st.Mode&0o7777, 0); err != nil {
		return dest(fmt.Errorf("chmod %s: %w", p, err))
	}
	if err := unix.UtimesNanoAt(dst, name, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return dest(fmt.Errorf("set times of %s: %w", p, err))
	}
	return nil
}

// meta copies owner, mode, xattrs and times from one open file to another.
func (c *copier) meta(src, dst int, st *unix.Stat_t, p string) error {
	if err := copyXattrs(src, dst); err != nil {
		return fmt.Errorf("xattrs of %s: %w", orDot(p), err)
	}
	// Chown before chmod: chown clears setuid/setgid.
	if err := unix.Fchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return dest(fmt.Errorf("chown %s: %w", orDot(p), err))
	}
	if err := unix.Fchmod(dst, st.Mode&0o7777); err != nil {
		return dest(fmt.Errorf("chmod %s: %w", orDot(p), err))
	}
	if err := unix.Futimes(dst, []unix.Timeval{unix.NsecToTimeval(st.Atim.Nano()), unix.NsecToTimeval(st.Mtim.Nano())}); err != nil {
		return dest(fmt.Errorf("set times of %s: %w", orDot(p), err))
	}
	return nil
}

// skipXattr: Gluster's own bookkeeping (gfid, quota limits and sizes) seen
// through a FUSE mount belongs to the original inode; copying it would give
// the copy another directory's quota or identity.
func skipXattr(name string) bool {
	return strings.HasPrefix(name, "trusted.glusterfs.") || strings.HasPrefix(name, "trusted.gfid") ||
		strings.HasPrefix(name, "glusterfs.") || strings.HasPrefix(name, "trusted.afr.")
}

func copyXattrs(src, dst int) error {
	names, err := listXattrs(src)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil
		}
		return err
	}
	for _, n := range names {
		if skipXattr(n) {
			continue
		}
		v, err := getXattr(src, n)
		if errors.Is(err, unix.ENODATA) {
			continue // removed meanwhile
		}
		if err != nil {
			return fmt.Errorf("get %s: %w", n, err)
		}
		if err := unix.Fsetxattr(dst, n, v, 0); err != nil {
			if errors.Is(err, unix.ENOTSUP) {
				continue // the namespace does not exist here (e.g. security.* on some filesystems)
			}
			return dest(fmt.Errorf("set %s: %w", n, err))
		}
	}
	return nil
}

func listXattrs(fd int) ([]string, error) {
	for size := 1024; ; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Flistxattr(fd, buf)
		if errors.Is(err, unix.ERANGE) && size < 1<<20 {
			continue
		}
		if err != nil {
			return nil, err
		}
		var out []string
		for _, s := range strings.Split(string(buf[:n]), "\x00") {
			if s != "" {
				out = append(out, s)
			}
		}
		return out, nil
	}
}

func getXattr(fd int, name string) ([]byte, error) {
	for size := 256; ; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Fgetxattr(fd, name, buf)
		if errors.Is(err, unix.ERANGE) && size < 1<<20 {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}
