package dirvol

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2/ktesting"

	"github.com/carve-csi/carve/internal/benchfig"
	"github.com/carve-csi/carve/internal/testenv/loopfs"
	"github.com/carve-csi/carve/pkg/params"
)

// The ioctl arguments must have the kernel's sizes (linux/btrfs.h), which
// the request numbers encode.
func TestBtrfsABISizes(t *testing.T) {
	for name, got := range map[string]uintptr{
		"btrfs_ioctl_vol_args_v2":       unsafe.Sizeof(btrfsVolArgsV2{}),
		"btrfs_ioctl_search_args":       unsafe.Sizeof(btrfsSearchArgs{}),
		"btrfs_ioctl_ino_lookup_args":   unsafe.Sizeof(btrfsInoLookupArgs{}),
		"btrfs_ioctl_qgroup_limit_args": unsafe.Sizeof(btrfsQgroupLimitArgs{}),
		"btrfs_ioctl_search_key":        unsafe.Sizeof(btrfsSearchKey{}),
	} {
		want := map[string]uintptr{"btrfs_ioctl_qgroup_limit_args": 48, "btrfs_ioctl_search_key": 104}[name]
		if want == 0 {
			want = 4096
		}
		if got != want {
			t.Errorf("%s: %d bytes, want %d", name, got, want)
		}
	}
	// _IOC(dir, 0x94, nr, size): the numbers above, recomputed.
	ioc := func(dir, nr, size uintptr) uintptr { return dir<<30 | size<<16 | 0x94<<8 | nr }
	for _, c := range []struct{ got, want uintptr }{
		{iocSnapCreateV2, ioc(1, 23, 4096)}, {iocSubvolCreateV2, ioc(1, 24, 4096)}, {iocSnapDestroyV2, ioc(1, 63, 4096)},
		{iocQgroupLimit, ioc(2, 43, 48)}, {iocTreeSearch, ioc(3, 17, 4096)}, {iocInoLookup, ioc(3, 18, 4096)},
	} {
		if c.got != c.want {
			t.Errorf("ioctl %#x, want %#x", c.got, c.want)
		}
	}
}

// btrfsShare is a declared share at the root of a fresh btrfs filesystem
// with quota enabled.
func btrfsShare(t *testing.T, size int64) (*Share, string, context.Context) {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	root := loopfs.Btrfs(t, size)
	if err := Declare(root); err != nil {
		t.Fatal(err)
	}
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	return s, root, ctx
}

