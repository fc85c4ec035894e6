// Package hostlock holds the host-wide lock files that tests starting
// host-global parts (nfs-ganesha, glusterd, a real node) take, so two test
// processes never run one of them at once.
package hostlock

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

// LockPath returns the path of the host-wide lock file for name. /run is
// preferred because it does not depend on TMPDIR, which may differ between
// test processes that must see the same lock.
func LockPath(name string) string {
	dir := "/run"
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() || syscall.Access(dir, 2 /* W_OK */) != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "carve-"+name+".lock")
}

// Lock is an exclusive flock(2) on a file. It is released by Unlock or when
// the process dies, so a crashed test never leaves it held.
type Lock struct {
	f *os.File
}

// AcquireLock takes an exclusive lock on path, waiting until ctx is done.
// flock locks belong to the open file description, so two acquisitions in
// the same process exclude each other too. logf, if not nil, is told once
// when the lock is busy and who holds it.
func AcquireLock(ctx context.Context, path string, logf func(format string, args ...any)) (*Lock, error) {
	// Go opens files with O_CLOEXEC, so daemons started while the lock is
	// held do not inherit it.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	start := time.Now()
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
		if !told && logf != nil {
			holder, _ := os.ReadFile(path)
			logf("waiting for host lock %s, held by %s", path, strings.TrimSpace(string(holder)))
			told = true
		}
		select {
		case <-ctx.Done():
			holder, _ := os.ReadFile(path)
			f.Close()
			return nil, fmt.Errorf("waited %s for host lock %s (held by %s): %w",
				time.Since(start).Round(time.Millisecond), path, strings.TrimSpace(string(holder)), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	if told && logf != nil {
		logf("acquired host lock %s after %s", path, time.Since(start).Round(time.Millisecond))
	}
	// Record the holder to make waits in other processes diagnosable.
	exe, _ := os.Executable()
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(fmt.Sprintf("pid %d (%s) since %s\n", os.Getpid(), exe, time.Now().Format(time.RFC3339))), 0)
	return &Lock{f: f}, nil
}

// Unlock releases the lock. It is safe to call more than once.
func (l *Lock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	_ = l.f.Truncate(0)
	err := syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	if err != nil {
		return fmt.Errorf("unlock: %w", err)
	}
	return nil
}
