package safemount

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	mount "k8s.io/mount-utils"

	"github.com/carve-csi/carve/pkg/backend"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Getuid() != 0 {
		if os.Getenv("CARVE_REQUIRE_REAL") == "1" {
			t.Fatal("CARVE_REQUIRE_REAL=1: needs root for real mounts")
		}
		t.Skip("needs root for real mounts")
	}
}

// TestRefusesOptionLikeArguments runs the real mount(8) through the guard:
// a source or target that mount would parse as an option never reaches it,
// while an ordinary bind mount still works.
func TestRefusesOptionLikeArguments(t *testing.T) {
	needRoot(t)
	m := New(mount.New(""))
	src, target := t.TempDir(), t.TempDir()
	before, err := m.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ source, target string }{
		{"-oremount:/export/ns/c", target},
		{"-oremount", target},
		{src, "-oremount"},
	} {
		err := m.Mount(c.source, c.target, "nfs", []string{"nfsvers=4.1"})
		if !errors.Is(err, ErrOptionLike) || !errors.Is(err, backend.ErrInvalid) {
			t.Errorf("Mount(%q, %q): %v; want ErrOptionLike", c.source, c.target, err)
		}
		err = m.MountSensitiveWithoutSystemdWithMountFlags(c.source, c.target, "", []string{"bind"}, nil, []string{"--no-canonicalize"})
		if !errors.Is(err, ErrOptionLike) {
			t.Errorf("bind Mount(%q, %q): %v; want ErrOptionLike", c.source, c.target, err)
		}
	}
	if err := m.Unmount("-l"); !errors.Is(err, ErrOptionLike) {
		t.Errorf("Unmount(-l): %v", err)
	}
	after, err := m.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("mount table changed: %d entries before, %d after", len(before), len(after))
	}

	if err := os.WriteFile(filepath.Join(src, "marker"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.Mount(src, target, "", []string{"bind"}); err != nil {
		t.Fatalf("plain bind mount through the guard: %v", err)
	}
	t.Cleanup(func() { _ = m.Unmount(target) })
	if _, err := os.Stat(filepath.Join(target, "marker")); err != nil {
		t.Errorf("bind mount not visible: %v", err)
	}
	if err := m.Unmount(target); err != nil {
		t.Error(err)
	}
}

func TestNewWrapsOnce(t *testing.T) {
	f := mount.NewFakeMounter(nil)
	g := New(f)
	if New(g) != g {
		t.Error("New wraps a guarded mounter again")
	}
	if New(nil) != nil {
		t.Error("New(nil) is not nil")
	}
}
