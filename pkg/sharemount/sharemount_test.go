package sharemount

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	mount "k8s.io/mount-utils"
)

func TestMapSet(t *testing.T) {
	for _, tc := range []struct {
		in, key, local, err string
	}{
		{in: "10.0.0.5:/export=/shares/nfs", key: "10.0.0.5:/export", local: "/shares/nfs"},
		{in: "[fd00::5]:/export=/shares/v6/", key: "[fd00::5]:/export", local: "/shares/v6"},
		{in: "g1:gv0=/mnt/gv0", key: "g1:gv0", local: "/mnt/gv0"},
		{in: "10.0.0.5:/export", err: "want SERVER:SHARE=LOCALPATH"},
		{in: "10.0.0.5:/export=", err: "want SERVER:SHARE=LOCALPATH"},
		{in: "/export=/shares/nfs", err: "want SERVER:SHARE=LOCALPATH"},
		{in: "[fd00::5/export=/x", err: "want SERVER:SHARE=LOCALPATH"},
		{in: "10.0.0.5:/export=relative/path", err: "must be absolute"},
	} {
		m := Map{}
		err := m.Set(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Set(%q) = %v, want error containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || m[tc.key] != tc.local {
			t.Errorf("Set(%q) = %v, map %v; want %s=%s", tc.in, err, m, tc.key, tc.local)
		}
	}
	m := Map{}
	if err := m.Set("a:/x=/one"); err != nil {
		t.Fatal(err)
	}
	if err := m.Set("a:/x=/two"); err == nil || !strings.Contains(err.Error(), "mapped twice") {
		t.Errorf("duplicate entry: %v", err)
	}
}

func TestLocalPathMappedAndUnmapped(t *testing.T) {
	ctx := context.Background()
	r := &Resolver{Map: Map{"b:/export": "/shares/b"}}
	if p, err := r.LocalPath(ctx, []string{"a", "b"}, "/export", "a:/export", "nfs", nil); err != nil || p != "/shares/b" {
		t.Errorf("a backup server's mapping: %q, %v", p, err)
	}
	_, err := r.LocalPath(ctx, []string{"c"}, "/export", "c:/export", "nfs", nil)
	if err == nil || !strings.Contains(err.Error(), "--mount-map c:/export=LOCALPATH") {
		t.Errorf("unmapped share without --mounts-dir: %v", err)
	}
}

// TestOnDemandRemount: a share carve mounted itself (--mounts-dir) that was
// unmounted behind its back is mounted again on the next call, at the same
// place; a mounted one is reused.
func TestOnDemandRemount(t *testing.T) {
	ctx := context.Background()
	fake := mount.NewFakeMounter(nil)
	r := &Resolver{MountsDir: t.TempDir(), Mounter: fake}
	p1, err := r.LocalPath(ctx, []string{"srv"}, "/export", "srv:/export", "nfs", []string{"hard"})
	if err != nil {
		t.Fatal(err)
	}
	p2, err := r.LocalPath(ctx, []string{"srv"}, "/export", "srv:/export", "nfs", []string{"hard"})
	if err != nil || p2 != p1 {
		t.Fatalf("second call: %q, %v; want %q", p2, err, p1)
	}
	if n := mounts(fake, "mount"); n != 1 {
		t.Fatalf("%d mounts for two calls, want 1", n)
	}
	if err := fake.Unmount(p1); err != nil {
		t.Fatal(err)
	}
	p3, err := r.LocalPath(ctx, []string{"srv"}, "/export", "srv:/export", "nfs", []string{"hard"})
	if err != nil || p3 != p1 {
		t.Fatalf("after unmount: %q, %v", p3, err)
	}
	if n := mounts(fake, "mount"); n != 2 {
		t.Fatalf("%d mounts, want a remount (2)", n)
	}
	if fi, err := os.Stat(p1); err != nil || !fi.IsDir() || filepath.Dir(p1) != r.MountsDir {
		t.Errorf("mount point %s: %v", p1, err)
	}
}

func mounts(f *mount.FakeMounter, action string) int {
	n := 0
	for _, a := range f.GetLog() {
		if a.Action == action {
			n++
		}
	}
	return n
}
