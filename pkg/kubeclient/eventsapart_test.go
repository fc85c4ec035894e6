package kubeclient

import (
	"testing"

	v1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// Events go through the events client; everything else through the main one.
func TestEventsApart(t *testing.T) {
	ctx := t.Context()
	main, events := fake.NewClientset(), fake.NewClientset()
	c := EventsApart(main, events)
	ev := &v1.Event{ObjectMeta: metav1.ObjectMeta{Name: "e", Namespace: "ns"}}
	if _, err := c.CoreV1().Events("ns").Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.EventsV1().Events("ns").Create(ctx, &eventsv1.Event{ObjectMeta: metav1.ObjectMeta{Name: "e1", Namespace: "ns"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CoreV1().PersistentVolumes().Create(ctx, &v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := events.CoreV1().Events("ns").Get(ctx, "e", metav1.GetOptions{}); err != nil {
		t.Errorf("core event not written through the events client: %v", err)
	}
	if _, err := events.EventsV1().Events("ns").Get(ctx, "e1", metav1.GetOptions{}); err != nil {
		t.Errorf("events.k8s.io event not written through the events client: %v", err)
	}
	if _, err := main.CoreV1().Events("ns").Get(ctx, "e", metav1.GetOptions{}); err == nil {
		t.Error("event written through the main client")
	}
	if _, err := main.CoreV1().PersistentVolumes().Get(ctx, "pv", metav1.GetOptions{}); err != nil {
		t.Errorf("PV not written through the main client: %v", err)
	}
	if _, err := events.CoreV1().PersistentVolumes().Get(ctx, "pv", metav1.GetOptions{}); err == nil {
		t.Error("PV written through the events client")
	}
}
