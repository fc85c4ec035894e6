package gluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/sshexec"
)

// ErrCommand marks a failure the gluster CLI reported that carve has no
// more specific meaning for; the message carries Gluster's own words.
var ErrCommand = errors.New("gluster command failed")

// Executor runs the gluster CLI on a member of the trusted pool: the
// management commands carve needs (create, set, quota) work only through
// glusterd's local socket, so "remote" means running the CLI over there.
type Executor interface {
	// Run runs `gluster ARGS...` and returns its stdout. A command that ran
	// but exited non-zero returns its stdout and a *RunError: the CLI may
	// still have written an XML failure report worth reading.
	Run(ctx context.Context, args []string) ([]byte, error)
}

// HostRunner is implemented by executors that can run an arbitrary command
// on a given pool host (ssh); volume mode uses it to remove brick
// directories, which Gluster leaves behind on `volume delete`.
type HostRunner interface {
	RunOn(ctx context.Context, host string, argv []string) ([]byte, error)
}

// RunError is a command that could not run or exited non-zero
// (Unreachable: the pool could not be reached at all).
type RunError = sshexec.RunError

func run(ctx context.Context, argv []string, describe string) ([]byte, error) {
	return sshexec.Run(ctx, argv, describe)
}

// LocalExecutor runs the gluster CLI on this host, talking to glusterd
// through its unix socket (on Kubernetes: a hostPath mount of it).
type LocalExecutor struct {
	// Socket is glusterd's CLI socket; "" means the CLI's default
	// (/var/run/glusterd.socket).
	Socket string
	// Command is the CLI binary; "" means "gluster" from PATH.
	Command string
	// OneShot runs every command in a CLI process of its own instead of
	// through a session (see session.go): slower, kept as a fallback and
	// for comparison.
	OneShot bool

	sessions sessions
}

// DefaultSocket is where glusterd listens for the CLI by default.
const DefaultSocket = "/var/run/glusterd.socket"

// Run implements Executor.
func (e *LocalExecutor) Run(ctx context.Context, args []string) ([]byte, error) {
	sock := e.Socket
	if sock == "" {
		sock = DefaultSocket
	}
	if _, err := os.Stat(sock); err != nil {
		return nil, &RunError{Command: "gluster " + strings.Join(args, " "), ExitCode: -1, Unreachable: true,
			Err: fmt.Errorf("glusterd socket %s: %w (is glusterd running on this host, or is its socket mounted here?)", sock, err)}
	}
	bin := e.Command
	if bin == "" {
		bin = "gluster"
	}
	argv := []string{bin}
	if e.Socket != "" {
		argv = append(argv, "--glusterd-sock="+e.Socket)
	}
	if words, ok := sessionCommand(args); ok && !e.OneShot {
		alive := func() bool {
			c, err := net.DialTimeout("unix", sock, time.Second)
			if err == nil {
				c.Close()
			}
			return err == nil
		}
		out, err := e.sessions.run(ctx, append(argv, "--mode=script", "--xml"), words, alive)
		if err == nil || !errors.Is(err, errSessionLost) {
			if err != nil {
				err = &RunError{Command: "gluster " + strings.Join(args, " "), ExitCode: -1, Unreachable: true, Err: err}
			}
			return out, err
		}
		klog.FromContext(ctx).V(2).Info("Running the gluster command on its own", "args", words, "reason", err)
	}
	argv = append(argv, args...)
	return run(ctx, argv, "gluster "+strings.Join(args, " "))
}

// Close ends the executor's CLI session, if one runs; it would end by
// itself after a while without commands.
func (e *LocalExecutor) Close() { e.sessions.close() }

func (e *LocalExecutor) String() string { return "glusterd on this host" }

// SSHExecutor runs the gluster CLI on pool members over ssh, trying Hosts in
// order until one answers.
type SSHExecutor struct{ *sshexec.Executor }

// SSHCredentials are what an executor Secret holds.
type SSHCredentials = sshexec.Credentials

// Secret keys read by SSHCredentialsFromSecret.
const (
	SecretKeyUser       = sshexec.SecretKeyUser
	SecretKeyPrivateKey = sshexec.SecretKeyPrivateKey
	SecretKeyKnownHosts = sshexec.SecretKeyKnownHosts
)

// SSHCredentialsFromSecret reads a Secret's data: ssh-privatekey (required),
// username (default root) and known_hosts (optional).
func SSHCredentialsFromSecret(data map[string][]byte) (SSHCredentials, error) {
	return sshexec.CredentialsFromSecret(data)
}

