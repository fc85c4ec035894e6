package provisioner

import (
	"context"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2/ktesting"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/kubeview"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/volid"
	"github.com/carve-csi/carve/pkg/volume"
	"github.com/carve-csi/carve/pkg/volume/volumetest"
)

// fakeCarver is a gluster-kind backend giving each claim a whole volume.
type fakeCarver struct {
	req     backend.VolumeRequest
	deleted []string
}

func (f *fakeCarver) Kind() string                        { return params.BackendGluster }
func (f *fakeCarver) Servers(cfg *params.Config) []string { return cfg.Gluster.Servers }
func (f *fakeCarver) Share(context.Context, []string, string) (*dirvol.Share, error) {
	return nil, backend.ErrUnavailable
}
func (f *fakeCarver) MountSpec(volid.ID, []string) backend.MountSpec { return backend.MountSpec{} }
func (f *fakeCarver) CreateVolume(_ context.Context, req backend.VolumeRequest) (*backend.CarvedVolume, error) {
	f.req = req
	id := volid.ID{Backend: "gluster", Servers: req.Config.Gluster.Servers, Share: "pvc_" + req.ClaimUID[:8], OnDelete: req.Config.OnDelete}
	return &backend.CarvedVolume{ID: id, GID: req.Owner.GID, Warnings: []string{"size not enforced"}}, nil
}
func (f *fakeCarver) DeleteVolume(_ context.Context, name string, id volid.ID) (backend.VolumeOutcome, error) {
	f.deleted = append(f.deleted, name)
	return backend.VolumeOutcome{Action: "deleted"}, nil
}
func (f *fakeCarver) ExpandVolume(context.Context, volid.ID, int64) (int64, error) { return 0, nil }

func TestVolumePerClaimProvisionAndDelete(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	fb := &fakeCarver{}
	gids := &volumetest.GIDs{}
	svc := volume.New(volume.Options{GIDs: gids}, fb)
	rec := record.NewFakeRecorder(10)
	p := New(svc, gids, rec)

	claim := &v1.PersistentVolumeClaim{}
	claim.Namespace, claim.Name, claim.UID = "db", "data", "0badc0de-0000-4000-8000-000000000001"
	claim.Spec.AccessModes = []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce}
	claim.Spec.Resources.Requests = v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}
	class := &storagev1.StorageClass{Parameters: map[string]string{"backend": "gluster", "servers": "g1,g2", "mode": "volume",
		"brickRootPaths": "g1:/b,g2:/b", "replica": "2", "onDelete": "delete"}}
	class.Name = "gluster-db"

	pv, _, err := p.Provision(ctx, controller.ProvisionOptions{StorageClass: class, PVName: "pvc-" + string(claim.UID), PVC: claim})
	if err != nil {
		t.Fatal(err)
	}
	if fb.req.ClaimUID != string(claim.UID) || fb.req.SizeBytes != 1<<30 || fb.req.Owner.GID < params.DefaultGIDMin || fb.req.Owner.Mode != 0o2770 {
		t.Errorf("volume request = %+v", fb.req)
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.VolumeHandle != "1#gluster#g1,g2#pvc_0badc0de##delete" || pv.Annotations[kubeview.AnnGID] == "" {
		t.Fatalf("PV = %+v", pv)
	}
	if ev := <-rec.Events; !strings.Contains(ev, "Warning "+ReasonWarning+" size not enforced") {
		t.Errorf("event = %q", ev)
	}
	if err := p.Delete(ctx, pv); err != nil {
		t.Fatal(err)
	}
	if len(fb.deleted) != 1 || fb.deleted[0] != pv.Name {
		t.Errorf("deleted = %q", fb.deleted)
	}
	if ev := <-rec.Events; !strings.Contains(ev, "deleted Gluster volume pvc_0badc0de and its bricks") {
		t.Errorf("delete event = %q", ev)
	}
}
