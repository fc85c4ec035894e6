// Package benchfig keeps what carve's benchmarks share: the host's load
// average, given with every figure, and the report files make bench
// collects in bin/bench at the repository's root.
package benchfig

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
