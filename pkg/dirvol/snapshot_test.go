package dirvol

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// populate writes a tree that exercises what a copy must keep: owners,
// modes (setgid, read-only dirs), times, xattrs, hard links, symlinks
// (one pointing outside the share), a fifo and a socket.
func populate(t *testing.T, vol, outside string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Join(vol, "a", "b"), 0o755))
	must(t, os.WriteFile(filepath.Join(vol, "a", "b", "data"), bytes.Repeat([]byte("carve"), 10000), 0o640))
	must(t, os.Link(filepath.Join(vol, "a", "b", "data"), filepath.Join(vol, "hardlink")))
	must(t, os.WriteFile(filepath.Join(vol, "ro"), []byte("x"), 0o400))
	must(t, os.Symlink(outside, filepath.Join(vol, "escape")))
	must(t, os.Symlink("a/b/data", filepath.Join(vol, "rel")))
	must(t, unix.Mkfifo(filepath.Join(vol, "fifo"), 0o600))
	must(t, unix.Chmod(filepath.Join(vol, "fifo"), 0o620))
	if os.Getuid() == 0 {
		must(t, os.Lchown(filepath.Join(vol, "a", "b", "data"), 1234, 5678))
		must(t, os.Lchown(filepath.Join(vol, "escape"), 1234, 5678))
		must(t, os.Chown(filepath.Join(vol, "a"), 4321, 8765))
	}
	must(t, unix.Chmod(filepath.Join(vol, "a"), 0o2750)) // os.Chmod drops raw setgid bits
	must(t, unix.Setxattr(filepath.Join(vol, "a", "b", "data"), "user.carve", []byte("kept"), 0))
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	must(t, os.Chtimes(filepath.Join(vol, "ro"), old, old))
	must(t, os.Chtimes(filepath.Join(vol, "a", "b"), old, old))
	must(t, os.Chmod(filepath.Join(vol, "a", "b"), 0o555)) // read-only directory: filled before its mode is set
}

// checkCopy compares the copy with the tree populate made.
func checkCopy(t *testing.T, vol, cp, outside string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(cp, "a", "b", "data"))
	if err != nil || !bytes.Equal(data, bytes.Repeat([]byte("carve"), 10000)) {
		t.Errorf("data not copied: %v", err)
	}
	var a, b unix.Stat_t
	must(t, unix.Lstat(filepath.Join(cp, "a", "b", "data"), &a))
	must(t, unix.Lstat(filepath.Join(cp, "hardlink"), &b))
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hard link not kept: inodes %d/%d, %d links", a.Ino, b.Ino, a.Nlink)
	}
	if a.Mode&0o7777 != 0o640 {
		t.Errorf("file mode %#o, want 0640", a.Mode&0o7777)
	}
	if os.Getuid() == 0 && (a.Uid != 1234 || a.Gid != 5678) {
		t.Errorf("file owner %d:%d, want 1234:5678", a.Uid, a.Gid)
	}
	buf := make([]byte, 16)
	if n, err := unix.Getxattr(filepath.Join(cp, "a", "b", "data"), "user.carve", buf); err != nil || string(buf[:n]) != "kept" {
		t.Errorf("xattr not copied: %q, %v", buf[:n], err)
	}
	if l, err := os.Readlink(filepath.Join(cp, "escape")); err != nil || l != outside {
		t.Errorf("symlink escape = %q, %v; want a link to %s", l, err, outside)
	}
	if os.Getuid() == 0 {
		var ls unix.Stat_t
		must(t, unix.Lstat(filepath.Join(cp, "escape"), &ls))
		if ls.Uid != 1234 || ls.Gid != 5678 {
			t.Errorf("symlink owner %d:%d, want 1234:5678", ls.Uid, ls.Gid)
		}
	}
	if l, _ := os.Readlink(filepath.Join(cp, "rel")); l != "a/b/data" {
		t.Errorf("symlink rel = %q", l)
	}
	var d unix.Stat_t
	must(t, unix.Lstat(filepath.Join(cp, "a"), &d))
	if d.Mode&0o7777 != 0o2750 || (os.Getuid() == 0 && (d.Uid != 4321 || d.Gid != 8765)) {
		t.Errorf("dir a is %d:%d %#o, want 4321:8765 02750", d.Uid, d.Gid, d.Mode&0o7777)
	}
	must(t, unix.Lstat(filepath.Join(cp, "a", "b"), &d))
	if d.Mode&0o7777 != 0o555 || d.Mtim.Sec != time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC).Unix() {
		t.Errorf("dir a/b mode %#o mtime %d: mode or time not kept", d.Mode&0o7777, d.Mtim.Sec)
	}
	var f unix.Stat_t
	must(t, unix.Lstat(filepath.Join(cp, "fifo"), &f))
	if f.Mode&unix.S_IFMT != unix.S_IFIFO || f.Mode&0o7777 != 0o620 {
		t.Errorf("fifo is %#o", f.Mode)
	}
	must(t, unix.Lstat(filepath.Join(cp, "ro"), &f))
	if f.Mtim.Sec != time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC).Unix() {
		t.Errorf("file mtime not kept: %d", f.Mtim.Sec)
	}
}

