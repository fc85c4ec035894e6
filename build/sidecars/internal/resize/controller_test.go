package resize

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2/ktesting"
)

// fakeExpander answers ControllerExpandVolume with its fields.
type fakeExpander struct {
	mu         sync.Mutex
	calls      []*csi.ControllerExpandVolumeRequest
	err        error // returned while set
	nodeExpand bool
}

func (f *fakeExpander) Expand(_ context.Context, id string, bytes int64, secrets map[string]string, vc *csi.VolumeCapability) (int64, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, &csi.ControllerExpandVolumeRequest{VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: bytes}, Secrets: secrets, VolumeCapability: vc})
	if f.err != nil {
		return 0, false, f.err
	}
	return bytes, f.nodeExpand, nil
}

func (f *fakeExpander) numCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

type harness struct {
	t        *testing.T
	ctx      context.Context
	client   *fake.Clientset
	exp      *fakeExpander
	recorder *record.FakeRecorder
}

func start(t *testing.T, exp *fakeExpander, objs ...*v1.PersistentVolumeClaim) *harness {
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	client := fake.NewClientset()
	h := &harness{t: t, ctx: ctx, client: client, exp: exp, recorder: record.NewFakeRecorder(100)}
	if _, err := client.CoreV1().PersistentVolumes().Create(ctx, volume("1Gi"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c, err := New(Options{Driver: testDriver, Client: client, Expander: exp, Recorder: h.recorder,
		Timeout: time.Second, RetryStart: 10 * time.Millisecond, RetryMax: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx, 2) }()
	t.Cleanup(func() { cancel(); <-done })
	return h
}

func (h *harness) createClaim(pvc *v1.PersistentVolumeClaim) {
	if _, err := h.client.CoreV1().PersistentVolumeClaims(pvc.Namespace).Create(h.ctx, pvc, metav1.CreateOptions{}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) waitClaim(what string, cond func(*v1.PersistentVolumeClaim) bool) *v1.PersistentVolumeClaim {
	h.t.Helper()
	var last *v1.PersistentVolumeClaim
	err := wait.PollUntilContextTimeout(h.ctx, 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		pvc, err := h.client.CoreV1().PersistentVolumeClaims("ns").Get(ctx, "data", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = pvc
		return cond(pvc), nil
	})
	if err != nil {
		h.t.Fatalf("waiting for %s: %v; claim status %+v", what, err, last.Status)
	}
	return last
}

func (h *harness) events() []string {
	var out []string
	for {
		select {
		case e := <-h.recorder.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func hasEvent(events []string, prefix string) bool {
	for _, e := range events {
		if strings.HasPrefix(e, prefix) {
			return true
		}
	}
	return false
}

func TestResizeSucceeds(t *testing.T) {
	h := start(t, &fakeExpander{})
	h.createClaim(claim("2Gi", "1Gi"))
	pvc := h.waitClaim("capacity 2Gi", func(p *v1.PersistentVolumeClaim) bool {
		c := p.Status.Capacity[v1.ResourceStorage]
		return c.Cmp(resource.MustParse("2Gi")) == 0
	})
	if len(pvc.Status.Conditions) != 0 || pvc.Status.AllocatedResourceStatuses != nil {
		t.Errorf("conditions %v, statuses %v: want none", pvc.Status.Conditions, pvc.Status.AllocatedResourceStatuses)
	}
	if a := pvc.Status.AllocatedResources[v1.ResourceStorage]; a.String() != "2Gi" {
		t.Errorf("allocatedResources %s", a.String())
	}
	pv, err := h.client.CoreV1().PersistentVolumes().Get(h.ctx, "pv-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := pv.Spec.Capacity[v1.ResourceStorage]; c.String() != "2Gi" {
		t.Errorf("PV capacity %s", c.String())
	}
	h.exp.mu.Lock()
	req := h.exp.calls[0]
	h.exp.mu.Unlock()
	if req.GetVolumeId() != "vol-1" || req.GetCapacityRange().GetRequiredBytes() != 2<<30 ||
		req.GetVolumeCapability().GetMount().GetFsType() != "ext4" ||
		req.GetVolumeCapability().GetAccessMode().GetMode() != csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER {
		t.Errorf("request %v", req)
	}
	time.Sleep(200 * time.Millisecond)
	if n := h.exp.numCalls(); n != 1 {
		t.Errorf("%d ControllerExpandVolume calls, want 1", n)
	}
	ev := h.events()
	if !hasEvent(ev, "Normal VolumeResizeSuccessful") || !hasEvent(ev, "Normal Resizing") {
		t.Errorf("events %q", ev)
	}
}

func TestResizeNodeExpansionRequired(t *testing.T) {
	h := start(t, &fakeExpander{nodeExpand: true})
	h.createClaim(claim("2Gi", "1Gi"))
	pvc := h.waitClaim("NodeResizePending", func(p *v1.PersistentVolumeClaim) bool {
		return p.Status.AllocatedResourceStatuses[v1.ResourceStorage] == v1.PersistentVolumeClaimNodeResizePending
	})
	if got := conditionTypes(pvc); len(got) != 1 || got[0] != v1.PersistentVolumeClaimFileSystemResizePending {
		t.Errorf("conditions %v", got)
	}
	if c := pvc.Status.Capacity[v1.ResourceStorage]; c.String() != "1Gi" {
		t.Errorf("capacity %s: the kubelet sets it", c.String())
	}
}

func TestResizeInfeasible(t *testing.T) {
	h := start(t, &fakeExpander{err: status.Error(codes.OutOfRange, "the share has 1 GiB left")})
	h.createClaim(claim("2Gi", "1Gi"))
	pvc := h.waitClaim("ControllerResizeInfeasible", func(p *v1.PersistentVolumeClaim) bool {
		return p.Status.AllocatedResourceStatuses[v1.ResourceStorage] == v1.PersistentVolumeClaimControllerResizeInfeasible
	})
	if got := conditionTypes(pvc); len(got) != 2 || got[0] != v1.PersistentVolumeClaimResizing || got[1] != v1.PersistentVolumeClaimControllerResizeError {
		t.Errorf("conditions %v", got)
	}
	time.Sleep(300 * time.Millisecond)
	if n := h.exp.numCalls(); n != 1 {
		t.Errorf("%d calls: an infeasible size is not retried", n)
	}
	ev := h.events()
	if !hasEvent(ev, "Warning VolumeResizeFailed resize of claim ns/data (volume pv-1) to 2Gi failed: OutOfRange: the share has 1 GiB left") {
		t.Errorf("events %q", ev)
	}
	// A new request is tried.
	h.exp.mu.Lock()
	h.exp.err = nil
	h.exp.mu.Unlock()
	pvc.Spec.Resources.Requests[v1.ResourceStorage] = resource.MustParse("3Gi")
	if _, err := h.client.CoreV1().PersistentVolumeClaims("ns").Update(h.ctx, pvc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.waitClaim("capacity 3Gi", func(p *v1.PersistentVolumeClaim) bool {
		c := p.Status.Capacity[v1.ResourceStorage]
		return c.String() == "3Gi" && p.Status.AllocatedResourceStatuses == nil && len(p.Status.Conditions) == 0
	})
}

func TestResizeRetries(t *testing.T) {
	h := start(t, &fakeExpander{err: status.Error(codes.Unavailable, "share unreachable")})
	h.createClaim(claim("2Gi", "1Gi"))
	if err := wait.PollUntilContextTimeout(h.ctx, 10*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return h.exp.numCalls() >= 3, nil
	}); err != nil {
		t.Fatalf("retries: %d calls", h.exp.numCalls())
	}
	pvc := h.waitClaim("in progress", func(p *v1.PersistentVolumeClaim) bool {
		return p.Status.AllocatedResourceStatuses[v1.ResourceStorage] == v1.PersistentVolumeClaimControllerResizeInProgress
	})
	if got := conditionTypes(pvc); len(got) != 1 || got[0] != v1.PersistentVolumeClaimResizing {
		t.Errorf("conditions %v", got)
	}
	h.exp.mu.Lock()
	h.exp.err = nil
	h.exp.mu.Unlock()
	h.waitClaim("capacity 2Gi", func(p *v1.PersistentVolumeClaim) bool {
		c := p.Status.Capacity[v1.ResourceStorage]
		return c.String() == "2Gi" && len(p.Status.Conditions) == 0
	})
	if !hasEvent(h.events(), "Warning VolumeResizeFailed resize of claim ns/data (volume pv-1) to 2Gi failed: Unavailable: share unreachable") {
		t.Errorf("no VolumeResizeFailed event")
	}
}

func TestNotOurs(t *testing.T) {
	h := start(t, &fakeExpander{})
	pvc := claim("2Gi", "1Gi")
	pvc.Spec.VolumeName = "pv-other"
	h.createClaim(pvc)
	other := volume("1Gi")
	other.Name = "pv-other"
	other.Spec.CSI.Driver = "other.csi"
	if _, err := h.client.CoreV1().PersistentVolumes().Create(h.ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if n := h.exp.numCalls(); n != 0 {
		t.Errorf("%d calls for another driver's volume", n)
	}
}

// The claim cache holds every claim of the cluster: without their
// managedFields, while resizes still work. PVs are read, not cached.
func TestCacheDropsManagedFields(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	fields := []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}}
	pv, pvc := volume("1Gi"), claim("2Gi", "1Gi")
	pv.ManagedFields, pvc.ManagedFields = fields, fields
	client := fake.NewClientset(pv, pvc)
	exp := &fakeExpander{}
	c, err := New(Options{Driver: testDriver, Client: client, Expander: exp, Recorder: record.NewFakeRecorder(100),
		Timeout: time.Second, RetryStart: 10 * time.Millisecond, RetryMax: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx, 1) }()
	t.Cleanup(func() { cancel(); <-done })
	err = wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		got, err := client.CoreV1().PersistentVolumes().Get(ctx, "pv-1", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		size := got.Spec.Capacity[v1.ResourceStorage]
		return size.Cmp(resource.MustParse("2Gi")) == 0, nil
	})
	if err != nil {
		t.Fatalf("volume not expanded: %v", err)
	}
	cachedPVC, err := c.claims.PersistentVolumeClaims("ns").Get("data")
	if err != nil {
		t.Fatal(err)
	}
	if cachedPVC.ManagedFields != nil {
		t.Errorf("cached managedFields: %v", cachedPVC.ManagedFields)
	}
	for _, a := range client.Actions() {
		if a.GetResource().Resource == "persistentvolumes" && (a.GetVerb() == "list" || a.GetVerb() == "watch") {
			t.Errorf("the resizer watches PVs: %s", a.GetVerb())
		}
	}
}

// The controller-manager binds a claim in two writes: volumeName, then the
// phase and capacity. Neither makes the resizer read the PV (a GET per claim
// of every provisioning burst); a later growth still resizes.
func TestBindReadsNoVolume(t *testing.T) {
	h := start(t, &fakeExpander{})
	pvc := claim("1Gi", "1Gi")
	pvc.Status = v1.PersistentVolumeClaimStatus{Phase: v1.ClaimPending}
	h.createClaim(pvc)
	time.Sleep(200 * time.Millisecond)
	pvc.Status = v1.PersistentVolumeClaimStatus{Phase: v1.ClaimBound, Capacity: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}}
	if _, err := h.client.CoreV1().PersistentVolumeClaims("ns").UpdateStatus(h.ctx, pvc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	gets := func() int {
		n := 0
		for _, a := range h.client.Actions() {
			if a.GetResource().Resource == "persistentvolumes" && a.GetVerb() == "get" {
				n++
			}
		}
		return n
	}
	if n := gets(); n != 0 {
		t.Errorf("%d PV reads while the claim was bound", n)
	}
	pvc.Spec.Resources.Requests[v1.ResourceStorage] = resource.MustParse("2Gi")
	if _, err := h.client.CoreV1().PersistentVolumeClaims("ns").Update(h.ctx, pvc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.waitClaim("the resize", func(c *v1.PersistentVolumeClaim) bool {
		size := c.Status.Capacity[v1.ResourceStorage]
		return size.Cmp(resource.MustParse("2Gi")) == 0
	})
	if n := gets(); n == 0 {
		t.Error("the resize read no PV: the count above proves nothing")
	}
}
