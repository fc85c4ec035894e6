package dirvol

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestIdentityRace starts many processes' worth of Shares on one fresh share
// at once, as two controller replicas (or a provisioner beside a CSI
// controller) do: every one must adopt the single identity the share ends up
// holding, and still accept the share after a remount (when the identity is
// read again), instead of refusing it as another filesystem.
func TestIdentityRace(t *testing.T) {
	for _, declared := range []bool{false, true} {
		name := map[bool]string{false: "mount point", true: "declared"}[declared]
		t.Run(name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "share")
			if err := os.Mkdir(root, 0o755); err != nil {
				t.Fatal(err)
			}
			if declared {
				if err := Declare(root); err != nil {
					t.Fatal(err)
				}
			} else {
				if os.Getuid() != 0 {
					t.Skip("a share used for the first time must be a mount point: needs root for a bind mount")
				}
				if err := syscall.Mount(root, root, "", syscall.MS_BIND, ""); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = syscall.Unmount(root, syscall.MNT_DETACH) })
				// The bind mount stands in for an NFS mount, which this
				// kernel cannot make (TestLocalMountRefused: a real bind
				// mount of a local directory is refused).
				asNetworkFS(t)
			}
			const n = 32
			shares := make([]*Share, n)
			var wg sync.WaitGroup
			start := make(chan struct{})
			errs := make([]error, n)
			for i := range shares {
				// Not Open: each stands for a process of its own.
				shares[i] = &Share{root: root}
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					errs[i] = shares[i].Verify()
				}()
			}
			close(start)
			wg.Wait()
			fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			held, err := readIdentity(fd)
			if err != nil || held == nil || held.ID == "" {
				t.Fatalf("share identity after the race = %+v, %v", held, err)
			}
			for i, s := range shares {
				if errs[i] != nil {
					t.Errorf("share %d: Verify: %v", i, errs[i])
					continue
				}
				if s.seen.id != held.ID {
					t.Errorf("share %d adopted identity %s, the share holds %s", i, s.seen.id, held.ID)
				}
				s.seen.ino = 0 // as after a remount: the identity is read again
				if err := s.Verify(); err != nil {
					t.Errorf("share %d after a remount: %v", i, err)
				}
			}
			leftovers, _ := filepath.Glob(filepath.Join(root, identityFile+".*"))
			want := 0
			if declared {
				want = 1 // declaredIDFile
			}
			if len(leftovers) != want {
				t.Errorf("files beside the identity: %v", leftovers)
			}
		})
	}
}

// asNetworkFS makes shareFS call every filesystem a network share for the
// rest of the test.
func asNetworkFS(t *testing.T) {
	orig := shareFS
	shareFS = func(int) (string, bool, error) { return "nfs", true, nil }
	t.Cleanup(func() { shareFS = orig })
}

// TestLocalMountRefused: a share seen for the first time on a mount of a
// local filesystem, as a hostPath of the node's mount of the export is when
// that mount is missing, is refused and nothing is written there; declared,
// it is accepted.
func TestLocalMountRefused(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root for a bind mount")
	}
	root := filepath.Join(t.TempDir(), "share")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount(root, root, "", syscall.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(root, syscall.MNT_DETACH) })
	s := &Share{root: root}
	err := s.Verify()
	if !errors.Is(err, ErrShareUnverified) || !strings.Contains(err.Error(), "a mount of a local filesystem") {
		t.Fatalf("Verify on a bind mount of a local directory = %v, want %v naming the local filesystem", err, ErrShareUnverified)
	}
	t.Log(err)
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Fatalf("%d entries written to the refused share (first %s)", len(entries), entries[0].Name())
	}
	if err := Declare(root); err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(); err != nil {
		t.Fatalf("Verify of the declared share: %v", err)
	}
}