func TestSnapshotCopyKeepsEverything(t *testing.T) {
	s, root, ctx := newShare(t)
	dir := []string{"ns", "vol"}
	if _, err := s.Create(ctx, dir, owner(), Meta{PV: "pvc-1", Namespace: "ns", CapacityBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(t.TempDir(), "secret")
	must(t, os.WriteFile(outside, []byte("not carve's"), 0o600))
	vol := filepath.Join(root, "ns", "vol")
	populate(t, vol, outside)

	rec, created, err := s.CreateSnapshot(ctx, dir, SnapshotRecord{Entry: "snap-1", ID: "id", Name: "snap-1", Namespace: "ns"})
	if err != nil || !created {
		t.Fatalf("CreateSnapshot = %v, %v", created, err)
	}
	if rec.Stats.Files < 3 || rec.Stats.HardLinks != 1 || rec.Stats.Symlinks != 2 {
		t.Errorf("stats %+v", rec.Stats)
	}
	checkCopy(t, vol, filepath.Join(root, snapDir, "snap-1", snapData), outside)
	if got, err := os.ReadFile(outside); err != nil || string(got) != "not carve's" {
		t.Errorf("the file outside the share changed: %q, %v", got, err)
	}

	// A retry finds the snapshot and copies nothing.
	again, created, err := s.CreateSnapshot(ctx, dir, SnapshotRecord{Entry: "snap-1", ID: "id", Name: "other"})
	if err != nil || created || again.Name != "snap-1" {
		t.Errorf("second CreateSnapshot = %+v, %v, %v", again, created, err)
	}
	list, err := s.Snapshots(ctx)
	if err != nil || len(list) != 1 || list[0].Entry != "snap-1" || list[0].SourceDir != "ns/vol" {
		t.Errorf("Snapshots = %+v, %v", list, err)
	}

	// Restore: a new volume directory, filled before it gets its name, root
	// owned as the class says.
	created, stats, err := s.CreateFromSnapshot(ctx, []string{"ns", "restored"}, owner(), Meta{PV: "pvc-2"}, "snap-1")
	if err != nil || !created || stats.Files == 0 {
		t.Fatalf("CreateFromSnapshot = %v, %+v, %v", created, stats, err)
	}
	checkCopy(t, vol, filepath.Join(root, "ns", "restored"), outside)
	if info, err := s.Lookup([]string{"ns", "restored"}); err != nil || info.Meta == nil || info.Meta.PV != "pvc-2" || info.Mode != 0o2770 {
		t.Errorf("restored volume: %+v, %v", info, err)
	}
	// Clone: from a live volume directory.
	if created, _, err := s.CreateFromDir(ctx, []string{"ns", "clone"}, owner(), Meta{PV: "pvc-3"}, dir); err != nil || !created {
		t.Fatalf("CreateFromDir = %v, %v", created, err)
	}
	checkCopy(t, vol, filepath.Join(root, "ns", "clone"), outside)
	if left := tmpLeftovers(t, filepath.Join(root, "ns")); len(left) > 0 {
		t.Errorf("temporary directories left: %v", left)
	}

	// Delete touches only the snapshot.
	must(t, os.Chmod(filepath.Join(vol, "a", "b"), 0o755))
	must(t, s.DeleteSnapshot(ctx, "snap-1"))
	must(t, s.Purge(ctx))
	if _, err := s.Snapshot("snap-1"); !errors.Is(err, ErrSnapshotNotFound) {
		t.Errorf("Snapshot after delete: %v", err)
	}
	if data, err := os.ReadFile(filepath.Join(vol, "a", "b", "data")); err != nil || len(data) != 50000 {
		t.Errorf("the source volume changed when its snapshot was deleted: %d bytes, %v", len(data), err)
	}
	for _, d := range []string{"restored", "clone"} {
		if _, err := os.Stat(filepath.Join(root, "ns", d, "a", "b", "data")); err != nil {
			t.Errorf("volume %s lost data when the snapshot was deleted: %v", d, err)
		}
	}
	if got, err := os.ReadFile(outside); err != nil || string(got) != "not carve's" {
		t.Errorf("the file outside the share changed: %q, %v", got, err)
	}
	must(t, s.DeleteSnapshot(ctx, "snap-1")) // idempotent
	if _, _, err := s.CreateFromSnapshot(ctx, []string{"ns", "late"}, owner(), Meta{}, "snap-1"); !errors.Is(err, ErrSnapshotNotFound) {
		t.Errorf("restore of a deleted snapshot: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "ns", "late")); !os.IsNotExist(err) {
		t.Errorf("a failed restore left its directory: %v", err)
	}
}

func tmpLeftovers(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	must(t, err)
	var out []string
	for _, d := range des {
		if len(d.Name()) > len(newPrefix) && d.Name()[:len(newPrefix)] == newPrefix {
			out = append(out, d.Name())
		}
	}
	return out
}

// TestSnapshotSymlinkedVolumeRefused: a volume path that is a symlink (a pod
// swapped its directory for one) is never followed into, so nothing outside
// is read.
func TestSnapshotSymlinkedVolumeRefused(t *testing.T) {
	s, root, ctx := newShare(t)
	outside := t.TempDir()
	must(t, os.WriteFile(filepath.Join(outside, "secret"), []byte("x"), 0o600))
	must(t, os.MkdirAll(filepath.Join(root, "ns"), 0o755))
	must(t, os.Symlink(outside, filepath.Join(root, "ns", "vol")))
	if _, _, err := s.CreateSnapshot(ctx, []string{"ns", "vol"}, SnapshotRecord{Entry: "s"}); !errors.Is(err, ErrUnsafe) {
		t.Errorf("snapshot of a symlinked volume: %v, want ErrUnsafe", err)
	}
	if _, _, err := s.CreateFromDir(ctx, []string{"ns", "c"}, owner(), Meta{}, []string{"ns", "vol"}); !errors.Is(err, ErrUnsafe) {
		t.Errorf("clone of a symlinked volume: %v, want ErrUnsafe", err)
	}
	for _, bad := range []string{"../x", ".new-1", "a/b", ""} {
		if _, _, err := s.CreateSnapshot(ctx, []string{"ns"}, SnapshotRecord{Entry: bad}); !errors.Is(err, ErrUnsafe) {
			t.Errorf("entry %q: %v, want ErrUnsafe", bad, err)
		}
		if err := s.DeleteSnapshot(ctx, bad); !errors.Is(err, ErrUnsafe) {
			t.Errorf("delete entry %q: %v, want ErrUnsafe", bad, err)
		}
	}
}

// TestSnapshotAreaSymlinkRefused: a .carve-snapshots that is a symlink
// (planted by someone with access to the share root) is not written through.
func TestSnapshotAreaSymlinkRefused(t *testing.T) {
	s, root, ctx := newShare(t)
	if _, err := s.Create(ctx, []string{"vol"}, owner(), Meta{PV: "p"}); err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	must(t, os.Symlink(outside, filepath.Join(root, snapDir)))
	if _, _, err := s.CreateSnapshot(ctx, []string{"vol"}, SnapshotRecord{Entry: "s"}); !errors.Is(err, ErrUnsafe) {
		t.Errorf("CreateSnapshot through a symlinked area: %v, want ErrUnsafe", err)
	}
	if des, _ := os.ReadDir(outside); len(des) > 0 {
		t.Errorf("carve wrote outside the share: %v", des)
	}
}

func TestSnapshotRefusesDevices(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("mknod of a device needs root")
	}
	s, root, ctx := newShare(t)
	if _, err := s.Create(ctx, []string{"vol"}, owner(), Meta{PV: "p"}); err != nil {
		t.Fatal(err)
	}
	must(t, unix.Mknod(filepath.Join(root, "vol", "null"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))))
	if _, _, err := s.CreateSnapshot(ctx, []string{"vol"}, SnapshotRecord{Entry: "s"}); !errors.Is(err, ErrUnsupportedFile) {
		t.Errorf("snapshot with a device node: %v, want ErrUnsupportedFile", err)
	}
	if des, _ := os.ReadDir(filepath.Join(root, snapDir)); len(des) > 0 {
		t.Errorf("a refused snapshot left %v", des)
	}
}

// TestSnapshotConcurrentWriter: a pod writing, deleting and swapping files
// for symlinks during the copy makes it leave entries out, never fail or
// follow a link.
func TestSnapshotConcurrentWriter(t *testing.T) {
	s, root, ctx := newShare(t)
	if _, err := s.Create(ctx, []string{"vol"}, owner(), Meta{PV: "p"}); err != nil {
		t.Fatal(err)
	}
	vol := filepath.Join(root, "vol")
	outside := t.TempDir()
	for i := range 300 {
		must(t, os.MkdirAll(filepath.Join(vol, fmt.Sprint(i%10)), 0o755))
		must(t, os.WriteFile(filepath.Join(vol, fmt.Sprint(i%10), fmt.Sprint(i)), []byte("data"), 0o644))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			p := filepath.Join(vol, fmt.Sprint(i%10), fmt.Sprint(i%300))
			_ = os.Remove(p)
			if i%2 == 0 {
				_ = os.Symlink(outside, p)
			} else {
				_ = os.WriteFile(p, []byte("new"), 0o644)
			}
			if i%50 == 0 {
				d := filepath.Join(vol, fmt.Sprint(i%10))
				_ = os.Rename(d, d+".x")
				_ = os.Symlink(outside, d)
				_ = os.Remove(d)
				_ = os.Rename(d+".x", d)
			}
		}
	}()
	for i := range 5 {
		if _, _, err := s.CreateSnapshot(ctx, []string{"vol"}, SnapshotRecord{Entry: fmt.Sprint("s", i)}); err != nil {
			t.Errorf("snapshot %d under a concurrent writer: %v", i, err)
		}
	}
	close(stop)
	wg.Wait()
	if des, _ := os.ReadDir(outside); len(des) > 0 {
		t.Errorf("carve wrote outside the share: %v", des)
	}
}

