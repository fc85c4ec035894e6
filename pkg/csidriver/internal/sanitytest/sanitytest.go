// Package sanitytest holds what the csi-sanity runs (NFS, Gluster) share:
// waiting for the driver's socket and checking nothing is left behind.
package sanitytest

import (
	"bufio"
	"net"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// WaitForSocket waits until the driver listens on the unix socket.
func WaitForSocket(t testing.TB, sock string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("driver did not listen on %s", sock)
}

// Entries lists the names in dir; a missing dir has none.
func Entries(t testing.TB, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range des {
		names = append(names, e.Name())
	}
	return names
}

// MountsUnder lists mount points at or below dir, deepest first.
func MountsUnder(t testing.TB, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			out = append(out, fields[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(out)))
	return out
}

// UnmountUnder detaches every mount at or below dir (cleanup after a failure).
func UnmountUnder(t testing.TB, dir string) {
	for _, m := range MountsUnder(t, dir) {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			t.Logf("unmount %s: %v", m, err)
		}
	}
}
