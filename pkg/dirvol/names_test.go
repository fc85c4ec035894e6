package dirvol

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2/ktesting"
)

// longNames are paths Kubernetes accepts: namespaces up to 63 characters,
// claim names up to 253 (the PV name of a CSI volume is short), patterns
// with several segments, and the longest segment carve accepts.
func longNames() [][]string {
	ns := strings.Repeat("n", 63)
	claim253 := "data-" + strings.Repeat("c", 248)
	return [][]string{
		{ns, claim253},
		{"team", ns, "pvc-" + strings.Repeat("0", 36), claim253},
		{ns, "x" + strings.Repeat("y", 229)},   // 230
		{ns, strings.Repeat("z", 240)},         // 240
		{strings.Repeat("s", 255)},             // the longest segment
		{ns, strings.Repeat("é", 126) + "abc"}, // multi-byte, 255 bytes
		{ns, strings.Repeat("日本", 42) + "abc"}, // multi-byte, 255 bytes
	}
}

// TestLongNamesExt4 and TestLongNamesTmpfs carve, archive (twice at the same
// second), trash and purge volumes with the longest names carve accepts, on
// a real filesystem.
func TestLongNamesExt4(t *testing.T) {
	testLongNames(t, filepath.Join(t.TempDir(), "share"))
}

func TestLongNamesTmpfs(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("mounting tmpfs needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m", "carve-test", dir).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		t.Fatalf("%s is not tmpfs: %v", dir, err)
	}
	testLongNames(t, filepath.Join(dir, "share"))
}

func testLongNames(t *testing.T, root string) {
	_, ctx := ktesting.NewTestContext(t)
	must(t, os.Mkdir(root, 0o755))
	must(t, Declare(root))
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	for _, dir := range longNames() {
		if err := checkDir(dir); err != nil {
			t.Fatalf("test path refused: %v", err)
		}
		t.Run(fmt.Sprintf("%s-%dB", strings.Join(dir, "/")[:6], len(dir[len(dir)-1])), func(t *testing.T) {
			name := strings.Join(dir, "/")
			short := name[:20] + "…" + name[len(name)-20:]
			meta := Meta{PV: "pvc-1", Namespace: dir[0], Claim: dir[len(dir)-1]}

			// Carve, archive twice with the same timestamp (the second one gets
			// a counter), each archive with a record naming the path.
			var archives []string
			for i := range 2 {
				created, err := s.Create(ctx, dir, owner(), meta)
				if err != nil || !created {
					t.Fatalf("Create(%s) = %v, %v", short, created, err)
				}
				must(t, os.WriteFile(filepath.Join(root, name, "f"), []byte{byte('0' + i)}, 0o644))
				info, err := s.Lookup(dir)
				if err != nil || info.Meta == nil || info.Meta.Claim != meta.Claim {
					t.Fatalf("Lookup(%s) = %+v, %v", short, info, err)
				}
				where, err := s.Archive(ctx, dir, now)
				if err != nil || where == "" {
					t.Fatalf("Archive(%s) = %q, %v", short, where, err)
				}
				archives = append(archives, where)
				if _, err := s.Lookup(dir); !errors.Is(err, ErrNotFound) {
					t.Errorf("Lookup(%s) after Archive = %v", short, err)
				}
			}
			if archives[0] == archives[1] {
				t.Errorf("two archives of %s share the name %s", short, archives[0])
			}
			for i, a := range archives {
				if !strings.HasPrefix(a, archiveDir+"/"+strings.Join(dir[:len(dir)-1], "/")) {
					t.Errorf("archive %s is not below the volume's parents", a)
				}
				checkNameBounds(t, a)
				if b, err := os.ReadFile(filepath.Join(root, a, "f")); err != nil || string(b) != string(rune('0'+i)) {
					t.Errorf("archive %d of %s holds %q, %v", i, short, b, err)
				}
				var rec ArchiveRecord
				b, err := os.ReadFile(filepath.Join(root, a+".json"))
				if err == nil {
					err = json.Unmarshal(b, &rec)
				}
				if err != nil || rec.Dir != name || rec.Entry != a || rec.Record == nil || rec.Record.Claim != meta.Claim || !rec.Archived.Equal(now) {
					t.Errorf("archive record of %s = %+v, %v", short, rec, err)
				}
			}

			// Carve again, trash, purge.
			if created, err := s.Create(ctx, dir, owner(), meta); err != nil || !created {
				t.Fatalf("Create(%s) after archive = %v, %v", short, created, err)
			}
			where, err := s.Trash(ctx, dir)
			if err != nil || where == "" {
				t.Fatalf("Trash(%s) = %q, %v", short, where, err)
			}
			checkNameBounds(t, where)
			if err := s.Purge(ctx); err != nil {
				t.Fatalf("Purge after trashing %s: %v", short, err)
			}
			if _, err := os.Stat(filepath.Join(root, name)); !os.IsNotExist(err) {
				t.Errorf("%s still there after Trash: %v", short, err)
			}
		})
	}
	for _, d := range []string{trashDir, tmpDir} {
		if entries, _ := os.ReadDir(filepath.Join(root, d)); len(entries) != 0 {
			t.Errorf("%s holds %d entries after purge", d, len(entries))
		}
	}
}

func checkNameBounds(t *testing.T, p string) {
	t.Helper()
	for _, seg := range strings.Split(p, "/") {
		if len(seg)+len(".json") > 255 || !utf8.ValidString(seg) {
			t.Errorf("entry segment of %d bytes (valid UTF-8: %v) in %s", len(seg), utf8.ValidString(seg), p)
		}
	}
}

