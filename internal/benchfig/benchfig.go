// Package benchfig keeps what carve's benchmarks share: the host's load
// average, given with every figure, and the report files make bench
// collects in bin/bench at the repository's root.
package benchfig

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Load is the host's load average as /proc/loadavg gives it, "unknown"
// where there is none.
func Load() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(data))
}

// Write replaces bin/bench/NAME under the repository's root with text. A
// failure is logged, not fatal: the figures are also in the benchmark's output.
func Write(tb testing.TB, name, text string) {
	tb.Helper()
	root, err := repoRoot()
	if err != nil {
		tb.Log(err)
		return
	}
	dir := filepath.Join(root, "bin", "bench")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Log(err)
		return
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
		tb.Log(err)
	}
}

// repoRoot is the nearest directory above the working directory (a test's
// package directory) whose go.mod is carve's main module.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			bytes.HasPrefix(data, []byte("module github.com/carve-csi/carve\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", os.ErrNotExist
		}
		dir = parent
	}
}

// Settle waits until the host's CPUs were at most busy (a share, 0-1) busy
// over a whole second, or for at most limit, and returns the last second's
// busy share and the time waited. A benchmark that compares runs one after
// another starts each from a host as quiet as the last: the previous
// run's teardown and this run's start-up otherwise land in its figures.
func Settle(ctx context.Context, busy float64, limit time.Duration) (float64, time.Duration) {
	start := time.Now()
	last := 1.0
	t0, i0, ok := cpuTimes()
	for ok && time.Since(start) < limit && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
		t1, i1, ok1 := cpuTimes()
		if !ok1 || t1 == t0 {
			break
		}
		last = 1 - float64(i1-i0)/float64(t1-t0)
		if last <= busy {
			break
		}
		t0, i0 = t1, i1
	}
	return last, time.Since(start)
}

// cpuTimes reads the total and idle (idle and iowait) jiffies of all CPUs
// from /proc/stat.
func cpuTimes() (total, idle uint64, ok bool) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, false
	}
	line, _, _ := bytes.Cut(data, []byte("\n"))
	fields := strings.Fields(string(line))
	if len(fields) < 6 || fields[0] != "cpu" {
		return 0, 0, false
	}
	// user nice system idle iowait irq softirq steal; guest time is
	// already counted in user and nice.
	for i, f := range fields[1:min(len(fields), 9)] {
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return 0, 0, false
		}
		total += v
		if i == 3 || i == 4 {
			idle += v
		}
	}
	return total, idle, true
}
