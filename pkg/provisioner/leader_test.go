package provisioner

import (
	"context"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

// A replica that stops hands the Lease over: the next one leads within a
// retry period, not after the lease expires, and only once the first has
// finished its work.
func TestLeadReleasesTheLeaseAfterTheWork(t *testing.T) {
	client := fake.NewClientset()
	ctxA, stopA := context.WithCancel(t.Context())
	aWorking := make(chan struct{})
	aStopped := make(chan time.Time, 1)
	errA := make(chan error, 1)
	go func() {
		errA <- lead(ctxA, client, "carve-system", "carve", "pod-a_1", func(ctx context.Context) {
			close(aWorking)
			<-ctx.Done()
		}, func() {
			time.Sleep(500 * time.Millisecond) // an operation still finishing
			aStopped <- time.Now()
		})
	}()
	select {
	case <-aWorking:
	case <-time.After(10 * time.Second):
		t.Fatal("the first replica never led")
	}

	ctxB, stopB := context.WithCancel(t.Context())
	defer stopB()
	bLeads := make(chan time.Time, 1)
	errB := make(chan error, 1)
	go func() {
		errB <- lead(ctxB, client, "carve-system", "carve", "pod-b_2", func(ctx context.Context) {
			bLeads <- time.Now()
			<-ctx.Done()
		}, func() {})
	}()
	time.Sleep(time.Second)
	select {
	case <-bLeads:
		t.Fatal("the second replica led while the first held the Lease")
	default:
	}
	t0 := time.Now()
	stopA()
	if err := <-errA; err != nil {
		t.Fatalf("first replica: %v", err)
	}
	stoppedAt := <-aStopped
	select {
	case at := <-bLeads:
		if at.Before(stoppedAt) {
			t.Errorf("the second replica led %s before the first had stopped its work", stoppedAt.Sub(at))
		}
		if d := at.Sub(t0); d > leaseDuration {
			t.Errorf("the second replica led %s after the first stopped: the Lease was not released", d)
		}
	case <-time.After(leaseDuration + 2*retryPeriod):
		t.Fatal("the second replica never led")
	}
	stopB()
	if err := <-errB; err != nil {
		t.Fatalf("second replica: %v", err)
	}
}

// A replica that never led returns at once when told to stop.
func TestLeadStopsWaiting(t *testing.T) {
	client := fake.NewClientset()
	ctxA, stopA := context.WithCancel(t.Context())
	defer stopA()
	leading := make(chan struct{})
	go func() {
		_ = lead(ctxA, client, "ns", "carve", "pod-a_1", func(ctx context.Context) { close(leading); <-ctx.Done() }, func() {})
	}()
	<-leading
	ctxB, stopB := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- lead(ctxB, client, "ns", "carve", "pod-b_2", func(context.Context) { t.Error("led while another held the Lease") }, func() {})
	}()
	time.Sleep(200 * time.Millisecond)
	stopB()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a waiting replica did not stop")
	}
}

// A Lease left by a process killed with SIGKILL: held, renewed just now.
func crashedLease(holder string) *coordinationv1.Lease {
	now := metav1.NewMicroTime(time.Now())
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "carve", Namespace: "ns"},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity: ptr.To(holder), LeaseDurationSeconds: ptr.To(int32(leaseDuration / time.Second)),
			AcquireTime: &now, RenewTime: &now, LeaseTransitions: ptr.To(int32(3)),
		},
	}
}

// After a crash, a restart in the same pod (same identity) leads at once;
// any other identity still waits for the Lease to expire.
func TestLeadTakesItsOwnLeaseAfterACrash(t *testing.T) {
	ledWithin := func(client *fake.Clientset, id string, within time.Duration) bool {
		ctx, stop := context.WithCancel(t.Context())
		defer stop()
		led := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			done <- lead(ctx, client, "ns", "carve", id, func(ctx context.Context) { close(led); <-ctx.Done() }, func() {})
		}()
		defer func() {
			stop()
			if err := <-done; err != nil {
				t.Errorf("%s: %v", id, err)
			}
		}()
		select {
		case <-led:
			return true
		case <-time.After(within):
			return false
		}
	}
	if !ledWithin(fake.NewClientset(crashedLease("carve-7f9c_uid-1")), "carve-7f9c_uid-1", 2*time.Second) {
		t.Error("a restart with the crashed process's identity did not take its Lease at once")
	}
	if ledWithin(fake.NewClientset(crashedLease("carve-7f9c_uid-1")), "carve-5d2e_uid-2", 3*retryPeriod) {
		t.Error("another pod took a Lease that had not expired")
	}
}

// The identity is the pod's when the pod passes its UID, and new for every
// process otherwise.
func TestLeaderIdentity(t *testing.T) {
	t.Setenv("POD_NAME", "carve-provisioner-7f9c")
	t.Setenv("POD_UID", "0b6f3c1e-uid")
	if id, err := leaderIdentity(); err != nil || id != "carve-provisioner-7f9c_0b6f3c1e-uid" {
		t.Errorf("with POD_UID: %q, %v", id, err)
	}
	t.Setenv("POD_UID", "")
	a, _ := leaderIdentity()
	b, _ := leaderIdentity()
	if a == b || strings.Contains(a, "0b6f3c1e") {
		t.Errorf("without POD_UID the identities %q and %q must be new each time", a, b)
	}
}
