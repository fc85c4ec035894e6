package csidriver

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/carve-csi/carve/pkg/kubeview"
	"github.com/carve-csi/carve/pkg/volume"
)

// errNotSynced: a call needed the cluster view before its cache synced.
var errNotSynced = errors.New("the PersistentVolume cache has not synced")

// apiClaims looks claims up on the API server (kubeview.ClaimLookup).
type apiClaims struct{ client kubernetes.Interface }

func (a apiClaims) ClaimUID(ctx context.Context, namespace, name string) (types.UID, bool, error) {
	pvc, err := a.client.CoreV1().PersistentVolumeClaims(namespace).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return "", false, nil
	case err != nil:
		return "", false, fmt.Errorf("get claim %s/%s: %w", namespace, name, err)
	}
	return pvc.UID, true, nil
}

// lazyView is the cluster view (kubeview.ClusterView) of the controller,
// started by the first call that needs it. Only the replica whose
// csi-provisioner leads is sent CreateVolume and DeleteVolume; a standby's
// informers would only decode every PV and claim update of the cluster
// (issue 17: as much CPU as the leader's carving). A call waits, within
// its deadline, until the PV cache has synced: no directory is handed out
// or deleted on a partial view.
//
// Only PVs are cached. A claim is read from the API server when a PV
// points at a directory being decided on (a delete, a re-attach; a new
// claim's fresh directory has none), so the leader does not decode every
// claim update of the cluster a second time beside csi-provisioner's own
// claim cache (issue 17): a few GETs against about five watch events per
// claim. A GET also sees a claim the moment it exists, where a cache lags.
type lazyView struct {
	client kubernetes.Interface
	resync time.Duration

	mu      sync.Mutex
	runCtx  context.Context // the process's: the informers run until it ends
	factory informers.SharedInformerFactory
	view    *kubeview.ClusterView
	synced  chan struct{} // closed when the PV cache has synced
}

var _ volume.Referrers = (*lazyView)(nil)

func newLazyView(ctx context.Context, client kubernetes.Interface, resync time.Duration) *lazyView {
	return &lazyView{client: client, resync: resync, runCtx: ctx}
}

// waitAccess blocks until this process may list PersistentVolumes and
// claims (the view watches PVs and reads claims; the RBAC grants claims'
// get with list), retrying every interval: a replica that could never
// build its view must not report ready.
func (l *lazyView) waitAccess(ctx context.Context, interval time.Duration) error {
	logged := false
	return wait.PollUntilContextCancel(ctx, interval, true, func(ctx context.Context) (bool, error) {
		_, err := l.client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{Limit: 1})
		if err == nil {
			_, err = l.client.CoreV1().PersistentVolumeClaims("").List(ctx, metav1.ListOptions{Limit: 1})
		}
		if err != nil && !logged {
			klog.FromContext(ctx).Info("Cannot list PersistentVolumes and claims yet, retrying", "err", err)
			logged = true
		}
		return err == nil, nil
	})
}

// start builds and starts the informers once; it returns the channel that
// closes when they have synced.
func (l *lazyView) start() (<-chan struct{}, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.synced != nil {
		return l.synced, nil
	}
	factory := kubeview.NewInformerFactory(l.client, l.resync)
	view, err := kubeview.NewClusterViewLookup(
		factory.Core().V1().PersistentVolumes().Informer(), apiClaims{l.client})
	if err != nil {
		return nil, err
	}
	l.factory, l.view, l.synced = factory, view, make(chan struct{})
	log := klog.FromContext(l.runCtx)
	log.Info("First call that needs the cluster view: starting the PersistentVolume cache")
	factory.Start(l.runCtx.Done())
	go func(synced chan struct{}) {
		t0 := time.Now()
		for typ, ok := range factory.WaitForCacheSync(l.runCtx.Done()) {
			if !ok {
				log.Info("Cache did not sync before shutdown", "type", typ)
				return
			}
		}
		log.Info("PersistentVolume cache synced", "took", time.Since(t0).Round(time.Millisecond))
		close(synced)
	}(l.synced)
	return l.synced, nil
}

// get returns the synced view, starting it if needed and waiting for it
// within ctx.
func (l *lazyView) get(ctx context.Context) (*kubeview.ClusterView, error) {
	synced, err := l.start()
	if err != nil {
		return nil, err
	}
	select {
	case <-synced:
		return l.view, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", errNotSynced, context.Cause(ctx))
	}
}

// Referrers implements volume.Referrers.
func (l *lazyView) Referrers(ctx context.Context, location string) ([]volume.Ref, error) {
	v, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	return v.Referrers(ctx, location)
}

// Nested implements volume.Referrers.
func (l *lazyView) Nested(ctx context.Context, location string) ([]volume.Ref, error) {
	v, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	return v.Nested(ctx, location)
}

// ready is the /readyz check: not ready while started caches are syncing.
// Before the first call a replica is ready: waitAccess has shown the view
// can be built, and the call that builds it waits for the sync.
func (l *lazyView) ready(context.Context) error {
	l.mu.Lock()
	synced := l.synced
	l.mu.Unlock()
	if synced == nil {
		return nil
	}
	select {
	case <-synced:
		return nil
	default:
		return errNotSynced
	}
}

// started reports whether a call has started the informers (tests).
func (l *lazyView) started() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.synced != nil
}

// shutdown waits for the informers' goroutines after the process's
// context has ended.
func (l *lazyView) shutdown() {
	l.mu.Lock()
	f := l.factory
	l.mu.Unlock()
	if f != nil {
		f.Shutdown()
	}
}

// checkView is the controller's /readyz check of its cluster view.
func (d *Driver) checkView(ctx context.Context) error {
	if l, ok := d.cfg.Referrers.(*lazyView); ok {
		return l.ready(ctx)
	}
	return nil
}
