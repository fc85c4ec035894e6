// Package realenv holds the plumbing shared by the real-server test fixtures
// (ganesha, glusterd): prerequisite checks, the skip-or-fail policy, host-wide
// locks, command execution and log tails.
package realenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// RequireRealEnv is the environment variable that turns skips into failures.
// CI sets it so that a missing prerequisite cannot silently skip real tests.
const RequireRealEnv = "CARVE_REQUIRE_REAL"

// ErrUnavailable marks errors caused by a missing prerequisite (not root, a
// binary not installed) rather than by a failure of the server itself.
var ErrUnavailable = errors.New("real test environment unavailable")

// RequireReal reports whether CARVE_REQUIRE_REAL=1 is set.
func RequireReal() bool { return os.Getenv(RequireRealEnv) == "1" }

// Check verifies that the process runs as root and that every binary is on
// PATH. The returned error wraps ErrUnavailable and names the apt packages.
func Check(aptPackages string, binaries ...string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: must run as root (euid %d)", ErrUnavailable, os.Geteuid())
	}
	var missing []string
	for _, b := range binaries {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s not found in PATH; install with: apt-get install -y %s",
			ErrUnavailable, strings.Join(missing, ", "), aptPackages)
	}
	return nil
}

// SkipOrFatal ends the test for a fixture start error: a missing prerequisite
// skips it (fails it under CARVE_REQUIRE_REAL=1); any other error fails it.
func SkipOrFatal(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, ErrUnavailable) && !RequireReal() {
		t.Skipf("skipping real-server test: %v (set %s=1 to fail instead)", err, RequireRealEnv)
	}
	t.Fatal(err)
}

// Run executes name with args under ctx and returns its stdout. The error
// names the command and includes its exit status and trimmed stderr.
func Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	// Commands such as mount.glusterfs or rpcbind leave daemons behind that
	// may inherit the output pipes; do not wait for those to close them.
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if err != nil && !errors.Is(err, exec.ErrWaitDelay) {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return stdout.Bytes(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
	}
	return stdout.Bytes(), nil
}

// Tail returns the last n lines of the file at path, or a note saying why it
// could not be read.
func Tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Process is a long-running daemon started by a fixture.
type Process struct {
	Cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// StartProcess starts a daemon that must stay in the foreground. It uses
// exec.Command, not CommandContext: the daemon outlives the start-up context
// and is stopped explicitly with Stop. stdout and stderr go to outPath.
func StartProcess(outPath, name string, args ...string) (*Process, error) {
	out, err := os.OpenFile(outPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open output file: %w", err)
	}
	defer out.Close()
	cmd := exec.Command(name, args...)
	cmd.Stdout = out
	cmd.Stderr = out
	// If the test binary dies without running cleanups (timeout panic,
	// SIGKILL), take the daemon down with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Exited returns a channel closed once the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.done }

// ExitErr returns the process's exit error; valid once Exited is closed.
func (p *Process) ExitErr() error { return p.err }

// Stop sends SIGTERM, waits up to grace, then SIGKILLs and waits again.
func (p *Process) Stop(grace time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal pid %d: %w", p.Cmd.Process.Pid, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	_ = p.Cmd.Process.Kill()
	select {
	case <-p.done:
		return fmt.Errorf("pid %d ignored SIGTERM for %s and was killed", p.Cmd.Process.Pid, grace)
	case <-time.After(10 * time.Second):
		return fmt.Errorf("pid %d did not exit after SIGKILL", p.Cmd.Process.Pid)
	}
}
