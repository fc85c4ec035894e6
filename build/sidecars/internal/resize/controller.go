package resize

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

// Options configure a Controller.
type Options struct {
	Driver   string
	Client   kubernetes.Interface
	Expander Expander
	// SingleNodeMultiWriter: see CSIExpander.
	SingleNodeMultiWriter bool
	Recorder              record.EventRecorder
	// Timeout bounds each ControllerExpandVolume call.
	Timeout time.Duration
	// RetryStart and RetryMax bound the exponential backoff of a claim's
	// failed attempts.
	RetryStart, RetryMax time.Duration
	// Resync is the informers' resync period (0: none).
	Resync time.Duration
}

// Controller resizes the claims of one driver.
type Controller struct {
	o         Options
	factory   informers.SharedInformerFactory
	claims    corelisters.PersistentVolumeClaimLister
	synced    []cache.InformerSynced
	queue     workqueue.TypedRateLimitingInterface[string]
	finalErrs sync.Map // claim key → struct{}: last attempt ended with a final error
}

// New sets up the claim informer and the queue; Run starts them. PVs are
// not watched: a claim needs its PV only when its request exceeds its
// capacity, and then Sync reads it. A cache of every PV would decode every
// PV update of the cluster for the rare resize (issue 17: the resizer's
// CPU time while 1000 claims were provisioned, none resized).
func New(o Options) (*Controller, error) {
	c := &Controller{o: o}
	c.factory = informers.NewSharedInformerFactoryWithOptions(o.Client, o.Resync, informers.WithTransform(dropManagedFields))
	pvcInf := c.factory.Core().V1().PersistentVolumeClaims()
	c.claims = pvcInf.Lister()
	c.synced = []cache.InformerSynced{pvcInf.Informer().HasSynced}
	c.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](o.RetryStart, o.RetryMax),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "claims"})
	if _, err := pvcInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueue,
		UpdateFunc: c.updateClaim,
		DeleteFunc: func(obj any) {
			if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
				c.finalErrs.Delete(key)
			}
		},
	}); err != nil {
		return nil, fmt.Errorf("claim informer: %w", err)
	}
	return c, nil
}

// dropManagedFields keeps cached claims without their managedFields (one
// entry per writer), which the resizer never reads: every claim of the
// cluster is cached. Claims are patched from a fresh read, never from the
// cache.
func dropManagedFields(obj any) (any, error) {
	if o, ok := obj.(metav1.Object); ok {
		o.SetManagedFields(nil)
	}
	return obj, nil
}

func (c *Controller) enqueue(obj any) {
	if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
		c.queue.Add(key)
	}
}

// updateClaim queues a claim whose request changed, whose capacity grew,
// whose resize status changed to one not of ours (the kubelet's), or on a
// resync; not on the updates of our own in-progress mark.
func (c *Controller) updateClaim(oldObj, newObj any) {
	oldPVC, ok1 := oldObj.(*v1.PersistentVolumeClaim)
	newPVC, ok2 := newObj.(*v1.PersistentVolumeClaim)
	if !ok1 || !ok2 {
		return
	}
	oldReq, newReq := oldPVC.Spec.Resources.Requests[v1.ResourceStorage], newPVC.Spec.Resources.Requests[v1.ResourceStorage]
	oldCap, newCap := oldPVC.Status.Capacity[v1.ResourceStorage], newPVC.Status.Capacity[v1.ResourceStorage]
	oldSt, newSt := oldPVC.Status.AllocatedResourceStatuses[v1.ResourceStorage], newPVC.Status.AllocatedResourceStatuses[v1.ResourceStorage]
	switch {
	case oldReq.Cmp(newReq) != 0,
		newCap.Cmp(oldCap) > 0,
		oldSt != newSt && newSt != v1.PersistentVolumeClaimControllerResizeInProgress,
		oldPVC.Status.Phase != newPVC.Status.Phase,
		oldPVC.ResourceVersion == newPVC.ResourceVersion:
		c.enqueue(newObj)
	}
}

// Run starts the informers and workers and blocks until ctx ends.
func (c *Controller) Run(ctx context.Context, workers int) error {
	log := klog.FromContext(ctx)
	defer c.queue.ShutDown()
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return fmt.Errorf("claim and volume caches: %w", ctx.Err())
	}
	log.Info("Caches synced, starting workers", "driver", c.o.Driver, "workers", workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() { wait.UntilWithContext(ctx, c.worker, time.Second) })
	}
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
	return nil
}

