package csidriver

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2/ktesting"
	mount "k8s.io/mount-utils"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/kubeview"
	"github.com/carve-csi/carve/pkg/nfs"
	"github.com/carve-csi/carve/pkg/sharemount"
	"github.com/carve-csi/carve/pkg/volid"
	"github.com/carve-csi/carve/pkg/volume"
)

const (
	testServer = "10.0.0.5"
	testExport = "/export"
)

type harness struct {
	ctx   context.Context
	d     *Driver
	share string // local path of testServer:testExport
	fake  *mount.FakeMounter
}

// newHarness runs the driver in mode all on a share in a temp dir, with a
// fake mounter. refs may be nil (no cluster view).
func newHarness(t *testing.T, refs volume.Referrers) *harness {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	share := filepath.Join(t.TempDir(), "share")
	if err := os.Mkdir(share, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := dirvol.Declare(share); err != nil {
		t.Fatal(err)
	}
	fake := mount.NewFakeMounter(nil)
	d, err := New(Config{
		NodeID:    "node-1",
		MountMap:  sharemount.Map{sharemount.Key(testServer, testExport): share},
		Referrers: refs,
	}, fake)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.svc.WaitPurges)
	return &harness{ctx: ctx, d: d, share: share, fake: fake}
}

func classParams(extra ...string) map[string]string {
	p := map[string]string{"backend": "nfs", "server": testServer, "share": testExport}
	for i := 0; i+1 < len(extra); i += 2 {
		p[extra[i]] = extra[i+1]
	}
	return p
}

func mountCap(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

func createReq(name string, size int64, p map[string]string) *csi.CreateVolumeRequest {
	return &csi.CreateVolumeRequest{
		Name:               name,
		CapacityRange:      &csi.CapacityRange{RequiredBytes: size},
		VolumeCapabilities: []*csi.VolumeCapability{mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)},
		Parameters:         p,
	}
}

// claim adds what csi-provisioner --extra-create-metadata adds.
func claim(p map[string]string, ns, name, pv string) map[string]string {
	out := map[string]string{keyPVCNamespace: ns, keyPVCName: name, keyPVName: pv}
	for k, v := range p {
		out[k] = v
	}
	return out
}

func wantCode(t *testing.T, err error, want codes.Code, contains ...string) {
	t.Helper()
	if status.Code(err) != want {
		t.Fatalf("error %v, want code %v", err, want)
	}
	for _, c := range contains {
		if !strings.Contains(err.Error(), c) {
			t.Errorf("error %q does not mention %q", err, c)
		}
	}
}

func (h *harness) create(t *testing.T, req *csi.CreateVolumeRequest) *csi.Volume {
	t.Helper()
	resp, err := h.d.controller.CreateVolume(h.ctx, req)
	if err != nil {
		t.Fatalf("CreateVolume(%s): %v", req.Name, err)
	}
	return resp.Volume
}

func (h *harness) exists(p string) bool {
	_, err := os.Stat(filepath.Join(h.share, p))
	return err == nil
}

func TestCreateVolumeRejects(t *testing.T) {
	h := newHarness(t, nil)
	block := &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
	for _, tc := range []struct {
		name     string
		req      *csi.CreateVolumeRequest
		contains []string
	}{
		{"no name", createReq("", 1, classParams()), []string{"name"}},
		{"no capabilities", &csi.CreateVolumeRequest{Name: "pvc-1", Parameters: classParams()}, []string{"volume_capabilities"}},
		{"block", &csi.CreateVolumeRequest{Name: "pvc-1", Parameters: classParams(), VolumeCapabilities: []*csi.VolumeCapability{block}}, []string{"block"}},
		{"labels in pattern", createReq("pvc-1", 1, claim(classParams("pathPattern", "${pvc.metadata.labels['app']}/${pv.metadata.name}"), "ns", "c", "pvc-1")),
			[]string{"pathPattern", "labels or annotations"}},
		// nfs-subdir's label variables translate to carve's, which CSI cannot fill: same refusal.
		{"nfs-subdir labels in pattern", createReq("pvc-1", 1, claim(classParams("pathPattern", "${.PVC.labels.app}/${.PVC.name}"), "ns", "c", "pvc-1")),
			[]string{"pathPattern", "labels or annotations"}},
		{"annotations in pattern", createReq("pvc-1", 1, claim(classParams("pathPattern", "${pvc.metadata.annotations['x']}"), "ns", "c", "pvc-1")),
			[]string{"pathPattern"}},
		{"claim metadata missing", createReq("pvc-1", 1, classParams()), []string{"--extra-create-metadata", "pathPattern"}},
		{"claim name in a longer segment, metadata missing", createReq("pvc-1", 1, classParams("pathPattern", "data-${pvc.metadata.name}")),
			[]string{"--extra-create-metadata"}},
		{"unknown parameter", createReq("pvc-1", 1, claim(classParams("sever", "x"), "ns", "c", "pvc-1")), []string{`"sever"`}},
		{"backend not enabled", createReq("pvc-1", 1, claim(map[string]string{"backend": "ceph"}, "ns", "c", "pvc-1")), []string{"backend"}},
		{"negative size", createReq("pvc-1", -1, claim(classParams(), "ns", "c", "pvc-1")), []string{"negative"}},
		{"clone from another share", func() *csi.CreateVolumeRequest {
			r := createReq("pvc-1", 1, claim(classParams(), "ns", "c", "pvc-1"))
			r.VolumeContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
				Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: "1#nfs#10.0.0.6#/export#ns/c#delete"}}}
			return r
		}(), []string{"another share"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.d.controller.CreateVolume(h.ctx, tc.req)
			wantCode(t, err, codes.InvalidArgument, tc.contains...)
		})
	}
	entries, _ := os.ReadDir(h.share)
	for _, e := range entries {
		if e.Name() != ".carve-share" { // the share's identity, declared by the test
			t.Errorf("rejected requests left %s on the share", e.Name())
		}
	}
}

