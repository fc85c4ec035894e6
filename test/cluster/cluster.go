// Package cluster runs a real, local Kubernetes control plane for tests, e2e
// runs, demos and benchmarks: etcd, kube-apiserver (token authentication and
// RBAC), kube-controller-manager, kube-scheduler and kwok, which simulates
// nodes and marks their pods Running without running containers.
//
// The binaries come from hack/build-tools.sh, which builds them once into a
// cache outside the repository. Every process runs in its own process group,
// logs to LogDir and dies with the harness.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
)

// ErrNoBinaries is wrapped by Start's error when the control-plane binaries
// can be neither found nor built.
var ErrNoBinaries = errors.New("cluster: control-plane binaries not available")

// startTimeout bounds bringing the control plane up (not building binaries).
const startTimeout = 3 * time.Minute

// Options configures Start. The zero value is a cluster with one node.
type Options struct {
	// BinDir holds etcd, kube-apiserver, kube-controller-manager,
	// kube-scheduler, kwok and optionally kubectl. Empty means $CARVE_TOOLS_BIN,
	// else the directory printed by hack/build-tools.sh, which builds on a miss.
	BinDir string
	// Nodes is the number of kwok nodes Start creates, named kwok-node-0,
	// kwok-node-1, ...; 0 means 1 and a negative value means none.
	Nodes int
	// LogDir receives one <name>.log per process; empty means Dir/logs.
	LogDir string
	// KeepLogs keeps Dir after Stop even if nothing failed.
	KeepLogs bool
	// Logf reports progress; nil means klog.Infof.
	Logf func(format string, args ...any)
	// NoSignalHandler stops Start from installing a SIGINT/SIGTERM handler
	// that stops every running cluster and then re-raises the signal.
	NoSignalHandler bool
	// ControllerManagerArgs are extra kube-controller-manager flags, e.g. its
	// client rate limits for benchmarks.
	ControllerManagerArgs []string
}

// Cluster is a running control plane. Its exported fields are read-only.
type Cluster struct {
	// Dir is the temporary work directory (certificates, tokens, kubeconfigs,
	// etcd data, default LogDir).
	Dir string
	// LogDir holds <name>.log for every process.
	LogDir string
	// BinDir is where the binaries were found.
	BinDir string
	// Server is the API server URL, https://127.0.0.1:<port>.
	Server string
	// Kubeconfig is the path of a kubeconfig for the admin user
	// (group system:masters).
	Kubeconfig string
	// RESTConfig and Client authenticate as the admin user.
	RESTConfig *rest.Config
	Client     kubernetes.Interface

	logf    func(format string, args ...any)
	opts    Options
	caData  []byte // API server serving certificate bundle
	kubectl string

	etcd, apiserver, controllerManager, scheduler, kwok *Process

	mu        sync.Mutex
	extra     []*Process
	realNodes []*RealNode
	stopped   bool
	failed    bool
	stopOnce  sync.Once
}

// Start brings up a control plane and returns when the API server is ready,
// the controllers have created the default ServiceAccount, the scheduler is
// healthy and opts.Nodes nodes are Ready. Missing binaries are built first,
// outside Start's own start-up timeout; a cold build takes 10-20 minutes,
// so CI should run hack/build-tools.sh beforehand.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	logf := opts.Logf
	if logf == nil {
		logf = klog.Infof
	}
	binDir, err := findBinaries(ctx, opts.BinDir, logf)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoBinaries, err)
	}
	dir, err := os.MkdirTemp("", "carve-cluster-")
	if err != nil {
		return nil, fmt.Errorf("cluster: work dir: %w", err)
	}
	c := &Cluster{Dir: dir, LogDir: opts.LogDir, BinDir: binDir, logf: logf, opts: opts}
	if c.LogDir == "" {
		c.LogDir = filepath.Join(dir, "logs")
	}
	c.kubectl = filepath.Join(binDir, "kubectl")
	if _, err := os.Stat(c.kubectl); err != nil {
		c.kubectl = "kubectl" // from PATH; only Apply and Kubectl need it
	}
	register(c, !opts.NoSignalHandler)
	defer func() {
		if err != nil {
			c.MarkFailed()
			c.Stop()
			err = fmt.Errorf("cluster: %w (logs in %s)", err, c.LogDir)
		}
	}()

	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	t0 := time.Now()
	if err := c.start(ctx); err != nil {
		return nil, err
	}
	n := opts.Nodes
	if n == 0 {
		n = 1
	}
	for i := 0; i < n; i++ {
		if err := c.AddNode(ctx, fmt.Sprintf("kwok-node-%d", i)); err != nil {
			return nil, err
		}
	}
	logf("cluster: ready in %s: %s, kubeconfig %s", time.Since(t0).Round(time.Millisecond), c.Server, c.Kubeconfig)
	return c, nil
}

