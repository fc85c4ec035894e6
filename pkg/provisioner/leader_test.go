package provisioner

import (
	"context"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"
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
		errA <- lead(ctxA, client, "carve-system", "carve", func(ctx context.Context) {
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
		errB <- lead(ctxB, client, "carve-system", "carve", func(ctx context.Context) {
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
		_ = lead(ctxA, client, "ns", "carve", func(ctx context.Context) { close(leading); <-ctx.Done() }, func() {})
	}()
	<-leading
	ctxB, stopB := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- lead(ctxB, client, "ns", "carve", func(context.Context) { t.Error("led while another held the Lease") }, func() {})
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