func TestCreateVolumeUsesClaimMetadata(t *testing.T) {
	h := newHarness(t, nil)
	vol := h.create(t, createReq("pvc-1", 1<<20, claim(classParams(), "db", "data-mongo-0", "pvc-1")))
	if !h.exists("db/data-mongo-0") {
		t.Fatal("default pattern did not carve db/data-mongo-0")
	}
	id, err := volid.Parse(vol.VolumeId)
	if err != nil {
		t.Fatal(err)
	}
	if id.DirPath() != "db/data-mongo-0" || id.Servers[0] != testServer || id.Share != testExport || id.OnDelete != "retain" {
		t.Errorf("ID %+v", id)
	}
	if vol.CapacityBytes != 1<<20 || vol.VolumeContext["subdir"] != "db/data-mongo-0" {
		t.Errorf("volume %+v", vol)
	}
	// The classic provisioner's cluster view reads a CSI PV with this handle.
	pv := &v1.PersistentVolume{Spec: v1.PersistentVolumeSpec{PersistentVolumeSource: v1.PersistentVolumeSource{
		CSI: &v1.CSIPersistentVolumeSource{Driver: DefaultName, VolumeHandle: vol.VolumeId},
	}}}
	if got, ok, err := kubeview.VolumeID(pv); !ok || err != nil || got.String() != vol.VolumeId {
		t.Errorf("kubeview.VolumeID = %v, %v, %v", got, ok, err)
	}

	// ${pv.metadata.name} is the CSI name when the key is absent.
	h.create(t, createReq("pvc-2", 1, classParams("pathPattern", "v/${pv.metadata.name}")))
	if !h.exists("v/pvc-2") {
		t.Error("${pv.metadata.name} did not render to the request name")
	}
}

func TestCreateVolumeIdempotencyAndSize(t *testing.T) {
	h := newHarness(t, nil)
	p := claim(classParams(), "ns", "c", "pvc-1")
	a := h.create(t, createReq("pvc-1", 1<<30, p))
	b := h.create(t, createReq("pvc-1", 1<<30, p))
	if a.VolumeId != b.VolumeId || b.CapacityBytes != 1<<30 {
		t.Fatalf("retry gave %+v, first %+v", b, a)
	}
	// Asking for more than the volume has: a different volume under the same name.
	_, err := h.d.controller.CreateVolume(h.ctx, createReq("pvc-1", 2<<30, p))
	wantCode(t, err, codes.AlreadyExists, "pvc-1")
	// A limit below the recorded size does not fit either.
	r := createReq("pvc-1", 1, p)
	r.CapacityRange.LimitBytes = 1 << 20
	_, err = h.d.controller.CreateVolume(h.ctx, r)
	wantCode(t, err, codes.AlreadyExists)
	// Less than recorded, no limit: fits, and the recorded size comes back.
	if c := h.create(t, createReq("pvc-1", 1<<20, p)); c.CapacityBytes != 1<<30 {
		t.Errorf("capacity %d, want the recorded %d", c.CapacityBytes, 1<<30)
	}
}