// fill writes up to n bytes to path in 1 MiB writes and returns how many
// were written before the first error (with it).
func fill(path string, n int64) (int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	buf := bytes.Repeat([]byte{0x5a}, 1<<20)
	var done int64
	for done < n {
		w, err := f.Write(buf[:min(int64(len(buf)), n-done)])
		done += int64(w)
		if err != nil {
			f.Close()
			return done, err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return done, err
	}
	return done, f.Close()
}

func isSubvolumePath(t *testing.T, p string) bool {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ok, err := isSubvolume(fd)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func TestBtrfsLayoutLimitAndExpansion(t *testing.T) {
	s, root, ctx := btrfsShare(t, 512<<20)
	dir := []string{"ns", "claim"}
	const size = 10 << 20
	created, err := s.Create(ctx, dir, owner(), Meta{PV: "pv-1", Namespace: "ns", Claim: "claim", CapacityBytes: size, Layout: params.LayoutBtrfs})
	if err != nil || !created {
		t.Fatalf("Create: %v %v", created, err)
	}
	vol := filepath.Join(root, "ns", "claim")
	if !isSubvolumePath(t, vol) {
		t.Fatalf("%s is not a subvolume", vol)
	}
	info, err := s.Lookup(dir)
	if err != nil || info.Meta == nil || info.Meta.Layout != params.LayoutBtrfs {
		t.Fatalf("Lookup: %+v %v", info, err)
	}

	// A pod writing 20 MB into a 10 MiB claim is stopped at the limit.
	n, err := fill(filepath.Join(vol, "big"), 20<<20)
	if !errors.Is(err, unix.EDQUOT) {
		t.Fatalf("writing 20 MiB into a 10 MiB volume: wrote %d bytes, err %v; want EDQUOT", n, err)
	}
	if n > size {
		t.Fatalf("wrote %d bytes into a volume limited to %d", n, size)
	}
	t.Logf("a 20 MiB write into a 10 MiB volume stopped after %d bytes (%v)", n, err)
	q, err := s.Quota(dir)
	if err != nil || q == nil {
		t.Fatalf("Quota: %+v %v", q, err)
	}
	if q.LimitBytes != size || q.ReferencedBytes <= 0 || q.ReferencedBytes > size {
		t.Fatalf("Quota: %+v, want limit %d and usage up to it", q, size)
	}

	// Expansion raises the limit: 10 MiB more fit.
	if enforced, err := s.SetLimit(dir, 30<<20); err != nil || !enforced {
		t.Fatalf("SetLimit: %v %v", enforced, err)
	}
	if n, err := fill(filepath.Join(vol, "more"), 10<<20); err != nil {
		t.Fatalf("writing 10 MiB after expanding to 30 MiB: wrote %d: %v", n, err)
	}
	if q, err := s.Quota(dir); err != nil || q.LimitBytes != 30<<20 {
		t.Fatalf("Quota after expansion: %+v %v", q, err)
	}

	// A plain directory has no limit to set.
	if _, err := s.Create(ctx, []string{"plain"}, owner(), Meta{PV: "pv-2"}); err != nil {
		t.Fatal(err)
	}
	if enforced, err := s.SetLimit([]string{"plain"}, 1<<20); err != nil || enforced {
		t.Fatalf("SetLimit on a plain directory: %v %v", enforced, err)
	}
	if isSubvolumePath(t, filepath.Join(root, "plain")) {
		t.Fatal("the directory layout made a subvolume")
	}
}

func TestBtrfsLayoutSnapshotCloneDelete(t *testing.T) {
	s, root, ctx := btrfsShare(t, 2<<30)
	src := []string{"src"}
	if _, err := s.Create(ctx, src, owner(), Meta{PV: "pv-src", CapacityBytes: 1500 << 20, Layout: params.LayoutBtrfs}); err != nil {
		t.Fatal(err)
	}
	vol := filepath.Join(root, "src")
	start := time.Now()
	if n, err := fill(filepath.Join(vol, "data"), 1<<30); err != nil {
		t.Fatalf("write 1 GiB: %d: %v", n, err)
	}
	t.Logf("wrote 1 GiB into the source volume in %v", time.Since(start))
	if err := os.WriteFile(filepath.Join(vol, "small"), []byte("source"), 0o644); err != nil {
		t.Fatal(err)
	}

	start = time.Now()
	rec, created, err := s.CreateSnapshot(ctx, src, SnapshotRecord{Entry: "snap-1", ID: "id", Name: "snap-1"})
	took := time.Since(start)
	if err != nil || !created {
		t.Fatalf("CreateSnapshot: %v %v", created, err)
	}
	t.Logf("snapshot of a volume holding 1 GiB: %v (CreateSnapshot, record and rename included; ioctl %v; load %s)",
		took, rec.Stats.Elapsed, benchfig.Load())
	if !rec.Stats.Subvolume || rec.Stats.Files != 0 {
		t.Fatalf("snapshot stats %+v: want a subvolume snapshot, nothing copied", rec.Stats)
	}
	snapData := filepath.Join(root, snapDir, "snap-1", snapData)
	if !isSubvolumePath(t, snapData) {
		t.Fatal("snapshot data is not a subvolume")
	}
	if err := os.WriteFile(filepath.Join(snapData, "x"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Fatalf("writing into a snapshot: %v, want EROFS", err)
	}

	// A clone (a writable snapshot of the volume) and a restore (of the
	// snapshot): writable, with their own limit, and independent.
	start = time.Now()
	if created, stats, err := s.CreateFromDir(ctx, []string{"clone"}, owner(), Meta{PV: "pv-clone", CapacityBytes: 1500 << 20, Layout: params.LayoutBtrfs}, src); err != nil || !created || !stats.Subvolume {
		t.Fatalf("CreateFromDir: %v %+v %v", created, stats, err)
	}
	t.Logf("clone of a volume holding 1 GiB: %v", time.Since(start))
	if created, stats, err := s.CreateFromSnapshot(ctx, []string{"restored"}, owner(), Meta{PV: "pv-r", CapacityBytes: 1500 << 20, Layout: params.LayoutBtrfs}, "snap-1"); err != nil || !created || !stats.Subvolume {
		t.Fatalf("CreateFromSnapshot: %v %+v %v", created, stats, err)
	}
	for _, d := range []string{"clone", "restored"} {
		p := filepath.Join(root, d)
		if !isSubvolumePath(t, p) {
			t.Fatalf("%s is not a subvolume", d)
		}
		if err := os.WriteFile(filepath.Join(p, "small"), []byte("changed in "+d), 0o644); err != nil {
			t.Fatalf("write into %s: %v", d, err)
		}
		if err := os.Remove(filepath.Join(p, "data")); err != nil {
			t.Fatal(err)
		}
		if q, err := s.Quota([]string{d}); err != nil || q == nil || q.LimitBytes != 1500<<20 {
			t.Fatalf("%s quota: %+v %v", d, q, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(vol, "small")); err != nil || string(b) != "source" {
		t.Fatalf("source after writes to its clones: %q %v", b, err)
	}
	if st, err := os.Stat(filepath.Join(vol, "data")); err != nil || st.Size() != 1<<30 {
		t.Fatalf("source data after its clones deleted theirs: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(snapData, "small")); err != nil || string(b) != "source" {
		t.Fatalf("snapshot after writes: %q %v", b, err)
	}

	// archive keeps the subvolume, limit and data, under .carve-archive.
	where, err := s.Archive(ctx, []string{"restored"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !isSubvolumePath(t, filepath.Join(root, where)) {
		t.Fatalf("archived volume %s is not the subvolume", where)
	}
	// delete: trash, then Purge destroys the subvolume (and the snapshot's
	// read-only one) whole.
	if _, err := s.Trash(ctx, []string{"clone"}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSnapshot(ctx, "snap-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx); err != nil {
		t.Fatalf("Purge: %v", err)
	}
	for _, gone := range []string{"clone", trashDir + "/x", snapDir + "/snap-1"} {
		if _, err := os.Lstat(filepath.Join(root, gone)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after delete and purge: %v", gone, err)
		}
	}
	if left := entries(t, filepath.Join(root, trashDir)); len(left) > 0 {
		t.Errorf("trash after Purge: %v", left)
	}
	if _, err := os.Stat(filepath.Join(vol, "data")); err != nil {
		t.Fatalf("source after deleting its clone and snapshot: %v", err)
	}
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

// A pod owns its volume's inside and may plant symlinks; none is followed by
// the layout's snapshots, clones, limits or deletions.
func TestBtrfsLayoutSymlinks(t *testing.T) {
	s, root, ctx := btrfsShare(t, 512<<20)
	outside := t.TempDir() // not on the share
	if err := os.WriteFile(filepath.Join(outside, "precious"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, []string{"a"}, owner(), Meta{PV: "pv-a", CapacityBytes: 64 << 20, Layout: params.LayoutBtrfs}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, []string{"b"}, owner(), Meta{PV: "pv-b", CapacityBytes: 64 << 20, Layout: params.LayoutBtrfs}); err != nil {
		t.Fatal(err)
	}
	vol := filepath.Join(root, "a")
	// The "pod": links out of the share and to another claim's volume.
	for name, target := range map[string]string{"out": outside, "other": "../b", "abs": "/"} {
		if err := os.Symlink(target, filepath.Join(vol, name)); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.CreateSnapshot(ctx, []string{"a"}, SnapshotRecord{Entry: "s"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CreateFromDir(ctx, []string{"c"}, owner(), Meta{PV: "pv-c", CapacityBytes: 64 << 20, Layout: params.LayoutBtrfs}, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(root, snapDir, "s", snapData, "out"), filepath.Join(root, "c", "out")} {
		if l, err := os.Readlink(p); err != nil || l != outside {
			t.Fatalf("%s: %q %v, want the symlink kept as a symlink", p, l, err)
		}
	}
	// Paths through a symlink are refused, not followed: a link at a
	// volume's place (e.g. one a pod made in a parent it could reach).
	if err := os.Symlink("b", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetLimit([]string{"link"}, 1<<20); !errors.Is(err, ErrUnsafe) {
		t.Fatalf("SetLimit through a symlink: %v, want ErrUnsafe", err)
	}
	if _, _, err := s.CreateSnapshot(ctx, []string{"link"}, SnapshotRecord{Entry: "s2"}); !errors.Is(err, ErrUnsafe) {
		t.Fatalf("snapshot through a symlink: %v, want ErrUnsafe", err)
	}
	if _, _, err := s.CreateFromDir(ctx, []string{"d"}, owner(), Meta{PV: "pv-d", Layout: params.LayoutBtrfs}, []string{"link"}); !errors.Is(err, ErrUnsafe) {
		t.Fatalf("clone through a symlink: %v, want ErrUnsafe", err)
	}
	if q, err := s.Quota([]string{"b"}); err != nil || q.LimitBytes != 64<<20 {
		t.Fatalf("volume b behind the link changed: %+v %v", q, err)
	}
	// Deleting the volume, its clone and its snapshot removes the links,
	// never what they point at.
	for _, d := range []string{"a", "c"} {
		if _, err := s.Trash(ctx, []string{d}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteSnapshot(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(outside, "precious")); err != nil || string(b) != "keep" {
		t.Fatalf("file outside the share after deletions: %q %v", b, err)
	}
	if !isSubvolumePath(t, filepath.Join(root, "b")) {
		t.Fatal("volume b was touched")
	}
}

// The layout refuses shares it cannot serve, naming the share and the fix,
// and writes nothing.
func TestBtrfsLayoutRefusals(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	meta := Meta{PV: "pv", CapacityBytes: 1 << 20, Layout: params.LayoutBtrfs}

	plain, _, _ := newShare(t)
	_, err := plain.Create(ctx, []string{"v"}, owner(), meta)
	if !errors.Is(err, ErrLayout) || !strings.Contains(err.Error(), plain.Root()) || !strings.Contains(err.Error(), "not") {
		t.Fatalf("btrfs layout on a non-btrfs share: %v", err)
	}
	if err := plain.CheckLayout(params.LayoutBtrfs); !errors.Is(err, ErrLayout) {
		t.Fatalf("CheckLayout: %v", err)
	}
	if _, err := os.Lstat(plain.Path([]string{"v"})); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("refused volume exists: %v", err)
	}

	root := loopfs.BtrfsNoQuota(t, 256<<20)
	if err := Declare(root); err != nil {
		t.Fatal(err)
	}
	s, _ := Open(root)
	_, err = s.Create(ctx, []string{"v"}, owner(), meta)
	if !errors.Is(err, ErrLayout) || !strings.Contains(err.Error(), "btrfs quota enable") || !strings.Contains(err.Error(), root) {
		t.Fatalf("btrfs layout with quota off: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(root, "v")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("refused volume exists: %v", err)
	}
	// The directory layout still works there.
	if _, err := s.Create(ctx, []string{"v"}, owner(), Meta{PV: "pv"}); err != nil {
		t.Fatal(err)
	}
}

// A pod that reaches the filesystem directly can make a subvolume inside its
// volume (the ioctl needs no privilege); deleting the volume removes it too.
func TestBtrfsLayoutNestedSubvolumeDeleted(t *testing.T) {
	s, root, ctx := btrfsShare(t, 512<<20)
	if _, err := s.Create(ctx, []string{"v"}, owner(), Meta{PV: "pv", CapacityBytes: 64 << 20, Layout: params.LayoutBtrfs}); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(filepath.Join(root, "v"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = createSubvolume(fd, "nested")
	unix.Close(fd)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "v", "nested", "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Trash(ctx, []string{"v"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx); err != nil {
		t.Fatalf("Purge: %v", err)
	}
	if left := entries(t, filepath.Join(root, trashDir)); len(left) > 0 {
		t.Fatalf("trash after Purge: %v", left)
	}
}
