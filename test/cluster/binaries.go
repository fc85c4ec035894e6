package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
)

// requiredBinaries must all be in BinDir; kubectl is optional.
var requiredBinaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}

// builtBinDir caches the build script's answer for the life of the process.
var (
	buildMu     sync.Mutex
	builtBinDir string
)

// findBinaries returns a directory holding requiredBinaries: dir, else
// $CARVE_TOOLS_BIN, else the output of hack/build-tools.sh.
func findBinaries(ctx context.Context, dir string, logf func(string, ...any)) (string, error) {
	if dir == "" {
		dir = os.Getenv("CARVE_TOOLS_BIN")
	}
	if dir != "" {
		return dir, checkBinaries(dir)
	}

	buildMu.Lock()
	defer buildMu.Unlock()
	if builtBinDir != "" {
		return builtBinDir, nil
	}
	script, err := findBuildScript()
	if err != nil {
		return "", err
	}
	logf("cluster: running %s (a cold build takes 10-20 minutes on 2 cores)", script)
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Stderr = os.Stderr // build progress
	// Cancel must stop the go builds the script runs, not only bash.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w", script, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	dir = strings.TrimSpace(lines[len(lines)-1])
	if err := checkBinaries(dir); err != nil {
		return "", err
	}
	builtBinDir = dir
	return dir, nil
}

// BinDir returns the directory of the binaries Start uses (kubectl among
// them), for tests that need only a binary: $CARVE_TOOLS_BIN, else
// hack/build-tools.sh's, which builds on a miss. Its error wraps ErrNoBinaries.
func BinDir(ctx context.Context, logf func(string, ...any)) (string, error) {
	dir, err := findBinaries(ctx, "", logf)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNoBinaries, err)
	}
	return dir, nil
}

func checkBinaries(dir string) error {
	for _, b := range requiredBinaries {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return fmt.Errorf("binary %s: %w", b, err)
		}
	}
	return nil
}

// findBuildScript is hack/build-tools.sh of the repository (RepoRoot).
func findBuildScript() (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", fmt.Errorf("%w; set CARVE_TOOLS_BIN or Options.BinDir", err)
	}
	return filepath.Join(root, "hack", "build-tools.sh"), nil
}

// RepoRoot returns the repository's root, the directory holding
// hack/build-tools.sh, found above the working directory (go test runs in
// the package directory) or above this source file.
func RepoRoot() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		starts = append(starts, filepath.Dir(file))
	}
	for _, d := range starts {
		for {
			if _, err := os.Stat(filepath.Join(d, "hack", "build-tools.sh")); err == nil {
				return d, nil
			}
			parent := filepath.Dir(d)
			if parent == d {
				break
			}
			d = parent
		}
	}
	return "", errors.New("hack/build-tools.sh not found above the working directory")
}
