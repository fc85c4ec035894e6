package dirvol

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// The helper's side (ServeBtrfs) acts only on the share carve verified,
// only beneath it, and removes only carve's own leftovers.
func TestServeBtrfs(t *testing.T) {
	s, root, _ := btrfsShare(t, 256<<20)
	if err := s.Verify(); err != nil { // fills the identity, as carve's first write does
		t.Fatal(err)
	}
	id := s.identityID()
	kind := func(a BtrfsAnswer) string {
		if a.Error == nil {
			return ""
		}
		return a.Error.Kind
	}
	if a := ServeBtrfs(root, id, []string{"check"}); a.Error != nil {
		t.Fatalf("check: %+v", a.Error)
	}
	if a := ServeBtrfs(root, "another-share", []string{"check"}); kind(a) != helperUnverified {
		t.Errorf("check with another share's identity: %+v", a)
	}
	bare := t.TempDir()
	if a := ServeBtrfs(bare, "", []string{"check"}); kind(a) != helperUnverified {
		t.Errorf("check of a directory that is no carve share: %+v", a)
	}
	if err := os.Mkdir(filepath.Join(root, "ns"), 0o755); err != nil {
		t.Fatal(err)
	}
	if a := ServeBtrfs(root, id, []string{"create", "ns", newPrefix + "x"}); a.Error != nil {
		t.Fatalf("create: %+v", a.Error)
	}
	if a := ServeBtrfs(root, id, []string{"limit", "ns/" + newPrefix + "x", "1048576"}); a.Error != nil || !a.Enforced {
		t.Fatalf("limit: %+v", a)
	}
	if a := ServeBtrfs(root, id, []string{"quota", "ns/" + newPrefix + "x"}); a.Quota == nil || a.Quota.LimitBytes != 1<<20 {
		t.Fatalf("quota: %+v", a)
	}
	if err := os.Rename(filepath.Join(root, "ns", newPrefix+"x"), filepath.Join(root, "ns", "vol")); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{},
		{"format"},
		{"limit", "ns/vol"},
		{"limit", "ns/vol", "-1"},
		{"limit", "ns/../ns/vol", "1"},
		{"limit", "/ns/vol", "1"},
		{"create", "ns", "a/b"},
		{"snapshot", "ns/vol", "ns", "copy", "rx"},
		{"remove", "ns", "vol"},
		{"remove", "", "ns"},
		{"remove", trashDir + "/x", "y"},
	} {
		if a := ServeBtrfs(root, id, args); kind(a) != helperInvalid {
			t.Errorf("%q: %+v, want the request refused", args, a)
		}
	}
	if err := os.Symlink("ns", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	if a := ServeBtrfs(root, id, []string{"limit", "link/vol", "1"}); kind(a) != helperUnsafe {
		t.Errorf("limit through a symlink: %+v", a)
	}
	if a := ServeBtrfs(root, id, []string{"subvolume", "ns/none"}); kind(a) != helperNotFound {
		t.Errorf("a missing directory: %+v", a)
	}
	// A read-only snapshot in the trash: removed whole.
	if err := os.MkdirAll(filepath.Join(root, trashDir, "e"), 0o700); err != nil {
		t.Fatal(err)
	}
	if a := ServeBtrfs(root, id, []string{"snapshot", "ns/vol", trashDir + "/e", "data", "ro"}); a.Error != nil {
		t.Fatalf("snapshot: %+v", a.Error)
	}
	if err := os.WriteFile(filepath.Join(root, trashDir, "e", "data", "f"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Fatalf("write into the read-only snapshot: %v", err)
	}
	if a := ServeBtrfs(root, id, []string{"remove", trashDir, "e"}); a.Error != nil {
		t.Fatalf("remove from the trash: %+v", a.Error)
	}
	if _, err := os.Lstat(filepath.Join(root, trashDir, "e")); !os.IsNotExist(err) {
		t.Errorf("trash entry after remove: %v", err)
	}
	if a := ServeBtrfs(root, id, []string{"remove", trashDir, "e"}); a.Error != nil {
		t.Errorf("removing it again: %+v", a.Error)
	}
	if _, err := os.Lstat(filepath.Join(root, "ns", "vol")); err != nil {
		t.Errorf("the volume: %v", err)
	}
}
