package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	// stopGrace is how long a process gets to exit after SIGTERM.
	stopGrace = 10 * time.Second
	// killWait bounds the wait after SIGKILL; a process stuck in the kernel
	// (for example on a hung FUSE mount) must not hang Stop forever.
	killWait = 10 * time.Second
)

// Process is a child process started by the harness. It runs in its own
// process group with stdout and stderr appended to LogPath.
type Process struct {
	Name    string
	LogPath string

	cmd      *exec.Cmd
	done     chan struct{}
	err      error
	stopping atomic.Bool
	stopOnce sync.Once
}

func startProcess(name, logPath string, argv, env []string) (*Process, error) {
	if len(argv) == 0 {
		return nil, errors.New("empty argv")
	}
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	// The child gets its own copy of the descriptor; ours is only for the header.
	defer f.Close()
	fmt.Fprintf(f, "# %s: %s\n# started %s\n", name, strings.Join(argv, " "), time.Now().Format(time.RFC3339))

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Pid returns the process id, which is also its process group id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err returns the exit error once Done is closed.
func (p *Process) Err() error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

// exitedUnexpectedly reports whether the process died without Stop.
func (p *Process) exitedUnexpectedly() bool {
	select {
	case <-p.done:
		return !p.stopping.Load()
	default:
		return false
	}
}

// Stop sends SIGTERM to the process group, escalates to SIGKILL after a grace
// period and waits for the exit. It is idempotent and safe for concurrent use.
func (p *Process) Stop() {
	p.stopOnce.Do(func() {
		p.stopping.Store(true)
		pgid := p.Pid()
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(stopGrace):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			select {
			case <-p.done:
			case <-time.After(killWait):
				fmt.Fprintf(os.Stderr, "cluster: %s (pid %d) did not exit after SIGKILL\n", p.Name, pgid)
				return
			}
		}
		// Children the process left behind in its group.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	})
}
