// Package glusterd runs a real GlusterFS management daemon for tests and
// creates volumes, quotas and FUSE mounts on it.
//
// glusterd is a host singleton (fixed port 24007, /var/run/glusterd.socket,
// state in /var/lib/glusterd), so clusters are serialized host-wide with a
// file lock: parallel test packages queue instead of failing. A glusterd that
// is already running is reused and left running; otherwise the fixture starts
// one and, at the end, stops it together with every volume, brick process and
// mount that appeared while it ran.
//
// The state directory cannot be moved to a temporary one: the gluster CLI
// reads /var/lib/glusterd/vols/VOL/quota.conf itself for `volume quota VOL
// list`, which then reports "No quota configured" for any other directory.
package glusterd

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/carve-csi/carve/internal/hostlock"
	"github.com/carve-csi/carve/internal/testenv/internal/realenv"
)

const (
	// AptPackages are the Debian packages providing the binaries used here.
	AptPackages = "glusterfs-server glusterfs-client"
	// SocketPath is glusterd's CLI socket; the gluster CLI uses it by default.
	SocketPath = "/var/run/glusterd.socket"

	// Marker prefixes of the fixture's temporary directories. With the host
	// lock held no other fixture is alive, so volumes and mounts using such
	// paths are leftovers of a crashed run and are removed at start.
	brickRootPrefix = "carve-glusterd-bricks-"
	mountDirPrefix  = "carve-glusterd-mnt-"

	defaultStartTimeout = 60 * time.Second
	commandTimeout      = 2 * time.Minute
	stopGrace           = 15 * time.Second
)

// ErrUnavailable is wrapped by errors caused by a missing prerequisite (not
// root, binaries not installed).
var ErrUnavailable = realenv.ErrUnavailable

// ErrNotOwned is returned by StopGlusterd and RestartGlusterd when glusterd
// was already running before the fixture and so is not the fixture's to stop.
var ErrNotOwned = errors.New("glusterd was not started by this fixture")

// Options configures StartCluster.
type Options struct {
	// WorkDir receives glusterd's log when the fixture starts it. If empty,
	// a temporary directory is created and removed by Close.
	WorkDir string
	// StartTimeout bounds the wait for glusterd to answer; 60s if zero.
	StartTimeout time.Duration
	// Logf, if set, receives progress messages (lock waits, timings).
	Logf func(format string, args ...any)
}

// Cluster is a single-node trusted pool on this host.
type Cluster struct {
	host       string
	owned      bool
	workDir    string
	ownWorkDir bool
	logPath    string
	outPath    string
	brickRoot  string
	timeout    time.Duration
	logf       func(format string, args ...any)
	lock       *hostlock.Lock

	// Snapshots taken at start, to clean up what appeared afterwards.
	initialVolumes map[string]bool
	initialProcs   map[int]bool
	initialMounts  map[string]bool
	initialRun     map[string]bool // files in RunDir

	mu     sync.Mutex // guards proc and closed
	proc   *realenv.Process
	closed bool
}

// Check reports whether a cluster can be started here; the error wraps
// ErrUnavailable and names the apt packages to install.
func Check() error {
	return realenv.Check(AptPackages, "glusterd", "gluster", "glusterfs", "mount.glusterfs")
}

// Start returns a running cluster for the life of the test and registers its
// shutdown with t.Cleanup. It skips the test if root or the binaries are
// missing, or fails it instead when CARVE_REQUIRE_REAL=1.
func Start(t testing.TB) *Cluster {
	t.Helper()
	c, err := StartCluster(t.Context(), Options{WorkDir: t.TempDir(), Logf: t.Logf})
	if err != nil {
		realenv.SkipOrFatal(t, err)
	}
	t.Cleanup(func() {
		if t.Failed() && c.owned {
			t.Logf("glusterd log tail (%s):\n%s", c.logPath, realenv.Tail(c.logPath, 30))
		}
		if err := c.Close(); err != nil {
			t.Errorf("close glusterd fixture: %v", err)
		}
	})
	return c
}

