package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The host-wide lock convention of internal/testenv's real-server fixtures
// (/run/carve-<name>.lock, flock), repeated here because that package is
// internal to internal/testenv. A real node holds "realnode" for its whole
// life: bridges, ip_forward, cgroups and the kubelet's fixed paths are
// host-global.

func hostLockPath(name string) string {
	dir := "/run"
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() || syscall.Access(dir, 2 /* W_OK */) != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "carve-"+name+".lock")
}

type hostLock struct{ f *os.File }

func acquireHostLock(ctx context.Context, name string, logf func(string, ...any)) (*hostLock, error) {
	path := hostLockPath(name)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	told := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("flock %s: %w", path, err)
		}
		if !told {
			holder, _ := os.ReadFile(path)
			logf("cluster: waiting for host lock %s, held by %s", path, strings.TrimSpace(string(holder)))
			told = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("host lock %s: %w", path, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	exe, _ := os.Executable()
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(fmt.Sprintf("pid %d (%s) since %s\n", os.Getpid(), exe, time.Now().Format(time.RFC3339))), 0)
	return &hostLock{f: f}, nil
}

func (l *hostLock) unlock() {
	if l == nil || l.f == nil {
		return
	}
	_ = l.f.Truncate(0)
	_ = syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	_ = l.f.Close()
	l.f = nil
}
