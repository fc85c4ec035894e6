package gluster

import (
	"context"
	"errors"
	"testing"

	"k8s.io/klog/v2/ktesting"

	"github.com/carve-csi/carve/internal/testenv/glusterd"
	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/volid"
	"github.com/carve-csi/carve/pkg/volume"
)

// TestAdoptVolume takes over a volume carve did not create (as heketi
// made them), through the volume service as carve-adopt does.
func TestAdoptVolume(t *testing.T) {
	c := cluster(t)
	_, ctx := ktesting.NewTestContext(t)
	vol := c.CreateVolume(t, volName("adopt"), 1, glusterd.WithoutStart())
	svc := volume.New(volume.Options{}, New(Options{}))
	cli := NewCLI(&LocalExecutor{}, nil)
	id := volid.ID{Backend: params.BackendGluster, Servers: []string{c.Host()}, Share: vol.Name, OnDelete: params.OnDeleteRetain}
	req := volume.AdoptRequest{ID: id, Name: "pvc-heketi", Namespace: "web", Claim: "data-web-0", SizeBytes: 1 << 30, DryRun: true}
	option := func(name string) string {
		v, err := cli.VolumeInfo(ctx, vol.Name)
		if err != nil {
			t.Fatal(err)
		}
		o, _ := v.Option(name)
		return o
	}

	if err := svc.Adopt(ctx, req); !errors.Is(err, backend.ErrUnavailable) {
		t.Fatalf("a stopped volume: %v, want unavailable (nothing could mount it)", err)
	}
	if _, err := cli.Run(ctx, "volume", "start", vol.Name); err != nil {
		t.Fatal(err)
	}
	if err := svc.Adopt(ctx, req); err != nil {
		t.Fatalf("dry run: %v", err)
	}
	if o := option(OptPV); o != "" {
		t.Fatalf("the dry run recorded %s=%s", OptPV, o)
	}
	req.DryRun = false
	for range 2 { // the second run finds its own record
		if err := svc.Adopt(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	if pv, claim, size := option(OptPV), option(OptClaim), option(OptCapacity); pv != "pvc-heketi" || claim != "web/data-web-0" || size != "1073741824" {
		t.Fatalf("record: %s=%q %s=%q %s=%q", OptPV, pv, OptClaim, claim, OptCapacity, size)
	}
	other := req
	other.Name = "pvc-other"
	if err := svc.Adopt(ctx, other); !errors.Is(err, backend.ErrConflict) {
		t.Fatalf("another PV: %v, want a conflict", err)
	}
	missing := req
	missing.ID.Share = volName("missing")
	if err := svc.Adopt(context.Background(), missing); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("a missing volume: %v, want not found", err)
	}
}
