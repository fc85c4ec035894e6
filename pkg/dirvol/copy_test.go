package dirvol

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2/ktesting"

	"github.com/carve-csi/carve/internal/benchfig"
	"github.com/carve-csi/carve/internal/testenv/loopfs"
)

// recorder is a CopyObserver that keeps every report.
type recorder struct {
	mu     sync.Mutex
	copies []*recorded
}

type recorded struct {
	kind                    CopyKind
	files, bytes, reflinked int64
	calls                   int
	finished                int
	stats                   CopyStats
	err                     error
}

func (r *recorder) CopyStarted(kind CopyKind) CopyProgress {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := &recorded{kind: kind}
	r.copies = append(r.copies, c)
	return &recordedProgress{r: r, c: c}
}

type recordedProgress struct {
	r *recorder
	c *recorded
}

func (p *recordedProgress) Copied(files, bytes, reflinked int64) {
	p.r.mu.Lock()
	defer p.r.mu.Unlock()
	p.c.files += files
	p.c.bytes += bytes
	p.c.reflinked += reflinked
	p.c.calls++
}

func (p *recordedProgress) Finished(stats CopyStats, err error) {
	p.r.mu.Lock()
	defer p.r.mu.Unlock()
	p.c.finished++
	p.c.stats, p.c.err = stats, err
}

