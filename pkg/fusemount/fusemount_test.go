package fusemount

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mount "k8s.io/mount-utils"

	"github.com/carve-csi/carve/pkg/backend"
)

// startHolder serves a holder with a fake mounter on a socket in a
// temporary directory and returns a client for it with another fake
// mounter as its local one.
func startHolder(t *testing.T, root string) (*Client, *mount.FakeMounter, *mount.FakeMounter) {
	t.Helper()
	holder := mount.NewFakeMounter(nil)
	local := mount.NewFakeMounter(nil)
	sock := filepath.Join(t.TempDir(), "fuse.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, sock, &Server{Mounter: holder, Roots: []string{root}}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if fi, err := os.Stat(sock); err == nil {
			if fi.Mode().Perm() != 0o600 {
				t.Fatalf("socket mode %v, want 0600", fi.Mode().Perm())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("holder socket never appeared")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return NewClient(sock, local), holder, local
}

func TestClientSendsFUSEMountsToTheHolder(t *testing.T) {
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(root, "pod", "mount")
	if err := os.MkdirAll(target, 0o750); err != nil {
		t.Fatal(err)
	}
	c, holder, local := startHolder(t, root)

	opts := []string{"log-file=/var/log/carve/glusterfs/x.log", "ro"}
	if err := c.Mount("g1:/gv0/ns/claim", target, "glusterfs", opts); err != nil {
		t.Fatal(err)
	}
	if got := holder.GetLog(); len(got) != 1 || got[0].Action != mount.FakeActionMount || got[0].Source != "g1:/gv0/ns/claim" ||
		got[0].Target != target || got[0].FSType != "glusterfs" {
		t.Fatalf("holder's mounts: %+v", got)
	}
	if len(local.GetLog()) != 0 {
		t.Fatalf("the local mounter mounted a FUSE volume: %+v", local.GetLog())
	}
	// Bind mounts and unmounts stay local.
	if err := c.Mount("/shares/nfs/ns/claim", target, "", []string{"bind"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Unmount(target); err != nil {
		t.Fatal(err)
	}
	if got := local.GetLog(); len(got) != 2 {
		t.Fatalf("local mounter: %+v", got)
	}
}

func TestHolderRefuses(t *testing.T) {
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	inside := filepath.Join(root, "pod", "mount")
	if err := os.MkdirAll(inside, 0o750); err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	link := filepath.Join(root, "link")
	if err := os.Symlink(outside, link); err != nil {
		t.Fatal(err)
	}
	c, holder, _ := startHolder(t, root)
	for _, tc := range []struct{ name, source, target, want string }{
		{"outside the root", "g1:/gv0", outside, "is not beneath"},
		{"the root itself", "g1:/gv0", root, "is not beneath"},
		{"dot-dot", "g1:/gv0", root + "/pod/../../x", "clean absolute"},
		{"symlink", "g1:/gv0", link, "symlink"},
		{"missing", "g1:/gv0", filepath.Join(root, "missing"), "must exist"},
		{"option-like source", "-oremount", inside, "mount argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Mount(tc.source, tc.target, "glusterfs", nil)
			if !errors.Is(err, ErrRefused) || !errors.Is(err, backend.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrRefused (invalid) mentioning %q", err, tc.want)
			}
		})
	}
	// A type the client would never send.
	if err := (&Server{Roots: []string{root}}).check(request{Source: "s:/x", Target: inside, FSType: "ext4"}); err == nil {
		t.Fatal("the holder accepted an ext4 mount")
	}
	if n := len(holder.GetLog()); n != 0 {
		t.Fatalf("the holder mounted %d times", n)
	}
}

func TestNoHolderIsUnavailable(t *testing.T) {
	c := NewClient(filepath.Join(t.TempDir(), "none.sock"), mount.NewFakeMounter(nil))
	err := c.Mount("g1:/gv0", "/var/lib/kubelet/pods/x/mount", "glusterfs", nil)
	if !errors.Is(err, backend.ErrUnavailable) || !strings.Contains(err.Error(), "carve-csi-fuse") {
		t.Fatalf("got %v, want ErrUnavailable naming carve-csi-fuse", err)
	}
}

// A mount that fails in the holder comes back with the holder's message and
// is not an invalid argument (the kubelet retries).
func TestHolderMountFailure(t *testing.T) {
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "fuse.sock")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	failing := failingMounter{mount.NewFakeMounter(nil), errors.New("mount.glusterfs: volfile server unreachable")}
	go func() { _ = Serve(ctx, sock, &Server{Mounter: failing, Roots: []string{root}}) }()
	if err := os.Mkdir(root+"/m", 0o750); err != nil {
		t.Fatal(err)
	}
	c := NewClient(sock, mount.NewFakeMounter(nil))
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	err = c.Mount("g1:/gv0", root+"/m", "glusterfs", nil)
	if err == nil || errors.Is(err, backend.ErrInvalid) || !strings.Contains(err.Error(), "volfile server unreachable") {
		t.Fatalf("got %v", err)
	}
}

type failingMounter struct {
	mount.Interface
	err error
}

func (f failingMounter) Mount(string, string, string, []string) error { return f.err }
