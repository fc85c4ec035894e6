// Package sanitytest holds what the csi-sanity runs (NFS, Gluster) share:
// waiting for the driver's socket and checking nothing is left behind.
package sanitytest

import (
	"bufio"
	"context"
	"net"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
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

// Address returns a csi-sanity address for a unix socket, with the dial
// option it needs. csi-test's Connect reads the connection's state once after
// grpc.Dial and then waits for it to change: a connection already Ready at
// that read never changes again and the spec fails with "Connection timed
// out" a minute later (seen on busy machines). Addressing the socket through
// grpc's passthrough resolver with a dialer that waits a moment before
// connecting makes that first read see Idle or Connecting.
func Address(sock string) (string, grpc.DialOption) {
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if !strings.HasPrefix(addr, "/") {
			addr = "/" + addr
		}
		var d net.Dialer
		return d.DialContext(ctx, "unix", addr)
	}
	return "passthrough:///" + strings.TrimPrefix(sock, "/"), grpc.WithContextDialer(dial)
}