// NewSSHExecutor writes the key (and known_hosts) into dir, private to
// this process, and returns an executor for hosts.
func NewSSHExecutor(hosts []string, cred SSHCredentials, dir string) (*SSHExecutor, error) {
	e, err := sshexec.New(hosts, cred, dir)
	if err != nil {
		return nil, err
	}
	return &SSHExecutor{e}, nil
}

// Run implements Executor: `gluster ARGS` on the first host that answers.
func (e *SSHExecutor) Run(ctx context.Context, args []string) ([]byte, error) {
	var errs []error
	for _, h := range e.Hosts {
		out, err := e.RunOn(ctx, h, append([]string{"gluster"}, args...))
		var re *RunError
		if err != nil && errors.As(err, &re) && re.Unreachable && ctx.Err() == nil {
			klog.FromContext(ctx).V(2).Info("Gluster server unreachable over ssh; trying the next", "host", h, "err", err)
			errs = append(errs, err)
			continue
		}
		return out, err
	}
	return nil, &RunError{Command: "ssh gluster " + strings.Join(args, " "), ExitCode: -1, Unreachable: true, Err: errors.Join(errs...)}
}

// CLI runs gluster management commands on one trusted pool, one at a time:
// glusterd takes a cluster-wide lock per transaction and fails concurrent
// ones with "Another transaction is in progress".
type CLI struct {
	exec  Executor
	where string
	mu    *sync.Mutex
	// Timeout bounds each command when ctx has no deadline.
	Timeout time.Duration
	// BusyRetries and BusyBackoff retry commands failing because another
	// client (an administrator, another tool) holds glusterd's lock.
	BusyRetries int
	BusyBackoff time.Duration
}

// NewCLI returns a CLI over exec. mu serializes calls to the same pool;
// nil gives the CLI its own.
func NewCLI(exec Executor, mu *sync.Mutex) *CLI {
	if mu == nil {
		mu = &sync.Mutex{}
	}
	where := "the gluster pool"
	if s, ok := exec.(fmt.Stringer); ok {
		where = s.String()
	}
	return &CLI{exec: exec, where: where, mu: mu, Timeout: 2 * time.Minute, BusyRetries: 5, BusyBackoff: time.Second}
}

// Executor returns the CLI's executor.
func (c *CLI) Executor() Executor { return c.exec }

// CommandError is a gluster command that failed.
type CommandError struct {
	Args    []string
	Where   string
	OpRet   int
	OpErrno int
	// Message is Gluster's explanation (opErrstr, or stderr without XML).
	Message string
	kind    error
}

func (e *CommandError) Error() string {
	return fmt.Sprintf("gluster %s (via %s) failed: %s (opRet %d, opErrno %d)",
		strings.Join(e.Args, " "), e.Where, e.Message, e.OpRet, e.OpErrno)
}

// Unwrap returns the backend sentinel (ErrNotFound, ErrBusy, ErrUnavailable)
// or ErrCommand.
func (e *CommandError) Unwrap() error { return e.kind }

var (
	reNoVolume = regexp.MustCompile(`(?i)^volume (\S+ )?does not exist`)
	reBusy     = regexp.MustCompile(`(?i)another transaction is in progress|locking failed|lock(ing)? .* failed|is busy|transaction .* in progress`)
	reDown     = regexp.MustCompile(`(?i)connection failed|daemon is operational|cannot connect|not connected|transport endpoint`)
)

// classify maps Gluster's message to a backend sentinel.
func classify(msg string) error {
	switch {
	case reNoVolume.MatchString(strings.TrimSpace(msg)):
		return backend.ErrNotFound
	case reBusy.MatchString(msg):
		return backend.ErrBusy
	case reDown.MatchString(msg):
		return backend.ErrUnavailable
	}
	return ErrCommand
}

// Run runs `gluster --mode=script --xml ARGS...` and returns the parsed
// output of a successful command. Failures, including those the CLI
// reports with exit code 0, are errors wrapping a backend sentinel:
// ErrUnavailable (glusterd or the host unreachable), ErrNotFound (no such
// volume), ErrBusy (glusterd's lock stayed taken), else ErrCommand.
func (c *CLI) Run(ctx context.Context, args ...string) (*Output, error) {
	if _, ok := ctx.Deadline(); !ok && c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	logger := klog.FromContext(ctx)
	for attempt := 0; ; attempt++ {
		out, err := c.runOnce(ctx, args)
		if err == nil || !errors.Is(err, backend.ErrBusy) || attempt >= c.BusyRetries {
			return out, err
		}
		wait := c.BusyBackoff << attempt
		logger.V(2).Info("glusterd is busy with another transaction; retrying", "args", args, "wait", wait, "err", err)
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
	}
}