func TestConcurrentCallsAbort(t *testing.T) {
	h := newHarness(t, nil)
	p := claim(classParams(), "ns", "c", "pvc-1")
	vol := h.create(t, createReq("pvc-1", 1, p))

	release, err := h.d.locks.tryAcquire("id:" + vol.VolumeId)
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.d.controller.CreateVolume(h.ctx, createReq("pvc-1", 1, p))
	wantCode(t, err, codes.Aborted)
	_, err = h.d.controller.DeleteVolume(h.ctx, &csi.DeleteVolumeRequest{VolumeId: vol.VolumeId})
	wantCode(t, err, codes.Aborted)
	_, err = h.d.controller.ControllerExpandVolume(h.ctx, &csi.ControllerExpandVolumeRequest{VolumeId: vol.VolumeId, CapacityRange: &csi.CapacityRange{RequiredBytes: 2}})
	wantCode(t, err, codes.Aborted)
	release()

	release, _ = h.d.locks.tryAcquire("name:pvc-1")
	_, err = h.d.controller.CreateVolume(h.ctx, createReq("pvc-1", 1, p))
	wantCode(t, err, codes.Aborted)
	release()

	// Real concurrency: every call ends in success or Aborted, never a race.
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := h.d.controller.CreateVolume(h.ctx, createReq("pvc-9", 1, claim(classParams(), "ns", "nine", "pvc-9")))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	ok := 0
	for err := range errs {
		switch status.Code(err) {
		case codes.OK:
			ok++
		case codes.Aborted:
		default:
			t.Errorf("concurrent CreateVolume: %v", err)
		}
	}
	if ok == 0 {
		t.Error("no concurrent CreateVolume succeeded")
	}
}

// limiter wraps the NFS backend with a recorded size limit, like Gluster quota.
// It embeds the interface, not *nfs.Backend, so the NFS backend's own
// ApplyLimit (the btrfs layout) is not promoted and SetLimit is what counts.
type limiter struct {
	backend.Backend
	mu     sync.Mutex
	limits map[string]int64
}

func (l *limiter) SetLimit(_ context.Context, id volid.ID, bytes int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.limits[id.DirPath()] = bytes
	return nil
}

func (l *limiter) RemoveLimit(_ context.Context, id volid.ID) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.limits, id.DirPath())
	return nil
}

var _ backend.Limiter = (*limiter)(nil)

func TestControllerExpandVolume(t *testing.T) {
	h := newHarness(t, nil)
	lim := &limiter{Backend: nfs.New(&sharemount.Resolver{Map: h.d.cfg.MountMap}), limits: map[string]int64{}}
	h.d.svc = volume.New(volume.Options{}, lim)

	p := claim(classParams(), "ns", "c", "pvc-1")
	vol := h.create(t, createReq("pvc-1", 1<<30, p))
	if lim.limits["ns/c"] != 1<<30 {
		t.Fatalf("limit after create = %d", lim.limits["ns/c"])
	}
	expand := func(id string, bytes int64) (*csi.ControllerExpandVolumeResponse, error) {
		return h.d.controller.ControllerExpandVolume(h.ctx, &csi.ControllerExpandVolumeRequest{
			VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: bytes},
		})
	}
	resp, err := expand(vol.VolumeId, 3<<30)
	if err != nil || resp.CapacityBytes != 3<<30 || resp.NodeExpansionRequired {
		t.Fatalf("expand = %+v, %v", resp, err)
	}
	if lim.limits["ns/c"] != 3<<30 {
		t.Errorf("limit after expand = %d, want %d", lim.limits["ns/c"], 3<<30)
	}
	// Never shrinks.
	if resp, err := expand(vol.VolumeId, 2<<30); err != nil || resp.CapacityBytes != 3<<30 {
		t.Errorf("smaller expand = %+v, %v", resp, err)
	}
	// The record now says 3Gi; a late CreateVolume retry gets that.
	if c := h.create(t, createReq("pvc-1", 1<<30, p)); c.CapacityBytes != 3<<30 {
		t.Errorf("create after expand reports %d bytes", c.CapacityBytes)
	}
	if lim.limits["ns/c"] != 3<<30 {
		t.Errorf("a CreateVolume retry lowered the limit to %d", lim.limits["ns/c"])
	}

	_, err = expand("", 1)
	wantCode(t, err, codes.InvalidArgument)
	_, err = h.d.controller.ControllerExpandVolume(h.ctx, &csi.ControllerExpandVolumeRequest{VolumeId: vol.VolumeId})
	wantCode(t, err, codes.InvalidArgument)
	_, err = expand("fake-vol-id", 1)
	wantCode(t, err, codes.NotFound)
	gone := volid.ID{Backend: "nfs", Servers: []string{testServer}, Share: testExport, Dir: []string{"gone"}, OnDelete: "retain"}
	_, err = expand(gone.String(), 1)
	wantCode(t, err, codes.NotFound)
}