// TestPurgeUnfinishedSnapshot: a snapshot a crash left under its temporary
// name is removed once stale, and never listed.
func TestPurgeUnfinishedSnapshot(t *testing.T) {
	s, root, ctx := newShare(t)
	tmp := filepath.Join(root, snapDir, snapNewPrefix+"abc")
	must(t, os.MkdirAll(filepath.Join(tmp, snapData, "x"), 0o755))
	if list, err := s.Snapshots(ctx); err != nil || len(list) != 0 {
		t.Errorf("Snapshots = %v, %v; want none", list, err)
	}
	must(t, s.Purge(ctx))
	if _, err := os.Stat(tmp); err != nil {
		t.Errorf("a fresh temporary snapshot was purged: %v", err)
	}
	old := time.Now().Add(-time.Hour)
	must(t, os.Chtimes(tmp, old, old))
	must(t, s.Purge(ctx))
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Errorf("a stale temporary snapshot was kept: %v", err)
	}
}

// TestSnapshotReflinkXFS measures a snapshot on a loop-mounted XFS with
// reflink, where data is shared, not copied.
func TestSnapshotReflinkXFS(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("loop mounts need root")
	}
	if _, err := exec.LookPath("mkfs.xfs"); err != nil {
		t.Skip("mkfs.xfs not installed")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "xfs.img")
	mnt := filepath.Join(dir, "mnt")
	must(t, os.Mkdir(mnt, 0o755))
	if out, err := exec.Command("truncate", "-s", "512M", img).CombinedOutput(); err != nil {
		t.Fatalf("truncate: %v: %s", err, out)
	}
	if out, err := exec.Command("mkfs.xfs", "-q", "-f", "-m", "reflink=1", img).CombinedOutput(); err != nil {
		t.Skipf("mkfs.xfs: %v: %s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("loop mount: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount: %v: %s", err, out)
		}
	})
	root := filepath.Join(mnt, "share")
	must(t, os.Mkdir(root, 0o755))
	must(t, Declare(root))
	s, err := Open(root)
	must(t, err)
	ctx := context.Background()
	if _, err := s.Create(ctx, []string{"vol"}, owner(), Meta{PV: "p"}); err != nil {
		t.Fatal(err)
	}
	const files, size = 200, 1 << 20
	block := bytes.Repeat([]byte{7}, size)
	for i := range files {
		must(t, os.WriteFile(filepath.Join(root, "vol", fmt.Sprint(i)), block, 0o644))
	}
	var before unix.Statfs_t
	must(t, unix.Statfs(mnt, &before))
	rec, _, err := s.CreateSnapshot(ctx, []string{"vol"}, SnapshotRecord{Entry: "s"})
	if err != nil {
		t.Fatal(err)
	}
	var after unix.Statfs_t
	must(t, unix.Statfs(mnt, &after))
	used := int64(before.Bfree-after.Bfree) * int64(after.Bsize)
	t.Logf("XFS reflink snapshot of %d files (%d MiB): %v, %d reflinked, %d KiB more used",
		files, files*size>>20, rec.Stats.Elapsed, rec.Stats.Reflinked, used>>10)
	if rec.Stats.Reflinked != files {
		t.Errorf("%d of %d files reflinked", rec.Stats.Reflinked, files)
	}
	if used > files*size/4 {
		t.Errorf("the snapshot used %d bytes: data was copied, not shared", used)
	}
}

// BenchmarkSnapshotCopy: a plain copy (ext4 under t.TempDir: no reflink).
func BenchmarkSnapshotCopy(b *testing.B) {
	root := filepath.Join(b.TempDir(), "share")
	if err := os.Mkdir(root, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := Declare(root); err != nil {
		b.Fatal(err)
	}
	s, _ := Open(root)
	ctx := context.Background()
	if _, err := s.Create(ctx, []string{"vol"}, owner(), Meta{PV: "p"}); err != nil {
		b.Fatal(err)
	}
	for i := range 1000 {
		d := filepath.Join(root, "vol", fmt.Sprint(i%20))
		_ = os.MkdirAll(d, 0o755)
		if err := os.WriteFile(filepath.Join(d, fmt.Sprint(i)), bytes.Repeat([]byte{1}, 16<<10), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rec, _, err := s.CreateSnapshot(ctx, []string{"vol"}, SnapshotRecord{Entry: fmt.Sprint("s", i)})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(rec.Stats.Files), "files/op")
	}
}
