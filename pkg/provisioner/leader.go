package provisioner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"
)

// The lib's defaults (v10), so replicas of older and newer carve builds
// agree on one Lease.
const (
	leaseDuration = 15 * time.Second
	renewDeadline = 10 * time.Second
	retryPeriod   = 2 * time.Second
)

// errLostLease: another replica may be working now, so this one must stop.
var errLostLease = errors.New("lost the leader election Lease")

// leaseName is the Lease the lib names after the provisioner.
func leaseName(provisioner string) string { return strings.ReplaceAll(provisioner, "/", "-") }

// leaseNamespace is where the lib keeps the Lease when none is given.
func leaseNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	if data, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err == nil {
		if ns := strings.TrimSpace(string(data)); ns != "" {
			return ns
		}
	}
	return "default"
}

// leaderIdentity names this process in the Lease. Inside a pod that passes
// its UID (POD_UID from the downward API) the identity is the pod's: a pod's
// UID is never reused, and the kubelet starts a container again only after
// the previous one has exited, so a process that finds its own identity
// holding the Lease knows its predecessor is dead and renews the Lease at
// once (client-go's elector treats a Lease held by its own identity as its
// own) instead of waiting 15 s for it to expire after a crash. Any other
// process (another pod, a node failure, a force-deleted pod still running on
// a lost node) has a different UID and waits for expiry as before. Without
// POD_UID every start is a new identity: the safe default when nothing
// proves that the previous holder of a name is gone.
func leaderIdentity() (string, error) {
	host, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("leader election identity: %w", err)
	}
	if uid := os.Getenv("POD_UID"); uid != "" {
		if pod := os.Getenv("POD_NAME"); pod != "" {
			host = pod
		}
		return host + "_" + uid, nil
	}
	return host + "_" + string(uuid.NewUUID()), nil
}

// lead runs work while this process holds the Lease, and hands the Lease
// over when work returns after ctx ends. The lib's own election never
// releases it, so after every rolling update the new replica waited out the
// whole lease (10-15 s measured with 10,000 PVs) before it provisioned
// anything. stopped must return once no provisioning or deletion is running
// any more: only then is the Lease released, so two replicas never work at
// once. The lease is the lib's (same name, namespace and timings), so
// replicas of older builds still exclude this one. An error means the Lease
// was lost while working.
func lead(ctx context.Context, client kubernetes.Interface, namespace, name, id string, work func(context.Context), stopped func()) error {
	logger := klog.FromContext(ctx)
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, namespace, name,
		client.CoreV1(), client.CoordinationV1(), resourcelock.ResourceLockConfig{Identity: id})
	if err != nil {
		return fmt.Errorf("leader election lock: %w", err)
	}
	// The election outlives ctx while this replica works, so the Lease is
	// renewed until the work has stopped.
	electCtx, stopElection := context.WithCancel(context.WithoutCancel(ctx))
	defer stopElection()
	var leading atomic.Bool
	var worked sync.WaitGroup
	worked.Add(1)
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   leaseDuration,
		RenewDeadline:   renewDeadline,
		RetryPeriod:     retryPeriod,
		ReleaseOnCancel: true,
		Name:            name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(leaderCtx context.Context) {
				defer worked.Done()
				leading.Store(true)
				logger.Info("Became the leader", "lease", klog.KRef(namespace, name), "identity", id)
				workCtx, cancel := context.WithCancel(ctx)
				defer cancel()
				defer context.AfterFunc(leaderCtx, cancel)()
				work(workCtx)
				stopped()
				stopElection()
			},
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	// A replica that is not leading stops trying at once.
	defer context.AfterFunc(ctx, func() {
		if !leading.Load() {
			stopElection()
		}
	})()
	le.Run(electCtx)
	if !leading.Load() {
		return nil
	}
	worked.Wait()
	if ctx.Err() == nil {
		return errLostLease
	}
	logger.Info("Released the leader election Lease", "lease", klog.KRef(namespace, name))
	return nil
}

// opGate counts the Provision and Delete calls in progress; once closed it
// refuses new ones and waits for those running.
type opGate struct {
	mu      sync.Mutex
	closed  bool
	running sync.WaitGroup
}

var errStopping = errors.New("the provisioner is stopping")

func (g *opGate) enter() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return errStopping
	}
	g.running.Add(1)
	return nil
}

func (g *opGate) leave() { g.running.Done() }

func (g *opGate) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.running.Wait()
}