// TestCopyObserver: snapshot, restore and clone report their progress file
// by file and chunk by chunk, and their totals add up to the copy's stats.
func TestCopyObserver(t *testing.T) {
	s, root, ctx := newShare(t)
	rec := &recorder{}
	ctx = WithCopyObserver(ctx, rec)
	if _, err := s.Create(ctx, []string{"vol"}, owner(), Meta{PV: "p"}); err != nil {
		t.Fatal(err)
	}
	// 300 small files in 10 directories and one file of three chunks.
	for i := range 300 {
		d := filepath.Join(root, "vol", fmt.Sprint(i%10))
		must(t, os.MkdirAll(d, 0o755))
		must(t, os.WriteFile(filepath.Join(d, fmt.Sprint(i)), bytes.Repeat([]byte{byte(i)}, 4<<10+i), 0o644))
	}
	big := bytes.Repeat([]byte("carve copies "), (2*copyChunk+12345)/13)
	must(t, os.WriteFile(filepath.Join(root, "vol", "big"), big, 0o644))

	snap, _, err := s.CreateSnapshot(ctx, []string{"vol"}, SnapshotRecord{Entry: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CreateFromSnapshot(ctx, []string{"restored"}, owner(), Meta{PV: "r"}, "s"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CreateFromDir(ctx, []string{"clone"}, owner(), Meta{PV: "c"}, []string{"vol"}); err != nil {
		t.Fatal(err)
	}
	wantBytes := int64(len(big))
	for i := range 300 {
		wantBytes += int64(4<<10 + i)
	}
	if snap.Stats.Bytes != wantBytes || snap.Stats.Files != 301 {
		t.Errorf("snapshot stats = %+v, want %d files, %d bytes", snap.Stats, 301, wantBytes)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.copies) != 3 {
		t.Fatalf("%d copies reported, want 3", len(rec.copies))
	}
	for i, kind := range []CopyKind{CopySnapshot, CopyRestore, CopyClone} {
		c := rec.copies[i]
		if c.kind != kind || c.finished != 1 || c.err != nil || c.stats.Elapsed <= 0 {
			t.Errorf("copy %d: kind %s, finished %d times, err %v, elapsed %v; want %s, once, nil", i, c.kind, c.finished, c.err, c.stats.Elapsed, kind)
		}
		if c.files != 301 || c.bytes != wantBytes || c.files != c.stats.Files || c.bytes != c.stats.Bytes ||
			c.reflinked != c.stats.ReflinkedBytes {
			t.Errorf("%s: reported %d files, %d bytes (%d reflinked); stats %+v; want 301 files, %d bytes",
				kind, c.files, c.bytes, c.reflinked, c.stats, wantBytes)
		}
		// Each file and each chunk of the big one: it moves while it runs.
		if c.calls < 301+3 {
			t.Errorf("%s: %d progress reports, want one per file and chunk (%d)", kind, c.calls, 301+3)
		}
	}
}

// TestCopyObserverFailure: a copy that fails still finishes, with its error.
func TestCopyObserverFailure(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("mknod needs root")
	}
	s, root, ctx := newShare(t)
	rec := &recorder{}
	ctx = WithCopyObserver(ctx, rec)
	if _, err := s.Create(ctx, []string{"vol"}, owner(), Meta{PV: "p"}); err != nil {
		t.Fatal(err)
	}
	must(t, unix.Mknod(filepath.Join(root, "vol", "null"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))))
	if _, _, err := s.CreateSnapshot(ctx, []string{"vol"}, SnapshotRecord{Entry: "s"}); !errors.Is(err, ErrUnsupportedFile) {
		t.Fatalf("snapshot with a device node: %v", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.copies) != 1 || rec.copies[0].finished != 1 || !errors.Is(rec.copies[0].err, ErrUnsupportedFile) {
		t.Errorf("copies = %+v, want one finished with ErrUnsupportedFile", rec.copies)
	}
}

// sparseFile writes a file of size bytes that holds data only in a few
// blocks (at the start, in the middle and at the very end) and returns the
// data's total length.
func sparseFile(t testing.TB, path string, size int64) int64 {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	var n int64
	third := size / 3 &^ 4095
	for i, off := range []int64{0, third, third + 64<<10, size - 4096} {
		block := bytes.Repeat([]byte{byte(i + 1)}, 4096)
		if _, err := f.WriteAt(block, off); err != nil {
			t.Fatal(err)
		}
		n += 4096
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	return n
}

// sameContent compares two files: their sizes, and their bytes wherever
// either has data (SEEK_DATA); what is a hole in both reads as zeros in both.
func sameContent(t *testing.T, a, b string) {
	t.Helper()
	fa, err := os.Open(a)
	must(t, err)
	defer fa.Close()
	fb, err := os.Open(b)
	must(t, err)
	defer fb.Close()
	sa, sb := statOf(t, a), statOf(t, b)
	if sa.Size != sb.Size {
		t.Fatalf("%s has %d bytes, %s %d", a, sa.Size, b, sb.Size)
	}
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for _, r := range append(dataRanges(t, fa, sa.Size), dataRanges(t, fb, sb.Size)...) {
		for off := r[0]; off < r[1]; off += int64(len(ba)) {
			n := min(int64(len(ba)), r[1]-off)
			if _, err := fa.ReadAt(ba[:n], off); err != nil {
				t.Fatal(err)
			}
			if _, err := fb.ReadAt(bb[:n], off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(ba[:n], bb[:n]) {
				t.Fatalf("%s and %s differ in the %d bytes at %d", a, b, n, off)
			}
		}
	}
}

// dataRanges lists a file's data extents, [start, end).
func dataRanges(t *testing.T, f *os.File, size int64) [][2]int64 {
	t.Helper()
	var out [][2]int64
	for off := int64(0); off < size; {
		start, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		must(t, err)
		end, err := unix.Seek(int(f.Fd()), start, unix.SEEK_HOLE)
		must(t, err)
		out = append(out, [2]int64{start, end})
		off = end
	}
	return out
}

func statOf(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Stat(p, &st))
	return st
}

// TestSparseCopy: a file with a 1 GiB hole copies (snapshot, restore,
// clone) to one of the same size and content whose allocated blocks are
// about its data's, on the host's filesystem and on a tmpfs too small for
// a dense copy.
func TestSparseCopy(t *testing.T) {
	type place struct {
		name string
		root func(t *testing.T) string
	}
	places := []place{
		{"host", func(t *testing.T) string { return t.TempDir() }},
		{"tmpfs", func(t *testing.T) string {
			if os.Getuid() != 0 {
				t.Skip("mounting a tmpfs needs root")
			}
			dir := t.TempDir()
			// 32 MiB: a dense copy of the 1 GiB file could not fit.
			must(t, unix.Mount("carve-test", dir, "tmpfs", 0, "size=32m"))
			t.Cleanup(func() {
				if err := unix.Unmount(dir, 0); err != nil {
					t.Errorf("unmount %s: %v", dir, err)
				}
			})
			return dir
		}},
	}
	for _, pl := range places {
		t.Run(pl.name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			s, root := shareIn(t, pl.root(t))
			if _, err := s.Create(ctx, []string{"vol"}, owner(), Meta{PV: "p"}); err != nil {
				t.Fatal(err)
			}
			const size = 1<<30 + 3*4096
			src := filepath.Join(root, "vol", "sparse")
			data := sparseFile(t, src, size)
			// A file that is all hole, and one that is all data.
			f, err := os.Create(filepath.Join(root, "vol", "hole"))
			must(t, err)
			must(t, f.Truncate(64<<20))
			must(t, f.Close())
			must(t, os.WriteFile(filepath.Join(root, "vol", "dense"), bytes.Repeat([]byte{9}, 100000), 0o644))

			snap, _, err := s.CreateSnapshot(ctx, []string{"vol"}, SnapshotRecord{Entry: "s"})
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := s.CreateFromSnapshot(ctx, []string{"restored"}, owner(), Meta{PV: "r"}, "s"); err != nil {
				t.Fatal(err)
			}
			_, clone, err := s.CreateFromDir(ctx, []string{"clone"}, owner(), Meta{PV: "c"}, []string{"vol"})
			if err != nil {
				t.Fatal(err)
			}
			srcSt := statOf(t, src)
			t.Logf("source: %d bytes, %d KiB allocated; snapshot stats %+v", srcSt.Size, srcSt.Blocks/2, snap.Stats)
			if snap.Stats.Reflinked == 0 {
				wantHoles := int64(size) - data + 64<<20
				if snap.Stats.HoleBytes != wantHoles || clone.HoleBytes != wantHoles {
					t.Errorf("hole bytes: snapshot %d, clone %d; want %d", snap.Stats.HoleBytes, clone.HoleBytes, wantHoles)
				}
				if want := data + 100000; snap.Stats.Bytes != want {
					t.Errorf("bytes copied = %d, want %d (the data only)", snap.Stats.Bytes, want)
				}
			}
			for _, cp := range []string{
				filepath.Join(root, snapDir, "s", snapData),
				filepath.Join(root, "restored"),
				filepath.Join(root, "clone"),
			} {
				got := statOf(t, filepath.Join(cp, "sparse"))
				if got.Size != size {
					t.Errorf("%s: size %d, want %d", cp, got.Size, size)
				}
				// Allowed: the source's allocation and a few blocks of
				// metadata (an extent tree block).
				if got.Blocks*512 > srcSt.Blocks*512+64<<10 {
					t.Errorf("%s: %d KiB allocated, the source has %d KiB (%d KiB of data): holes filled",
						cp, got.Blocks/2, srcSt.Blocks/2, data>>10)
				}
				sameContent(t, src, filepath.Join(cp, "sparse"))
				hole := statOf(t, filepath.Join(cp, "hole"))
				if hole.Size != 64<<20 || hole.Blocks > 128 {
					t.Errorf("%s: the all-hole file has size %d, %d KiB allocated", cp, hole.Size, hole.Blocks/2)
				}
				sameContent(t, filepath.Join(root, "vol", "dense"), filepath.Join(cp, "dense"))
			}
		})
	}
}

// TestSparseReflinkXFS: on XFS a sparse file is cloned (FICLONE shares its
// extents, holes included), not copied extent by extent.
func TestSparseReflinkXFS(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	s, root := shareIn(t, loopfs.XFS(t, 512<<20))
	if _, err := s.Create(ctx, []string{"vol"}, owner(), Meta{PV: "p"}); err != nil {
		t.Fatal(err)
	}
	const size = 1<<30 + 3*4096
	src := filepath.Join(root, "vol", "sparse")
	sparseFile(t, src, size)
	snap, _, err := s.CreateSnapshot(ctx, []string{"vol"}, SnapshotRecord{Entry: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if snap.Stats.Reflinked != 1 || snap.Stats.ReflinkedBytes != size || snap.Stats.HoleBytes != 0 {
		t.Errorf("stats = %+v, want the file reflinked whole", snap.Stats)
	}
	cp := filepath.Join(root, snapDir, "s", snapData, "sparse")
	got, want := statOf(t, cp), statOf(t, src)
	if got.Size != size || got.Blocks > want.Blocks+128 {
		t.Errorf("clone: size %d, %d KiB allocated; source %d KiB", got.Size, got.Blocks/2, want.Blocks/2)
	}
	sameContent(t, src, cp)
}

// shareIn declares and opens a share in dir.
func shareIn(t *testing.T, dir string) (*Share, string) {
	t.Helper()
	root := filepath.Join(dir, "share")
	must(t, os.Mkdir(root, 0o755))
	must(t, Declare(root))
	s, err := Open(root)
	must(t, err)
	return s, root
}

// TestDenseFallback: where SEEK_DATA is not supported a file is copied
// whole, holes as zeros, with the same content.
func TestDenseFallback(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	data := sparseFile(t, src, 8<<20+3*4096)
	sf, err := os.Open(src)
	must(t, err)
	defer sf.Close()
	df, err := os.Create(filepath.Join(dir, "dst"))
	must(t, err)
	defer df.Close()
	c := &copier{ctx: context.Background(), obs: noProgress{}, last: time.Now(), noClone: true, noSeek: true}
	size := statOf(t, src).Size
	must(t, c.data(sf, df, size, "src"))
	if c.stats.Bytes != size || c.stats.HoleBytes != 0 {
		t.Errorf("stats = %+v, want %d bytes copied (%d of data), no holes", c.stats, size, data)
	}
	sameContent(t, src, filepath.Join(dir, "dst"))
}

// BenchmarkSparseCopy copies a file of 1 GiB holding 16 KiB of data (in
// t.TempDir's filesystem, without FICLONE) both ways, side by side in each
// round: extent by extent (SEEK_DATA, what carve does) and whole (what it
// does where SEEK_DATA is not supported). It reports each way's time and
// the copy's allocated KiB; nothing is asserted.
func BenchmarkSparseCopy(b *testing.B) {
	dir := b.TempDir()
	src := filepath.Join(dir, "src")
	sparseFile(b, src, 1<<30)
	var st unix.Stat_t
	if err := unix.Stat(src, &st); err != nil {
		b.Fatal(err)
	}
	copyOnce := func(b *testing.B, dense bool, name string) (time.Duration, int64) {
		sf, err := os.Open(src)
		if err != nil {
			b.Fatal(err)
		}
		defer sf.Close()
		dst := filepath.Join(dir, name)
		df, err := os.Create(dst)
		if err != nil {
			b.Fatal(err)
		}
		defer os.Remove(dst)
		defer df.Close()
		c := &copier{ctx: context.Background(), obs: noProgress{}, last: time.Now(), noClone: true, noSeek: dense}
		start := time.Now()
		if err := c.data(sf, df, st.Size, name); err != nil {
			b.Fatal(err)
		}
		if err := df.Sync(); err != nil {
			b.Fatal(err)
		}
		elapsed := time.Since(start)
		var got unix.Stat_t
		if err := unix.Fstat(int(df.Fd()), &got); err != nil {
			b.Fatal(err)
		}
		return elapsed, got.Blocks / 2
	}
	var sparseT, denseT time.Duration
	var sparseK, denseK int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t, k := copyOnce(b, false, "sparse")
		sparseT, sparseK = sparseT+t, k
		t, k = copyOnce(b, true, "dense")
		denseT, denseK = denseT+t, k
	}
	b.ReportMetric(float64(sparseT)/1e6/float64(b.N), "sparse-ms/op")
	b.ReportMetric(float64(denseT)/1e6/float64(b.N), "dense-ms/op")
	b.ReportMetric(float64(sparseK), "sparse-alloc-KiB")
	b.ReportMetric(float64(denseK), "dense-alloc-KiB")
	b.Logf("1 GiB file, %d KiB allocated: extent copy %v and %d KiB, whole copy %v and %d KiB (mean of %d rounds); host load average %s",
		st.Blocks/2, sparseT/time.Duration(b.N), sparseK, denseT/time.Duration(b.N), denseK, b.N, benchfig.Load())
}