// MarkFailed makes Stop keep Dir and print where the logs are.
func (c *Cluster) MarkFailed() {
	c.mu.Lock()
	c.failed = true
	c.mu.Unlock()
}

// Stop stops every process (extra processes and clients first, then the API
// server, then etcd) and removes Dir unless the run failed, a control-plane
// process died, or KeepLogs is set. It is idempotent, safe for concurrent use
// and called by the signal handler.
func (c *Cluster) Stop() {
	c.stopOnce.Do(c.stop)
}

func (c *Cluster) stop() {
	unregister(c)
	c.mu.Lock()
	c.stopped = true
	extra := c.extra
	realNodes := c.realNodes
	c.mu.Unlock()

	for _, p := range c.coreProcesses() {
		if p.exitedUnexpectedly() {
			c.logf("cluster: %s exited unexpectedly (%v), see %s", p.Name, p.Err(), p.LogPath)
			c.MarkFailed()
		}
	}
	// Real nodes first: their teardown deletes pods through the API.
	for i := len(realNodes) - 1; i >= 0; i-- {
		realNodes[i].Stop()
	}
	// Clients first so they do not log errors about a vanished API server.
	stopAll(append(extra, c.kwok, c.scheduler, c.controllerManager))
	stopAll([]*Process{c.apiserver})
	stopAll([]*Process{c.etcd})

	c.mu.Lock()
	keep := c.failed || c.opts.KeepLogs
	c.mu.Unlock()
	if !keep {
		if err := os.RemoveAll(c.Dir); err != nil {
			c.logf("cluster: remove %s: %v", c.Dir, err)
		}
		return
	}
	// etcd preallocates a 64 MB WAL that is useless for debugging.
	_ = os.RemoveAll(filepath.Join(c.Dir, "etcd"))
	c.logf("cluster: stopped; logs kept in %s", c.LogDir)
}

func (c *Cluster) coreProcesses() []*Process {
	var ps []*Process
	for _, p := range []*Process{c.etcd, c.apiserver, c.controllerManager, c.scheduler, c.kwok} {
		if p != nil {
			ps = append(ps, p)
		}
	}
	return ps
}

func stopAll(ps []*Process) {
	var wg sync.WaitGroup
	for _, p := range ps {
		if p == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.Stop()
		}()
	}
	wg.Wait()
}

// StartProcess runs argv (argv[0] is the program) with env added to the
// harness's environment, logging to LogDir/<name>.log (appended to on
// restart). Stop stops it before the control plane; Process.Stop stops it
// earlier. Pass Kubeconfig or ServiceAccountKubeconfig's path in argv or env.
func (c *Cluster) StartProcess(name string, argv []string, env []string) (*Process, error) {
	if name == "" || strings.ContainsAny(name, `/\`) {
		return nil, fmt.Errorf("cluster: invalid process name %q", name)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil, fmt.Errorf("cluster: start %s: cluster is stopped", name)
	}
	p, err := startProcess(name, filepath.Join(c.LogDir, name+".log"), argv, env)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	c.extra = append(c.extra, p)
	return p, nil
}

// checkAlive fails if a control-plane process has died, so waits end early
// with a pointer to the right log instead of timing out.
func (c *Cluster) checkAlive() error {
	for _, p := range c.coreProcesses() {
		if p.exitedUnexpectedly() {
			return fmt.Errorf("%s exited: %v (see %s)", p.Name, p.Err(), p.LogPath)
		}
	}
	return nil
}
