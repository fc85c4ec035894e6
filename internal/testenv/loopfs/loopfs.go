// Package loopfs gives tests a real filesystem of their own: a file-backed
// loop device, formatted and mounted for the test and always unmounted,
// detached and removed at its end. Without root or the mkfs tool the test
// is skipped, unless CARVE_REQUIRE_REAL=1 makes that a failure.
package loopfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Btrfs mounts a fresh btrfs filesystem of size bytes with quota enabled
// and returns its mount point.
func Btrfs(t testing.TB, size int64) string {
	t.Helper()
	mnt := mount(t, "mkfs.btrfs", []string{"-q", "-f"}, size)
	run(t, "btrfs", "quota", "enable", mnt)
	return mnt
}

// BtrfsNoQuota mounts a fresh btrfs filesystem without quota.
func BtrfsNoQuota(t testing.TB, size int64) string {
	t.Helper()
	return mount(t, "mkfs.btrfs", []string{"-q", "-f"}, size)
}

// XFS mounts a fresh XFS filesystem (mkfs.xfs's defaults have reflink).
func XFS(t testing.TB, size int64) string {
	t.Helper()
	return mount(t, "mkfs.xfs", []string{"-q", "-f"}, size)
}

func need(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("CARVE_REQUIRE_REAL") == "1" {
		t.Fatalf("CARVE_REQUIRE_REAL=1: %s", what)
	}
	t.Skipf("%s (set CARVE_REQUIRE_REAL=1 to make this a failure)", what)
}

func mount(t testing.TB, mkfs string, args []string, size int64) string {
	t.Helper()
	if os.Getuid() != 0 {
		need(t, "a loop filesystem needs root")
	}
	for _, tool := range []string{mkfs, "losetup", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			need(t, tool+" is not installed")
		}
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.img")
	f, err := os.Create(img)
	if err == nil {
		err = f.Truncate(size)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	run(t, mkfs, append(args, img)...)
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		need(t, "no loop device: losetup: "+strings.TrimSpace(string(out)))
	}
	dev := strings.TrimSpace(string(out))
	// Registered before the mount: the device is detached on every path.
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "mount", dev, mnt)
	UnmountAtCleanup(t, mnt)
	return mnt
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// UnmountAtCleanup unmounts mnt when the test ends. Something the test left
// open (a bind mount under it, a descriptor) can hold it busy for a moment:
// it tries for 2 s, then detaches it lazily and reports the test.
func UnmountAtCleanup(t testing.TB, mnt string) {
	t.Cleanup(func() {
		for i := 0; ; i++ {
			out, err := exec.Command("umount", mnt).CombinedOutput()
			if err == nil {
				return
			}
			if i == 20 {
				t.Errorf("umount %s: %v: %s; detaching lazily", mnt, err, out)
				_ = exec.Command("umount", "-l", mnt).Run()
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}