func TestDeleteVolume(t *testing.T) {
	h := newHarness(t, nil)
	_, err := h.d.controller.DeleteVolume(h.ctx, &csi.DeleteVolumeRequest{})
	wantCode(t, err, codes.InvalidArgument)
	// (A Gluster ID is ours now that the driver runs the Gluster backend;
	// glustersanity deletes Gluster volumes for real.)
	for _, id := range []string{"fake-vol-id", "2#nfs#x#/e#a#delete", "1#nfs"} {
		if _, err := h.d.controller.DeleteVolume(h.ctx, &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
			t.Errorf("DeleteVolume(%q) = %v, want success (not ours)", id, err)
		}
	}

	vol := h.create(t, createReq("pvc-1", 1, claim(classParams("onDelete", "delete"), "ns", "c", "pvc-1")))
	for i := 0; i < 2; i++ { // idempotent
		if _, err := h.d.controller.DeleteVolume(h.ctx, &csi.DeleteVolumeRequest{VolumeId: vol.VolumeId}); err != nil {
			t.Fatal(err)
		}
	}
	if h.exists("ns/c") {
		t.Error("onDelete=delete left the directory")
	}

	kept := h.create(t, createReq("pvc-2", 1, claim(classParams(), "ns", "kept", "pvc-2")))
	if _, err := h.d.controller.DeleteVolume(h.ctx, &csi.DeleteVolumeRequest{VolumeId: kept.VolumeId}); err != nil || !h.exists("ns/kept") {
		t.Errorf("onDelete=retain: %v, directory exists %v", err, h.exists("ns/kept"))
	}
}

// Without a cluster view a directory recorded for one volume is never handed
// to another: DeleteVolume could not tell their deletions apart.
func TestNoClusterViewRefusesOtherVolumesDirectory(t *testing.T) {
	h := newHarness(t, nil)
	p := classParams("onDelete", "delete")
	h.create(t, createReq("pvc-a", 1, claim(p, "ns", "data", "pvc-a")))
	_, err := h.d.controller.CreateVolume(h.ctx, createReq("pvc-b", 1, claim(p, "ns", "data", "pvc-b")))
	wantCode(t, err, codes.FailedPrecondition, "pvc-a", "--kube-referrers")
}

// fakeRefs is a cluster view the test edits.
type fakeRefs struct {
	mu   sync.Mutex
	refs []volume.Ref
}

// Referrers answers for the volume directories of these tests, which sit two
// levels deep (<namespace>/<claim>); their parents have no PVs.
func (f *fakeRefs) Referrers(_ context.Context, loc string) ([]volume.Ref, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if strings.Count(loc[strings.LastIndex(loc, "#")+1:], "/") != 1 {
		return nil, nil
	}
	return append([]volume.Ref(nil), f.refs...), nil
}

// Nested: no PV of these tests lies inside another's directory.
func (f *fakeRefs) Nested(context.Context, string) ([]volume.Ref, error) { return nil, nil }

func (f *fakeRefs) set(refs ...volume.Ref) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refs = refs
}