// StartCluster reuses the running glusterd or starts one, and returns once
// `gluster pool list` answers. The caller must call Close. ctx bounds the
// wait for the host lock and the start-up, not the cluster's lifetime.
func StartCluster(ctx context.Context, opts Options) (*Cluster, error) {
	return startCluster(ctx, opts)
}

// startCluster has a named error result for its cleanup-on-failure defer.
func startCluster(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if err := Check(); err != nil {
		return nil, err
	}
	host, err := os.Hostname()
	if err != nil {
		return nil, fmt.Errorf("glusterd: hostname: %w", err)
	}
	// Bricks need a host name that resolves to this host: the CLI rejects
	// localhost and 127.0.0.1.
	if _, err := net.DefaultResolver.LookupHost(ctx, host); err != nil {
		return nil, fmt.Errorf("glusterd: hostname %q does not resolve (add it to /etc/hosts): %w", host, err)
	}
	c := &Cluster{
		host:    host,
		workDir: opts.WorkDir,
		timeout: opts.StartTimeout,
		logf:    opts.Logf,
	}
	if c.timeout == 0 {
		c.timeout = defaultStartTimeout
	}
	if c.logf == nil {
		c.logf = func(string, ...any) {}
	}
	if c.workDir == "" {
		if c.workDir, err = os.MkdirTemp("", "carve-glusterd-"); err != nil {
			return nil, fmt.Errorf("glusterd: work dir: %w", err)
		}
		c.ownWorkDir = true
	}
	c.logPath = filepath.Join(c.workDir, "glusterd.log")
	c.outPath = filepath.Join(c.workDir, "glusterd.out")
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()

	if c.lock, err = hostlock.AcquireLock(ctx, hostlock.LockPath("glusterd"), c.logf); err != nil {
		return nil, fmt.Errorf("glusterd: %w", err)
	}

	started := time.Now()
	if socketAnswers() {
		c.logf("glusterd: reusing the glusterd already running on this host")
	} else {
		c.owned = true
		if c.initialProcs, err = glusterProcesses(); err != nil {
			return nil, fmt.Errorf("glusterd: %w", err)
		}
		// No glusterd runs, so its aux mounts are a killed run's leftovers.
		if err := c.unmountStaleAux(ctx); err != nil {
			return nil, fmt.Errorf("glusterd: %w", err)
		}
		if c.initialRun, err = runFiles(); err != nil {
			return nil, fmt.Errorf("glusterd: %w", err)
		}
		if err := c.startDaemon(ctx); err != nil {
			return nil, err
		}
	}
	if err := c.waitReady(ctx); err != nil {
		return nil, err
	}
	if c.owned {
		c.logf("glusterd: started, ready after %s (log %s)", time.Since(started).Round(time.Millisecond), c.logPath)
	}

	if err := c.removeLeftovers(ctx); err != nil {
		return nil, fmt.Errorf("glusterd: remove leftovers of earlier runs: %w", err)
	}
	vols, err := c.volumes(ctx)
	if err != nil {
		return nil, fmt.Errorf("glusterd: %w", err)
	}
	c.initialVolumes = map[string]bool{}
	for _, v := range vols {
		c.initialVolumes[v.Name] = true
	}
	mounts, err := glusterMounts()
	if err != nil {
		return nil, fmt.Errorf("glusterd: %w", err)
	}
	c.initialMounts = map[string]bool{}
	for _, m := range mounts {
		c.initialMounts[m] = true
	}
	if c.brickRoot, err = os.MkdirTemp("", brickRootPrefix); err != nil {
		return nil, fmt.Errorf("glusterd: brick root: %w", err)
	}
	return c, nil
}

