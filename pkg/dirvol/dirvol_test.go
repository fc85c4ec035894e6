package dirvol

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/klog/v2/ktesting"
	"syscall"
)

func newShare(t *testing.T) (*Share, string, context.Context) {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	root := filepath.Join(t.TempDir(), "share")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Declare(root); err != nil {
		t.Fatal(err)
	}
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	return s, root, ctx
}

func owner() Owner {
	// Tests run as root in CI; as another user only our own IDs are allowed.
	return Owner{UID: int64(os.Getuid()), GID: int64(os.Getgid()), Mode: 0o2770}
}

func TestCreateOwnershipAndIdempotency(t *testing.T) {
	s, root, ctx := newShare(t)
	dir := []string{"db", "data-mongo-0"}
	own := owner()
	if os.Getuid() == 0 {
		own = Owner{UID: 0, GID: 2001, Mode: 0o2770}
	}
	created, err := s.Create(ctx, dir, own, Meta{PV: "pvc-1", Namespace: "db", Claim: "data-mongo-0"})
	if err != nil || !created {
		t.Fatalf("Create = %v, %v", created, err)
	}
	fi, err := os.Stat(filepath.Join(root, "db", "data-mongo-0"))
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Mode&0o7777 != 0o2770 || int64(st.Gid) != own.GID || int64(st.Uid) != own.UID {
		t.Errorf("dir is %d:%d %#o, want %d:%d 02770", st.Uid, st.Gid, st.Mode&0o7777, own.UID, own.GID)
	}
	if pfi, _ := os.Stat(filepath.Join(root, "db")); pfi.Mode().Perm() != parentMode {
		t.Errorf("parent mode %v, want %#o", pfi.Mode().Perm(), parentMode)
	}

	// Data written by the pod survives a second Create.
	marker := filepath.Join(root, "db", "data-mongo-0", "marker")
	if err := os.WriteFile(marker, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	created, err = s.Create(ctx, dir, own, Meta{PV: "pvc-2"})
	if err != nil || created {
		t.Fatalf("second Create = %v, %v; want existing", created, err)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("marker lost: %v", err)
	}
	info, err := s.Lookup(dir)
	if err != nil {
		t.Fatal(err)
	}
	if info.Meta == nil || info.Meta.PV != "pvc-1" || info.Meta.Namespace != "db" {
		t.Errorf("meta = %+v, want the first creator", info.Meta)
	}
	if info.Mode != 0o2770 {
		t.Errorf("Lookup mode %#o", info.Mode)
	}
	// Nothing but our folders and the volume at the root.
	entries, _ := os.ReadDir(root)
	for _, e := range entries {
		if e.Name() != "db" && !strings.HasPrefix(e.Name(), ".carve-") {
			t.Errorf("unexpected entry %s at the root", e.Name())
		}
	}
	if tmp, _ := os.ReadDir(filepath.Join(root, tmpDir)); len(tmp) != 0 {
		t.Errorf("leftovers in %s: %v", tmpDir, tmp)
	}
}

func TestLookupMissing(t *testing.T) {
	s, _, _ := newShare(t)
	if _, err := s.Lookup([]string{"ns", "nope"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Lookup = %v, want ErrNotFound", err)
	}
}

// A pod owns its directory and can plant symlinks in it. Whatever it plants,
// carve must neither follow them nor act outside the share.
func TestSymlinkPlantedInsideVolume(t *testing.T) {
	s, root, ctx := newShare(t)
	outside := filepath.Join(filepath.Dir(root), "outside")
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "precious"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range [][]string{{"ns", "evil"}, {"ns", "victim"}} {
		if _, err := s.Create(ctx, d, owner(), Meta{PV: d[1], Namespace: "ns"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "ns", "victim", "data"), []byte("victim"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Inside "evil": links to outside the share and to the sibling volume.
	evil := filepath.Join(root, "ns", "evil")
	must(t, os.Symlink(outside, filepath.Join(evil, "out")))
	must(t, os.Symlink(filepath.Join(root, "ns", "victim"), filepath.Join(evil, "sibling")))
	must(t, os.Symlink("../victim", filepath.Join(evil, "relsibling")))

	// A nested pattern whose parent component is a planted symlink is refused.
	for _, d := range [][]string{{"ns", "evil", "out", "x"}, {"ns", "evil", "sibling", "x"}, {"ns", "evil", "relsibling"}} {
		if _, err := s.Lookup(d); !errors.Is(err, ErrUnsafe) {
			t.Errorf("Lookup(%v) = %v, want ErrUnsafe", d, err)
		}
		if _, err := s.Create(ctx, d, owner(), Meta{}); !errors.Is(err, ErrUnsafe) {
			t.Errorf("Create(%v) = %v, want ErrUnsafe", d, err)
		}
		if _, err := s.Archive(ctx, append(d, "y"), time.Now()); !errors.Is(err, ErrUnsafe) {
			t.Errorf("Archive(%v) = %v, want ErrUnsafe", d, err)
		}
	}
	if _, err := os.Stat(filepath.Join(outside, "x")); err == nil {
		t.Error("a directory was created outside the share")
	}

	// Deleting the evil volume removes the links, never their targets.
	if _, err := s.Trash(ctx, []string{"ns", "evil"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(outside, "precious")); err != nil || string(b) != "keep" {
		t.Errorf("file outside the share changed: %q %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "ns", "victim", "data")); err != nil || string(b) != "victim" {
		t.Errorf("sibling volume changed: %q %v", b, err)
	}
}

// A volume path that is itself a symlink (swapped in by someone with access
// to the parent) is refused, not followed.
func TestVolumePathIsSymlink(t *testing.T) {
	s, root, ctx := newShare(t)
	outside := t.TempDir()
	must(t, os.Mkdir(filepath.Join(root, "ns"), 0o755))
	must(t, os.Symlink(outside, filepath.Join(root, "ns", "claim")))
	must(t, os.Symlink(outside, filepath.Join(root, "linkedns")))
	for _, d := range [][]string{{"ns", "claim"}, {"linkedns", "claim"}} {
		if _, err := s.Lookup(d); !errors.Is(err, ErrUnsafe) {
			t.Errorf("Lookup(%v) = %v, want ErrUnsafe", d, err)
		}
		if _, err := s.Create(ctx, d, owner(), Meta{}); !errors.Is(err, ErrUnsafe) && !errors.Is(err, ErrNotFound) {
			if err == nil {
				t.Errorf("Create(%v) succeeded through a symlink", d)
			}
		}
		if _, err := s.Archive(ctx, d, time.Now()); !errors.Is(err, ErrUnsafe) {
			t.Errorf("Archive(%v) = %v, want ErrUnsafe", d, err)
		}
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("wrote through a symlink: %v", entries)
	}
	// The openat fallback walk is as strict as openat2.
	noOpenat2.Store(true)
	defer noOpenat2.Store(false)
	if _, err := s.Lookup([]string{"linkedns", "claim"}); !errors.Is(err, ErrUnsafe) {
		t.Errorf("fallback Lookup = %v, want ErrUnsafe", err)
	}
}

func TestArchiveNestedNeverClobbers(t *testing.T) {
	s, root, ctx := newShare(t)
	dir := []string{"team", "ns", "claim"}
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	var archives []string
	for i, content := range []string{"first", "second"} {
		if _, err := s.Create(ctx, dir, owner(), Meta{PV: "pv", Namespace: "ns"}); err != nil {
			t.Fatal(err)
		}
		must(t, os.WriteFile(filepath.Join(root, "team", "ns", "claim", "f"), []byte(content), 0o644))
		if i == 0 {
			// A sibling keeps "team" alive the first time round.
			if _, err := s.Create(ctx, []string{"team", "other", "c"}, owner(), Meta{}); err != nil {
				t.Fatal(err)
			}
		}
		where, err := s.Archive(ctx, dir, now) // same timestamp twice
		if err != nil {
			t.Fatal(err)
		}
		archives = append(archives, where)
		if i == 0 {
			if _, err := os.Stat(filepath.Join(root, "team", "ns")); !os.IsNotExist(err) {
				t.Errorf("empty parent team/ns left behind: %v", err)
			}
			if _, err := os.Stat(filepath.Join(root, "team", "other", "c")); err != nil {
				t.Errorf("archive removed a sibling: %v", err)
			}
			if info, err := s.Lookup(dir); !errors.Is(err, ErrNotFound) {
				t.Errorf("Lookup after archive = %+v, %v", info, err)
			}
		}
	}
	want := ".carve-archive/team/ns/claim-20261123T120000Z"
	if archives[0] != want || archives[1] != want+"-2" {
		t.Errorf("archives = %q, want %q and -2", archives, want)
	}
	for i, a := range archives {
		b, err := os.ReadFile(filepath.Join(root, a, "f"))
		if err != nil || string(b) != []string{"first", "second"}[i] {
			t.Errorf("archive %s holds %q, %v", a, b, err)
		}
	}
	// Archiving what is gone is a no-op.
	if where, err := s.Archive(ctx, dir, now); err != nil || where != "" {
		t.Errorf("Archive of a missing dir = %q, %v", where, err)
	}
}

func TestTrashAndPurge(t *testing.T) {
	s, root, ctx := newShare(t)
	dir := []string{"ns", "claim"}
	if _, err := s.Create(ctx, dir, owner(), Meta{}); err != nil {
		t.Fatal(err)
	}
	// A pod leaves a read-only tree behind; purge must still remove it.
	deep := filepath.Join(root, "ns", "claim", "a", "b")
	must(t, os.MkdirAll(deep, 0o755))
	must(t, os.WriteFile(filepath.Join(deep, "f"), []byte("x"), 0o444))
	must(t, os.Chmod(filepath.Join(root, "ns", "claim", "a"), 0o500))
	if _, err := s.Trash(ctx, dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "ns")); !os.IsNotExist(err) {
		t.Errorf("empty parent left: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(root, trashDir)); len(entries) != 1 {
		t.Fatalf("trash holds %d entries, want 1", len(entries))
	}
	if err := s.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(filepath.Join(root, trashDir)); len(entries) != 0 {
		t.Errorf("trash not purged: %v", entries)
	}
	if _, err := s.Trash(ctx, dir); err != nil {
		t.Errorf("Trash of a missing dir: %v", err)
	}
}

func TestRejectsBadPaths(t *testing.T) {
	s, _, ctx := newShare(t)
	for _, d := range [][]string{nil, {""}, {".."}, {"a", ".."}, {"a/b"}, {".carve-meta"}, {"x\x00"}} {
		if _, err := s.Create(ctx, d, owner(), Meta{}); !errors.Is(err, ErrUnsafe) {
			t.Errorf("Create(%q) = %v, want ErrUnsafe", d, err)
		}
	}
}

func TestStatfs(t *testing.T) {
	s, _, _ := newShare(t)
	u, err := s.Statfs(nil)
	if err != nil {
		t.Fatal(err)
	}
	if u.TotalBytes <= 0 || u.AvailableBytes < 0 || u.AvailableBytes > u.TotalBytes {
		t.Errorf("usage = %+v", u)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
