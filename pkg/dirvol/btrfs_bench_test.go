package dirvol

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/carve-csi/carve/internal/benchfig"
	"github.com/carve-csi/carve/internal/testenv/loopfs"
	"github.com/carve-csi/carve/pkg/params"
)

// BenchmarkSnapshotLayouts takes snapshots and clones of one volume with many
// files (BENCH_SNAPSHOT_FILES, default 5000 files of 16 KiB in 50
// directories) in three ways, side by side in one run, rounds interleaved:
//
//	copy     directory layout on the host's filesystem (ext4: no reflinks)
//	reflink  directory layout on an XFS loop filesystem (FICLONE per file)
//	btrfs    btrfs layout on a btrfs loop filesystem (a subvolume snapshot)
//
// It prints the median of each and writes them to
// bin/bench/snapshot-layouts.txt; nothing is asserted about them.
func BenchmarkSnapshotLayouts(b *testing.B) {
	files := 5000
	if v, err := strconv.Atoi(os.Getenv("BENCH_SNAPSHOT_FILES")); err == nil && v > 0 {
		files = v
	}
	const rounds = 3
	ctx := context.Background()
	type way struct {
		name, fs string
		share    *Share
		layout   string
		fill     time.Duration
		snap     []time.Duration
		clone    []time.Duration
		restore  []time.Duration
		stats    CopyStats
	}
	plain := filepath.Join(b.TempDir(), "share")
	if err := os.Mkdir(plain, 0o755); err != nil {
		b.Fatal(err)
	}
	ways := []*way{
		{name: "copy", fs: "host (" + fsName(plain) + ")"},
		{name: "reflink", fs: "xfs loop"},
		{name: "btrfs", fs: "btrfs loop, quota on", layout: params.LayoutBtrfs},
	}
	roots := []string{plain, loopfs.XFS(b, 2<<30), loopfs.Btrfs(b, 2<<30)}
	data := bytes.Repeat([]byte{0x42}, 16<<10)
	for i, w := range ways {
		if err := Declare(roots[i]); err != nil {
			b.Fatal(err)
		}
		w.share, _ = Open(roots[i])
		meta := Meta{PV: "src", CapacityBytes: 1 << 30, Layout: w.layout}
		if _, err := w.share.Create(ctx, []string{"vol"}, owner(), meta); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		for f := range files {
			d := filepath.Join(roots[i], "vol", fmt.Sprint(f%50))
			_ = os.MkdirAll(d, 0o755)
			if err := os.WriteFile(filepath.Join(d, fmt.Sprint(f)), data, 0o644); err != nil {
				b.Fatal(err)
			}
		}
		w.fill = time.Since(start)
	}
	b.ResetTimer()
	for range b.N {
		for r := range rounds {
			for _, w := range ways {
				entry := fmt.Sprint("s", r, "-", time.Now().UnixNano())
				start := time.Now()
				rec, _, err := w.share.CreateSnapshot(ctx, []string{"vol"}, SnapshotRecord{Entry: entry})
				if err != nil {
					b.Fatal(err)
				}
				w.snap = append(w.snap, time.Since(start))
				w.stats = rec.Stats
				meta := Meta{PV: "c", CapacityBytes: 1 << 30, Layout: w.layout}
				start = time.Now()
				if _, _, err := w.share.CreateFromDir(ctx, []string{"clone-" + entry}, owner(), meta, []string{"vol"}); err != nil {
					b.Fatal(err)
				}
				w.clone = append(w.clone, time.Since(start))
				start = time.Now()
				if _, _, err := w.share.CreateFromSnapshot(ctx, []string{"restore-" + entry}, owner(), meta, entry); err != nil {
					b.Fatal(err)
				}
				w.restore = append(w.restore, time.Since(start))
			}
		}
	}
	b.StopTimer()
	median := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2]
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
	var out strings.Builder
	fmt.Fprintf(&out, "snapshot and clone of one volume: %d files of 16 KiB in 50 directories (%d MiB); median of %d, rounds interleaved\n",
		files, files*16>>10, rounds*b.N)
	fmt.Fprintf(&out, "host load average: %s\n", benchfig.Load())
	fmt.Fprintf(&out, "%-8s %-22s %12s %12s %12s %12s  %s\n", "way", "filesystem", "snapshot", "clone", "restore", "(fill)",
		"snapshot stats; copy's snapshot time / this one's")
	base := median(ways[0].snap)
	for _, w := range ways {
		how := fmt.Sprintf("files %d, reflinked %d", w.stats.Files, w.stats.Reflinked)
		if w.stats.Subvolume {
			how = "subvolume snapshot"
		}
		fmt.Fprintf(&out, "%-8s %-22s %12s %12s %12s %12s  %s; %.2f\n", w.name, w.fs,
			ms(median(w.snap)), ms(median(w.clone)), ms(median(w.restore)), ms(w.fill), how, float64(base)/float64(max(median(w.snap), 1)))
	}
	fmt.Print("\n" + out.String())
	benchfig.Write(b, "snapshot-layouts.txt", out.String())
}

func fsName(p string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		return "?"
	}
	switch uint32(st.Type) {
	case uint32(unix.EXT4_SUPER_MAGIC):
		return "ext4"
	case uint32(unix.XFS_SUPER_MAGIC):
		return "xfs"
	case uint32(unix.BTRFS_SUPER_MAGIC):
		return "btrfs"
	case uint32(unix.TMPFS_MAGIC):
		return "tmpfs"
	}
	return fmt.Sprintf("%#x", st.Type)
}