// With a cluster view, a claim recreated under the same name re-attaches the
// retained directory, and a late DeleteVolume of the old volume (same ID)
// keeps it because the new PV is live.
func TestClusterViewReattachAndDelete(t *testing.T) {
	refs := &fakeRefs{}
	h := newHarness(t, refs)
	p := classParams("onDelete", "delete")
	a := h.create(t, createReq("pvc-a", 1, claim(p, "ns", "data", "pvc-a")))
	if err := os.WriteFile(filepath.Join(h.share, "ns", "data", "marker"), []byte("a"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Claim deleted: PV a is Released.
	refs.set(volume.Ref{PV: "pvc-a", Namespace: "ns"})
	b := h.create(t, createReq("pvc-b", 1, claim(p, "ns", "data", "pvc-b")))
	if a.VolumeId != b.VolumeId {
		t.Fatalf("re-attached volume has ID %s, want %s", b.VolumeId, a.VolumeId)
	}
	refs.set(volume.Ref{PV: "pvc-a", Namespace: "ns"}, volume.Ref{PV: "pvc-b", Namespace: "ns", Live: true})
	if _, err := h.d.controller.DeleteVolume(h.ctx, &csi.DeleteVolumeRequest{VolumeId: a.VolumeId}); err != nil {
		t.Fatal(err)
	}
	if !h.exists("ns/data/marker") {
		t.Fatal("deleting the old volume removed the data of the live one")
	}
	// Now b goes too.
	refs.set(volume.Ref{PV: "pvc-b", Namespace: "ns"})
	if _, err := h.d.controller.DeleteVolume(h.ctx, &csi.DeleteVolumeRequest{VolumeId: b.VolumeId}); err != nil {
		t.Fatal(err)
	}
	if h.exists("ns/data") {
		t.Error("onDelete=delete kept the directory after its last volume went")
	}
}

func TestValidateVolumeCapabilities(t *testing.T) {
	h := newHarness(t, nil)
	vol := h.create(t, createReq("pvc-1", 1, claim(classParams(), "ns", "c", "pvc-1")))
	caps := []*csi.VolumeCapability{mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY)}
	resp, err := h.d.controller.ValidateVolumeCapabilities(h.ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: vol.VolumeId, VolumeCapabilities: caps})
	if err != nil || resp.Confirmed == nil || len(resp.Confirmed.VolumeCapabilities) != 1 {
		t.Fatalf("validate = %+v, %v", resp, err)
	}
	block := &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}
	resp, err = h.d.controller.ValidateVolumeCapabilities(h.ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: vol.VolumeId, VolumeCapabilities: []*csi.VolumeCapability{block}})
	if err != nil || resp.Confirmed != nil || resp.Message == "" {
		t.Errorf("block validate = %+v, %v; want unconfirmed with a message", resp, err)
	}
	for _, id := range []string{"fake-vol-id-123", volid.ID{Backend: "nfs", Servers: []string{testServer}, Share: testExport, Dir: []string{"gone"}, OnDelete: "retain"}.String()} {
		_, err = h.d.controller.ValidateVolumeCapabilities(h.ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: id, VolumeCapabilities: caps})
		wantCode(t, err, codes.NotFound)
	}
}

func TestGetCapacity(t *testing.T) {
	h := newHarness(t, nil)
	resp, err := h.d.controller.GetCapacity(h.ctx, &csi.GetCapacityRequest{Parameters: classParams()})
	if err != nil || resp.AvailableCapacity <= 0 {
		t.Errorf("GetCapacity = %+v, %v; want the share's free space", resp, err)
	}
	if resp, err := h.d.controller.GetCapacity(h.ctx, &csi.GetCapacityRequest{}); err != nil || resp.AvailableCapacity != 0 {
		t.Errorf("GetCapacity without parameters = %+v, %v", resp, err)
	}
	_, err = h.d.controller.GetCapacity(h.ctx, &csi.GetCapacityRequest{Parameters: map[string]string{"backend": "nfs"}})
	wantCode(t, err, codes.InvalidArgument)
	_, err = h.d.controller.GetCapacity(h.ctx, &csi.GetCapacityRequest{Parameters: map[string]string{"backend": "nfs", "server": "elsewhere", "share": "/x"}})
	wantCode(t, err, codes.Unavailable)
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []Config{
		{Name: "-carve", NodeID: "n"},
		{Name: strings.Repeat("a", 64), NodeID: "n"},
		{Mode: ModeNode},
	} {
		if _, err := New(cfg, mount.NewFakeMounter(nil)); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
	if _, err := New(Config{Mode: ModeController}, mount.NewFakeMounter(nil)); err != nil {
		t.Errorf("controller mode needs no node ID: %v", err)
	}
	var m Mode
	if err := m.Set("nodes"); err == nil {
		t.Error("Mode accepted nodes")
	}
}

// A claim deleted (onDelete=retain) and recreated at once gets its data back:
// the deleted volume's own recent creation does not block the directory.
func TestClusterViewRecreateRightAfterDelete(t *testing.T) {
	refs := &fakeRefs{}
	h := newHarness(t, refs)
	a := h.create(t, createReq("pvc-a", 1, claim(classParams(), "db", "data", "pvc-a")))
	refs.set(volume.Ref{PV: "pvc-a", Namespace: "db"}) // claim deleted: Released
	if _, err := h.d.controller.DeleteVolume(h.ctx, &csi.DeleteVolumeRequest{VolumeId: a.VolumeId}); err != nil {
		t.Fatal(err)
	}
	refs.set() // the external-provisioner deleted the PV
	b, err := h.d.controller.CreateVolume(h.ctx, createReq("pvc-b", 1, claim(classParams(), "db", "data", "pvc-b")))
	if err != nil {
		t.Fatalf("recreated claim: %v", err)
	}
	if b.Volume.VolumeId != a.VolumeId {
		t.Errorf("recreated claim got %s, want the retained %s", b.Volume.VolumeId, a.VolumeId)
	}
}