func TestFitName(t *testing.T) {
	if got := fitName("claim", "-20261129T120000Z"); got != "claim-20261129T120000Z" {
		t.Errorf("short name changed: %q", got)
	}
	a := fitName(strings.Repeat("a", 250)+"1", "-s")
	b := fitName(strings.Repeat("a", 250)+"2", "-s")
	if a == b || len(a) != nameBudget || !strings.HasSuffix(a, "-s") || !strings.HasPrefix(a, "aaaa") {
		t.Errorf("long names: %q, %q", a, b)
	}
	for _, base := range []string{strings.Repeat("é", 127), strings.Repeat("日", 85), strings.Repeat("😀", 63)} {
		for _, suffix := range []string{"", "-x", "-20261129T120000Z-0123456789ab"} {
			got := fitName(base, suffix)
			if !utf8.ValidString(got) || len(got) > nameBudget || !strings.HasSuffix(got, suffix) {
				t.Errorf("fitName(%d bytes, %q) = %q (%d bytes)", len(base), suffix, got, len(got))
			}
		}
	}
}

// A Create that dies after making its directory leaves it under a
// temporary name with a marker; Purge removes both once stale, but never a
// directory that holds anything.
func TestPurgeUnfinishedCreation(t *testing.T) {
	s, root, ctx := newShare(t)
	must(t, os.MkdirAll(filepath.Join(root, "ns"), 0o711))
	must(t, os.MkdirAll(filepath.Join(root, tmpDir), 0o700))
	tmpfd, err := unix.Open(filepath.Join(root, tmpDir), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(tmpfd)
	old := time.Now().Add(-2 * time.Minute)
	for _, id := range []string{"aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc"} {
		must(t, writeMarker(tmpfd, id, creation{Dir: "ns/claim-" + id, Tmp: newPrefix + id, Started: old}))
		if id != "cccccccccccc" { // c: died before mkdir
			must(t, os.Mkdir(filepath.Join(root, "ns", newPrefix+id), 0))
		}
		if id == "bbbbbbbbbbbb" { // b: someone put data in it
			must(t, os.WriteFile(filepath.Join(root, "ns", newPrefix+id, "data"), nil, 0o644))
		}
		must(t, os.Chtimes(filepath.Join(root, tmpDir, markerName(id)), old, old))
	}
	// A fresh one is a creation in progress: left alone.
	must(t, writeMarker(tmpfd, "dddddddddddd", creation{Dir: "ns/claim-d", Tmp: newPrefix + "dddddddddddd", Started: time.Now()}))
	must(t, os.Mkdir(filepath.Join(root, "ns", newPrefix+"dddddddddddd"), 0))

	err = s.Purge(ctx)
	if err == nil || !strings.Contains(err.Error(), "ns/claim-bbbbbbbbbbbb") {
		t.Errorf("Purge = %v, want an error naming the unfinished creation that holds data", err)
	}
	for n, want := range map[string]bool{
		"ns/" + newPrefix + "aaaaaaaaaaaa": false, tmpDir + "/aaaaaaaaaaaa.json": false,
		"ns/" + newPrefix + "bbbbbbbbbbbb/data": true, tmpDir + "/bbbbbbbbbbbb.json": true,
		tmpDir + "/cccccccccccc.json":      false,
		"ns/" + newPrefix + "dddddddddddd": true, tmpDir + "/dddddddddddd.json": true,
	} {
		if _, err := os.Lstat(filepath.Join(root, n)); (err == nil) != want {
			t.Errorf("%s: exists = %v, want %v", n, err == nil, want)
		}
	}
}

// Create leaves nothing of its own behind, and its directory never shows up
// under its final name before it has its owner and mode.
func TestCreateLeavesNothingBehind(t *testing.T) {
	s, root, ctx := newShare(t)
	for i := range 20 {
		dir := []string{"ns", "c" + string(rune('a'+i))}
		if _, err := s.Create(ctx, dir, owner(), Meta{PV: "pv"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{filepath.Join(root, tmpDir), filepath.Join(root, "ns")} {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".carve") || d == filepath.Join(root, tmpDir) {
				t.Errorf("left behind: %s/%s", d, e.Name())
			}
		}
	}
}

// Errors no retry can fix are marked permanent; the others are not.
func TestPermanentErrors(t *testing.T) {
	s, _, ctx := newShare(t)
	// 18 segments of 255 bytes pass every per-segment check but make a path
	// longer than PATH_MAX.
	var deep []string
	for i := range 18 {
		deep = append(deep, strings.Repeat(string(rune('a'+i)), 255))
	}
	_, err := s.Lookup(deep)
	if !errors.Is(err, ErrPermanent) || !errors.Is(err, syscall.ENAMETOOLONG) {
		t.Errorf("Lookup of a path longer than PATH_MAX = %v, want ErrPermanent", err)
	}
	_, err = s.Archive(ctx, deep, time.Now())
	if !errors.Is(err, ErrPermanent) {
		t.Errorf("Archive of a path longer than PATH_MAX = %v, want ErrPermanent", err)
	}
	for _, e := range []error{unix.EIO, unix.ENOSPC, unix.EDQUOT, unix.EINVAL, unix.EACCES} {
		if errors.Is(permanent(e), ErrPermanent) {
			t.Errorf("%v classed as permanent", e)
		}
	}
	for _, e := range []error{unix.ENAMETOOLONG, unix.EILSEQ} {
		if !errors.Is(permanent(e), ErrPermanent) || !errors.Is(permanent(e), e) {
			t.Errorf("%v not classed as permanent", e)
		}
	}
}