func (c *CLI) runOnce(ctx context.Context, args []string) (*Output, error) {
	// "--" ends the CLI's own options: no argument (a volume name, a path)
	// can then read as one, however it is spelt.
	full := append([]string{"--mode=script", "--xml", "--"}, args...)
	c.mu.Lock()
	start := time.Now()
	stdout, runErr := c.exec.Run(ctx, full)
	c.mu.Unlock()
	logger := klog.FromContext(ctx)
	logger.V(4).Info("Ran gluster", "args", args, "via", c.where, "duration", time.Since(start), "err", runErr)

	out, perr := Parse(stdout)
	if perr == nil {
		if out.OpRet == 0 {
			if out.OpErrstr != "" {
				// e.g. a forced create reusing a brick: done, but worth a note.
				logger.Info("gluster succeeded with a warning", "args", args, "warning", out.OpErrstr)
			}
			return out, nil
		}
		msg := out.OpErrstr
		if msg == "" {
			msg = out.Message
		}
		if msg == "" {
			msg = "no reason given"
		}
		return out, &CommandError{Args: args, Where: c.where, OpRet: out.OpRet, OpErrno: out.OpErrno, Message: msg, kind: classify(msg)}
	}

	var re *RunError
	switch {
	case runErr == nil:
		// Exit 0 without a report: never assume success.
		return nil, fmt.Errorf("%w: gluster %s (via %s): %w", ErrCommand, strings.Join(args, " "), c.where, perr)
	case errors.As(runErr, &re) && re.Unreachable:
		return nil, fmt.Errorf("%w: cannot run the gluster CLI via %s: %v; check that glusterd runs and that carve can reach it (executor settings)",
			backend.ErrUnavailable, c.where, runErr)
	}
	// Without --xml support for the failure, the CLI explains on stderr or,
	// e.g. for "Connection failed", on stdout.
	msg := ""
	if re != nil {
		msg = re.Stderr
	}
	if msg == "" {
		msg = strings.TrimSpace(string(stdout))
	}
	if msg == "" {
		msg = runErr.Error()
	}
	kind := classify(msg)
	if kind == backend.ErrUnavailable {
		return nil, fmt.Errorf("%w: glusterd is not answering (%s, via %s): start or repair glusterd; carve retries",
			backend.ErrUnavailable, firstLine(msg), c.where)
	}
	return nil, &CommandError{Args: args, Where: c.where, OpRet: -1, OpErrno: -1, Message: msg, kind: kind}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// VolumeInfo returns one volume; ErrNotFound when it does not exist.
func (c *CLI) VolumeInfo(ctx context.Context, name string) (*Volume, error) {
	out, err := c.Run(ctx, "volume", "info", name)
	if err != nil {
		if errors.Is(err, backend.ErrNotFound) {
			return nil, fmt.Errorf("%w: Gluster volume %q does not exist (%v)", backend.ErrNotFound, name, err)
		}
		return nil, err
	}
	for i := range out.Volumes {
		if out.Volumes[i].Name == name {
			return &out.Volumes[i], nil
		}
	}
	return nil, fmt.Errorf("%w: gluster volume info %s answered without that volume", ErrMalformed, name)
}

// QuotaList returns the quota limits of a volume (or of one path). A volume
// without limits gives an empty list.
func (c *CLI) QuotaList(ctx context.Context, volume string, paths ...string) ([]QuotaLimit, error) {
	out, err := c.Run(ctx, append([]string{"volume", "quota", volume, "list"}, paths...)...)
	var ce *CommandError
	if errors.As(err, &ce) && strings.Contains(ce.Message, "No quota configured") {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return out.Limits, nil
}

// LocalUUID returns the UUID of the glusterd the CLI talks to.
func (c *CLI) LocalUUID(ctx context.Context) (string, error) {
	out, err := c.Run(ctx, "system::", "uuid", "get")
	if err != nil {
		return "", err
	}
	if out.UUID == "" {
		return "", fmt.Errorf("%w: system:: uuid get returned no uuid", ErrMalformed)
	}
	return out.UUID, nil
}