func (c *Controller) worker(ctx context.Context) {
	for c.processNext(ctx) {
	}
}

func (c *Controller) processNext(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	log := klog.FromContext(ctx).WithValues("claim", key)
	if err := c.Sync(klog.NewContext(ctx, log), key); err != nil {
		log.Error(err, "Resize failed, will retry", "retries", c.queue.NumRequeues(key))
		c.queue.AddRateLimited(key)
		return true
	}
	c.queue.Forget(key)
	return true
}

// Sync resizes the claim named key (namespace/name) if it needs it. An
// error means: retry later.
func (c *Controller) Sync(ctx context.Context, key string) error {
	log := klog.FromContext(ctx)
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pvc, err := c.claims.PersistentVolumeClaims(ns).Get(name)
	if err != nil {
		return nil // deleted
	}
	// The controller-manager binds in two writes: volumeName first, then the
	// phase and capacity. In between the claim seems to ask for more than
	// its (empty) capacity: reading its PV then cost a GET per claim of every
	// burst (issue 17). A claim that is not Bound is decided without its PV.
	if pvc.Spec.VolumeName == "" || pvc.Status.Phase != v1.ClaimBound {
		return nil
	}
	// Most claims ask for no more than they have: decided without their PV.
	requested, capacity := pvc.Spec.Resources.Requests[v1.ResourceStorage], pvc.Status.Capacity[v1.ResourceStorage]
	if requested.Cmp(capacity) <= 0 {
		log.V(5).Info("No resize", "reason", "request within capacity")
		return nil
	}
	// A retry with backoff covers a PV not created yet.
	pv, err := c.o.Client.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("volume %s of the claim: %w", pvc.Spec.VolumeName, err)
	}
	_, finalErr := c.finalErrs.Load(key)
	plan := Decide(pvc, pv, c.o.Driver, finalErr)
	if !plan.Expand {
		log.V(5).Info("No resize", "reason", plan.Why)
		return nil
	}
	// The cache may lag behind our own last resize of this claim (an
	// unrelated update queued it meanwhile): decide again on the claim as
	// the API server has it. Resizes are rare; the read is cheap.
	pvc, err = c.o.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("read the claim: %w", err)
	}
	if plan = Decide(pvc, pv, c.o.Driver, finalErr); !plan.Expand {
		log.V(5).Info("No resize", "reason", plan.Why)
		return nil
	}
	return c.resize(ctx, key, pvc, pv, plan.Size)
}

func (c *Controller) resize(ctx context.Context, key string, pvc *v1.PersistentVolumeClaim, pv *v1.PersistentVolume, size resource.Quantity) error {
	log := klog.FromContext(ctx).WithValues("volume", pv.Name, "size", size.String())
	pvc, err := c.patchClaim(ctx, pvc, MarkInProgress(pvc, size), true)
	if err != nil {
		return fmt.Errorf("mark the claim Resizing: %w", err)
	}
	c.o.Recorder.Eventf(pvc, v1.EventTypeNormal, ReasonResizing, "External resizer is resizing volume %s", pv.Name)
	log.V(2).Info("Expanding volume")

	var secrets map[string]string
	if ref := pv.Spec.CSI.ControllerExpandSecretRef; ref != nil {
		s, err := c.o.Client.CoreV1().Secrets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return c.failed(ctx, key, pvc, pv, size, fmt.Errorf("controller-expand secret %s/%s: %w", ref.Namespace, ref.Name, err))
		}
		secrets = map[string]string{}
		for k, v := range s.Data {
			secrets[k] = string(v)
		}
	}
	vc, err := VolumeCapability(pv, c.o.SingleNodeMultiWriter)
	if err != nil {
		return c.failed(ctx, key, pvc, pv, size, err)
	}
	t0 := time.Now()
	cctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	got, nodeRequired, err := c.o.Expander.Expand(cctx, pv.Spec.CSI.VolumeHandle, size.Value(), secrets, vc)
	cancel()
	if err != nil {
		return c.failed(ctx, key, pvc, pv, size, err)
	}
	c.finalErrs.Delete(key)
	capacity := *resource.NewQuantity(got, resource.BinarySI)
	if got == 0 {
		capacity = size // the driver did not say: what we asked for
	}
	log.V(2).Info("Volume expanded", "capacity", capacity.String(), "nodeExpansionRequired", nodeRequired, "took", time.Since(t0).Round(time.Millisecond))

	if old := pv.Spec.Capacity[v1.ResourceStorage]; capacity.Cmp(old) > 0 {
		newPV := pv.DeepCopy()
		newPV.Spec.Capacity[v1.ResourceStorage] = capacity
		if _, err := c.patchVolume(ctx, pv, newPV); err != nil {
			return fmt.Errorf("update capacity of volume %s to %s: %w", pv.Name, capacity.String(), err)
		}
	}
	if nodeRequired {
		if _, err := c.patchClaim(ctx, pvc, MarkNodePending(pvc), true); err != nil {
			return fmt.Errorf("mark the claim FileSystemResizePending: %w", err)
		}
		c.o.Recorder.Event(pvc, v1.EventTypeNormal, ReasonFSResizeRequired, "Require file system resize of volume on node")
		return nil
	}
	if _, err := c.patchClaim(ctx, pvc, MarkFinished(pvc, capacity), true); err != nil {
		return fmt.Errorf("record capacity %s in the claim: %w", capacity.String(), err)
	}
	c.o.Recorder.Event(pvc, v1.EventTypeNormal, ReasonResizeSuccessful, "Resize volume succeeded")
	log.Info("Claim resized", "capacity", capacity.String())
	return nil
}

