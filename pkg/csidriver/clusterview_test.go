package csidriver

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/carve-csi/carve/pkg/kubeview"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/volid"
)

// liveVolume is a carve CSI PV of ns/data whose claim exists.
func liveVolume() (*v1.PersistentVolume, *v1.PersistentVolumeClaim) {
	pvc := &v1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "data", UID: "uid-a"}}
	pv := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pvc-a"},
		Spec: v1.PersistentVolumeSpec{
			ClaimRef: &v1.ObjectReference{Namespace: "ns", Name: "data", UID: "uid-a"},
			PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{
				Driver: kubeview.DriverName, VolumeHandle: idOn(params.OnDeleteDelete, "ns", "data"),
			}},
		},
	}
	return pv, pvc
}

// A standby replica gets no calls and watches nothing; the first call that
// needs the view starts it and waits for the sync, during which /readyz is
// not ready; the synced view then keeps a live volume's directory from
// being handed out again.
func TestLazyViewStartsOnFirstCall(t *testing.T) {
	pv, pvc := liveVolume()
	client := fake.NewClientset(pv, pvc)
	var block atomic.Bool
	release := make(chan struct{})
	client.PrependReactor("list", "persistentvolumes", func(k8stesting.Action) (bool, runtime.Object, error) {
		if block.Load() {
			<-release
		}
		return false, nil, nil
	})
	ctx, cancel := context.WithCancel(t.Context())
	view := newLazyView(ctx, client, 0)
	t.Cleanup(func() { cancel(); view.shutdown() })
	if err := view.waitAccess(ctx, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, view)
	if view.started() {
		t.Fatal("the view started before any call needed it")
	}
	if err := h.d.checkView(ctx); err != nil {
		t.Fatalf("a replica without calls is not ready: %v", err)
	}
	if n := len(client.Actions()); n != 2 {
		t.Errorf("%d API calls before the first CSI call, want the 2 access checks: %v", n, client.Actions())
	}

	block.Store(true)
	p := classParams("onDelete", "delete")
	type result struct {
		resp *csi.CreateVolumeResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := h.d.controller.CreateVolume(h.ctx, createReq("pvc-a", 1, claim(p, "ns", "data", "pvc-a")))
		done <- result{resp, err}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !view.started() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if !view.started() {
		t.Fatal("CreateVolume did not start the view")
	}
	if err := h.d.checkView(ctx); !errors.Is(err, errNotSynced) {
		t.Errorf("/readyz check while syncing: %v, want %v", err, errNotSynced)
	}
	select {
	case r := <-done:
		t.Fatalf("CreateVolume returned before the view synced: %v, %v", r.resp, r.err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if r := <-done; r.err != nil {
		t.Fatalf("CreateVolume: %v", r.err)
	}
	if err := h.d.checkView(ctx); err != nil {
		t.Errorf("/readyz check after the sync: %v", err)
	}
	_, err := h.d.controller.CreateVolume(h.ctx, createReq("pvc-b", 1, claim(p, "ns", "data", "pvc-b")))
	wantCode(t, err, codes.FailedPrecondition, "in use by PersistentVolume pvc-a")
	// Claims are read, never watched: csi-provisioner already caches them.
	for _, a := range client.Actions() {
		if a.GetResource().Resource == "persistentvolumeclaims" && (a.GetVerb() == "watch" || a.GetVerb() == "list" && !isAccessCheck(a)) {
			t.Errorf("the view %ss claims: %v", a.GetVerb(), a)
		}
	}
}

// isAccessCheck: waitAccess's list of at most one claim.
func isAccessCheck(a k8stesting.Action) bool {
	l, ok := a.(k8stesting.ListActionImpl)
	return ok && l.ListOptions.Limit == 1
}

// A PV's claim is read from the API server: gone or replaced (another UID)
// is not live, and a claim that cannot be read fails the call instead of
// counting as gone.
func TestLazyViewReadsClaims(t *testing.T) {
	pv, pvc := liveVolume()
	client := fake.NewClientset(pv, pvc)
	var failGet atomic.Bool
	client.PrependReactor("get", "persistentvolumeclaims", func(k8stesting.Action) (bool, runtime.Object, error) {
		if failGet.Load() {
			return true, nil, apierrors.NewServiceUnavailable("etcd is away")
		}
		return false, nil, nil
	})
	ctx, cancel := context.WithCancel(t.Context())
	view := newLazyView(ctx, client, 0)
	t.Cleanup(func() { cancel(); view.shutdown() })
	id, err := volid.Parse(pv.Spec.CSI.VolumeHandle)
	if err != nil {
		t.Fatal(err)
	}
	live := func() (bool, error) {
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		defer ccancel()
		refs, err := view.Referrers(cctx, id.Location())
		if err != nil {
			return false, err
		}
		if len(refs) != 1 || refs[0].PV != "pvc-a" {
			t.Fatalf("referrers of %s: %+v, want pvc-a", id.Location(), refs)
		}
		return refs[0].Live, nil
	}
	if l, err := live(); err != nil || !l {
		t.Errorf("claim exists: live %v, %v; want live", l, err)
	}
	failGet.Store(true)
	if l, err := live(); err == nil || !strings.Contains(err.Error(), "etcd is away") {
		t.Errorf("claim unreadable: live %v, err %v; want the error", l, err)
	}
	failGet.Store(false)
	replaced := pvc.DeepCopy()
	replaced.UID = "uid-b"
	if _, err := client.CoreV1().PersistentVolumeClaims("ns").Update(ctx, replaced, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if l, err := live(); err != nil || l {
		t.Errorf("claim replaced: live %v, %v; want not live", l, err)
	}
	if err := client.CoreV1().PersistentVolumeClaims("ns").Delete(ctx, "data", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if l, err := live(); err != nil || l {
		t.Errorf("claim deleted: live %v, %v; want not live", l, err)
	}
}

// A call whose deadline passes before the caches sync fails, retryably,
// instead of deciding on a partial view.
func TestLazyViewCallTimesOutUnsynced(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("list", "persistentvolumes", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(v1.Resource("persistentvolumes"), "", errors.New("no RBAC"))
	})
	ctx, cancel := context.WithCancel(t.Context())
	view := newLazyView(ctx, client, 0)
	t.Cleanup(func() { cancel(); view.shutdown() })
	actx, acancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer acancel()
	if err := view.waitAccess(actx, 10*time.Millisecond); err == nil {
		t.Fatal("waitAccess succeeded without the right to list PersistentVolumes")
	}
	cctx, ccancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer ccancel()
	if _, err := view.Referrers(cctx, "x"); !errors.Is(err, errNotSynced) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Referrers on an unsynced view: %v", err)
	}
}