// socketAnswers reports whether a glusterd listens on SocketPath. A stale
// socket file left by a stopped glusterd refuses connections.
func socketAnswers() bool {
	conn, err := net.DialTimeout("unix", SocketPath, time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

func (c *Cluster) startDaemon(ctx context.Context) error {
	p, err := realenv.StartProcess(c.outPath, "glusterd", "--no-daemon", "-l", c.logPath)
	if err != nil {
		return fmt.Errorf("glusterd: %w", err)
	}
	c.mu.Lock()
	c.proc = p
	c.mu.Unlock()
	return nil
}

// waitReady polls `gluster pool list` until it works, glusterd exits, or the
// start timeout expires.
func (c *Cluster) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	c.mu.Lock()
	p := c.proc
	c.mu.Unlock()
	var exited <-chan struct{} // nil (never ready) for a reused glusterd
	if p != nil {
		exited = p.Exited()
	}
	for {
		actx, acancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := realenv.Run(actx, "gluster", "--mode=script", "pool", "list")
		acancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("glusterd: exited during start-up: %v%s", p.ExitErr(), c.logTail())
		case <-ctx.Done():
			return fmt.Errorf("glusterd: `gluster pool list` did not succeed within %s: %w (last error: %v)%s",
				c.timeout, ctx.Err(), err, c.logTail())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *Cluster) logTail() string {
	if !c.owned {
		return ""
	}
	return fmt.Sprintf("\nglusterd output:\n%s\nglusterd log tail (%s):\n%s",
		realenv.Tail(c.outPath, 10), c.logPath, realenv.Tail(c.logPath, 30))
}

// Close removes what the cluster created and, if the fixture started
// glusterd, stops it together with the volumes, brick/self-heal/quota
// daemons and glusterfs mounts that appeared since. It releases the host
// lock. It is safe to call more than once.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var errs []error
	if c.initialVolumes != nil {
		if c.owned {
			if err := c.ensureRunning(ctx); err != nil {
				errs = append(errs, err)
			}
			// Unmount first: clients of stopped volumes would hang.
			mounts, err := glusterMounts()
			if err != nil {
				errs = append(errs, err)
			}
			for _, m := range mounts {
				if !c.initialMounts[m] {
					c.logf("glusterd: unmounting %s, left mounted by the test", m)
					errs = append(errs, unmount(ctx, m))
				}
			}
		}
		vols, err := c.volumes(ctx)
		if err != nil {
			errs = append(errs, err)
		}
		for _, v := range vols {
			// Without ownership only volumes on our own bricks are ours.
			if c.initialVolumes[v.Name] || !c.owned && !v.hasBrickUnder(c.brickRoot) {
				continue
			}
			c.logf("glusterd: deleting volume %s, left behind by the test", v.Name)
			errs = append(errs, c.deleteVolume(ctx, v.Name))
		}
	}
	if c.owned {
		if err := c.stopDaemon(); err != nil {
			errs = append(errs, err)
		}
		if c.initialProcs != nil {
			errs = append(errs, c.killNewProcesses())
		}
		if c.initialRun != nil {
			errs = append(errs, c.removeNewRunFiles())
		}
	}
	if c.brickRoot != "" {
		if err := os.RemoveAll(c.brickRoot); err != nil {
			errs = append(errs, fmt.Errorf("remove brick root: %w", err))
		}
	}
	if err := c.lock.Unlock(); err != nil {
		errs = append(errs, err)
	}
	if c.ownWorkDir {
		if err := os.RemoveAll(c.workDir); err != nil {
			errs = append(errs, fmt.Errorf("remove work dir: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Host returns the host name used in brick specs and mount sources (the
// output of `hostname`).
func (c *Cluster) Host() string { return c.host }

// Owned reports whether the fixture started glusterd (and so may stop it).
func (c *Cluster) Owned() bool { return c.owned }

// LogPath returns glusterd's log file when the fixture started it. Brick,
// mount and quotad logs are under /var/log/glusterfs.
func (c *Cluster) LogPath() string { return c.logPath }

// BrickRoot returns a temporary directory for bricks, removed by Close.
// Volumes with bricks under it are deleted by Close even when glusterd was
// reused, so code under test may create its bricks here.
func (c *Cluster) BrickRoot() string { return c.brickRoot }

// Gluster runs `gluster --mode=script ARGS...` and returns its stdout. With
// --xml among the arguments, a non-zero <opRet> is an error too: the CLI
// exits 0 for some failures in XML mode. Without a deadline in ctx, the
// command is limited to two minutes.
func (c *Cluster) Gluster(ctx context.Context, args ...string) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, commandTimeout)
		defer cancel()
	}
	out, err := realenv.Run(ctx, "gluster", append([]string{"--mode=script"}, args...)...)
	if err != nil {
		return out, err
	}
	if slices.Contains(args, "--xml") {
		var res cliResult
		if err := xml.Unmarshal(out, &res); err != nil {
			return out, fmt.Errorf("gluster %s: parse XML output: %w", strings.Join(args, " "), err)
		}
		if res.OpRet != 0 {
			return out, fmt.Errorf("gluster %s: opRet %d, opErrno %d: %s",
				strings.Join(args, " "), res.OpRet, res.OpErrno, res.OpErrstr)
		}
	}
	return out, nil
}

// MustGluster is Gluster for tests: it fails t on error and returns stdout.
func (c *Cluster) MustGluster(t testing.TB, args ...string) string {
	t.Helper()
	// Not t.Context(): that is cancelled before cleanups, which may call this.
	out, err := c.Gluster(context.Background(), args...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// RequireOwned ends the test unless the fixture started glusterd itself, as
// failure injection (StopGlusterd, RestartGlusterd) needs: it skips, or
// fails under CARVE_REQUIRE_REAL=1.
func (c *Cluster) RequireOwned(t testing.TB) {
	t.Helper()
	if !c.owned {
		realenv.SkipOrFatal(t, fmt.Errorf("%w: glusterd was already running on this host, "+
			"so the fixture may not stop it; stop it to run this test", ErrUnavailable))
	}
}

// StopGlusterd stops the fixture's glusterd, for failure-injection tests.
// Brick processes and mounts keep running, as when glusterd crashes; the
// gluster CLI fails until RestartGlusterd.
func (c *Cluster) StopGlusterd() error {
	if !c.owned {
		return ErrNotOwned
	}
	return c.stopDaemon()
}

// RestartGlusterd (re)starts the fixture's glusterd and waits until it
// answers. The new glusterd reconnects to the running bricks.
func (c *Cluster) RestartGlusterd() error {
	if !c.owned {
		return ErrNotOwned
	}
	if err := c.stopDaemon(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	return c.ensureRunning(ctx)
}

// ensureRunning restarts an owned glusterd that was stopped by StopGlusterd
// or has died, so that cleanups can still use the CLI.
func (c *Cluster) ensureRunning(ctx context.Context) error {
	if !c.owned {
		return nil
	}
	c.mu.Lock()
	p := c.proc
	c.mu.Unlock()
	if p != nil {
		select {
		case <-p.Exited():
			c.logf("glusterd: had exited (%v); restarting it", p.ExitErr())
		default:
			return nil
		}
	}
	start := time.Now()
	if err := c.startDaemon(ctx); err != nil {
		return err
	}
	if err := c.waitReady(ctx); err != nil {
		return err
	}
	c.logf("glusterd: restarted, ready after %s", time.Since(start).Round(time.Millisecond))
	return nil
}

func (c *Cluster) stopDaemon() error {
	c.mu.Lock()
	p := c.proc
	c.proc = nil
	c.mu.Unlock()
	if p == nil {
		return nil
	}
	// glusterd runs hook scripts asynchronously (e.g. after volume delete);
	// stopping it first would orphan them.
	waitForChildren(p.Cmd.Process.Pid, 15*time.Second)
	if err := p.Stop(stopGrace); err != nil {
		return fmt.Errorf("stop glusterd: %w", err)
	}
	return nil
}

// cliResult is the common envelope of `gluster ... --xml` output.
type cliResult struct {
	OpRet    int    `xml:"opRet"`
	OpErrno  int    `xml:"opErrno"`
	OpErrstr string `xml:"opErrstr"`
}