// failed records a failed attempt: an event always; for a final error the
// ControllerResizeError condition, and for an infeasible size
// ControllerResizeInfeasible and no retry. It returns the error to retry
// with, or nil.
func (c *Controller) failed(ctx context.Context, key string, pvc *v1.PersistentVolumeClaim, pv *v1.PersistentVolume, size resource.Quantity, err error) error {
	msg := fmt.Sprintf("resize of claim %s (volume %s) to %s failed: %s", klog.KObj(pvc).String(), pv.Name, size.String(), driverMessage(err))
	c.o.Recorder.Event(pvc, v1.EventTypeWarning, ReasonResizeFailed, msg)
	if !finalError(err) {
		c.finalErrs.Delete(key)
		return fmt.Errorf("%s: %w", msg, err)
	}
	infeasible := infeasibleError(err)
	if !infeasible {
		c.finalErrs.Store(key, struct{}{})
	}
	// Without a resourceVersion check: the failure is recorded even if the
	// claim changed meanwhile (a new request then starts over).
	if _, perr := c.patchClaim(ctx, pvc, MarkFailed(pvc, msg, infeasible), false); perr != nil {
		return fmt.Errorf("%s; recording it in the claim: %w", msg, perr)
	}
	if infeasible {
		klog.FromContext(ctx).Info("Resize infeasible, waiting for a new request", "error", err)
		return nil
	}
	return fmt.Errorf("%s: %w", msg, err)
}

// patchClaim patches the claim's status (and annotations) from old to new;
// with rvCheck the patch fails on a claim changed since old was read.
func (c *Controller) patchClaim(ctx context.Context, old, updated *v1.PersistentVolumeClaim, rvCheck bool) (*v1.PersistentVolumeClaim, error) {
	patch, err := twoWayPatch(old, updated, v1.PersistentVolumeClaim{}, rvCheck)
	if err != nil || patch == nil {
		return updated, err
	}
	return c.o.Client.CoreV1().PersistentVolumeClaims(old.Namespace).Patch(ctx, old.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
}

func (c *Controller) patchVolume(ctx context.Context, old, updated *v1.PersistentVolume) (*v1.PersistentVolume, error) {
	patch, err := twoWayPatch(old, updated, v1.PersistentVolume{}, false)
	if err != nil || patch == nil {
		return updated, err
	}
	return c.o.Client.CoreV1().PersistentVolumes().Patch(ctx, old.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
}

// twoWayPatch is the strategic merge patch from old to updated, nil if
// there is nothing to change.
func twoWayPatch(old, updated, schema any, rvCheck bool) ([]byte, error) {
	ob, err := json.Marshal(old)
	if err != nil {
		return nil, err
	}
	nb, err := json.Marshal(updated)
	if err != nil {
		return nil, err
	}
	patch, err := strategicpatch.CreateTwoWayMergePatch(ob, nb, schema)
	if err != nil {
		return nil, fmt.Errorf("patch: %w", err)
	}
	if string(patch) == "{}" {
		return nil, nil
	}
	if !rvCheck {
		return patch, nil
	}
	var m map[string]any
	if err := json.Unmarshal(patch, &m); err != nil {
		return nil, err
	}
	meta, _ := m["metadata"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		m["metadata"] = meta
	}
	meta["resourceVersion"] = old.(metav1.Object).GetResourceVersion()
	return json.Marshal(m)
}
