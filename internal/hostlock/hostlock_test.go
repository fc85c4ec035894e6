package hostlock

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func TestLockExcludesWithinProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "test.lock")
	l1, err := AcquireLock(context.Background(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	var told bool
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = AcquireLock(ctx, path, func(string, ...any) { told = true })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second AcquireLock: err = %v, want a deadline error", err)
	}
	if !told {
		t.Error("waiting for a busy lock was not logged")
	}
	if err := l1.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := l1.Unlock(); err != nil {
		t.Fatalf("second Unlock: %v", err)
	}
	l2, err := AcquireLock(context.Background(), path, nil)
	if err != nil {
		t.Fatalf("AcquireLock after Unlock: %v", err)
	}
	l2.Unlock()
}
