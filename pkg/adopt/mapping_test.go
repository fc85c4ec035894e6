package adopt

import (
	"errors"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/carve-csi/carve/pkg/kubeview"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/sharemount"
	"github.com/carve-csi/carve/pkg/volid"
)

const claimUID = types.UID("11111111-2222-3333-4444-555555555555")

// boundPair is a claim web/data-web-0 and a PV bound to it, as the PV
// controller leaves them; src is the PV's volume source.
func boundPair(src v1.PersistentVolumeSource) (*v1.PersistentVolume, *v1.PersistentVolumeClaim) {
	claim := &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "data-web-0", Namespace: "web", UID: claimUID,
			Labels: map[string]string{"app": "web"}},
		Spec: v1.PersistentVolumeClaimSpec{VolumeName: "pvc-" + string(claimUID), StorageClassName: ptr.To("old")},
	}
	pv := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pvc-" + string(claimUID), UID: "old-pv-uid",
			Labels: map[string]string{"keep": "me"}, Annotations: map[string]string{AnnProvisionedBy: "someone"}},
		Spec: v1.PersistentVolumeSpec{
			PersistentVolumeSource:        src,
			Capacity:                      v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:                   []v1.PersistentVolumeAccessMode{v1.ReadWriteMany},
			MountOptions:                  []string{"nfsvers=4.1"},
			PersistentVolumeReclaimPolicy: v1.PersistentVolumeReclaimDelete,
			StorageClassName:              "old",
			ClaimRef:                      &v1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: "web", Name: "data-web-0", UID: claimUID},
		},
		Status: v1.PersistentVolumeStatus{Phase: v1.VolumeBound},
	}
	return pv, claim
}

func mountMap(t *testing.T, entries ...string) sharemount.Map {
	m := sharemount.Map{}
	for _, e := range entries {
		if err := m.Set(e); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func noEndpoints(ns, name string) ([]string, error) {
	return nil, errors.New("no Endpoints in this test")
}

func TestMapNFSSubdir(t *testing.T) {
	dir := "web-data-web-0-pvc-" + string(claimUID)
	pv, claim := boundPair(v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: "10.0.0.5", Path: "/export/k8s/" + dir}})
	pv.Annotations[kubeview.AnnGID] = "2001"
	// The deepest mapped share above the directory wins.
	opts := Options{MountMap: mountMap(t, "10.0.0.5:/export=/mnt/export", "10.0.0.5:/export/k8s=/mnt/k8s", "10.0.0.6:/export/k8s=/mnt/other")}
	tg, err := Map(pv, claim, noEndpoints, opts)
	if err != nil {
		t.Fatal(err)
	}
	want := volid.ID{Backend: params.BackendNFS, Servers: []string{"10.0.0.5"}, Share: "/export/k8s", Dir: []string{dir}, OnDelete: params.OnDeleteRetain}
	if tg.ID.String() != want.String() || tg.LocalShare != "/mnt/k8s" || tg.GID != 2001 || tg.Kind != KindNFSSubdir {
		t.Fatalf("target %+v, want ID %s on /mnt/k8s with GID 2001", tg, want)
	}
	n := tg.New
	switch {
	case n.Name != pv.Name || n.Spec.StorageClassName != "old" || n.Labels["keep"] != "me":
		t.Errorf("new PV lost the name, class or labels: %+v", n.ObjectMeta)
	case n.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimRetain:
		t.Errorf("new PV reclaim policy %s, want Retain", n.Spec.PersistentVolumeReclaimPolicy)
	case n.Spec.ClaimRef == nil || n.Spec.ClaimRef.UID != claimUID || n.Spec.ClaimRef.Name != "data-web-0" || n.Spec.ClaimRef.Namespace != "web":
		t.Errorf("new PV claimRef %+v, want web/data-web-0 with the claim's UID", n.Spec.ClaimRef)
	case n.Spec.CSI == nil || n.Spec.CSI.Driver != kubeview.DriverName || n.Spec.CSI.VolumeHandle != want.String():
		t.Errorf("new PV source %+v, want carve CSI with handle %s", n.Spec.PersistentVolumeSource, want)
	case n.Annotations[kubeview.AnnVolumeID] != want.String() || n.Annotations[kubeview.AnnGID] != "2001" || n.Annotations[AnnProvisionedBy] != kubeview.DriverName:
		t.Errorf("new PV annotations %v", n.Annotations)
	case n.Spec.Capacity.Storage().String() != "1Gi" || n.Spec.AccessModes[0] != v1.ReadWriteMany || n.Spec.MountOptions[0] != "nfsvers=4.1":
		t.Errorf("new PV capacity, access modes or mount options changed: %+v", n.Spec)
	}
	// carve's view of the new PV is the volume mapped.
	if id, ok, err := kubeview.VolumeID(n); !ok || err != nil || id.Location() != want.Location() {
		t.Errorf("kubeview reads the new PV as %v %v %v", id, ok, err)
	}

	// The classic provisioner's in-tree shape.
	opts.VolumeType = params.VolumeTypeNFS
	tg, err = Map(pv, claim, noEndpoints, opts)
	if err != nil {
		t.Fatal(err)
	}
	if s := tg.New.Spec.NFS; s == nil || s.Server != "10.0.0.5" || s.Path != "/export/k8s/"+dir || tg.New.Spec.CSI != nil ||
		tg.New.Annotations[AnnProvisionedBy] != ClassicProvisionerName {
		t.Errorf("volume type nfs: %+v %v", tg.New.Spec.PersistentVolumeSource, tg.New.Annotations)
	}
}

func TestMapNFSSubdirCustomPattern(t *testing.T) {
	pv, claim := boundPair(v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: "nfs1", Path: "/export/web/web/data-web-0"}})
	p, err := params.ParseAnyPattern("${.PVC.labels.app}/${.PVC.namespace}/${.PVC.name}")
	if err != nil {
		t.Fatal(err)
	}
	tg, err := Map(pv, claim, noEndpoints, Options{MountMap: mountMap(t, "nfs1:/export=/mnt/e"), Pattern: p})
	if err != nil {
		t.Fatal(err)
	}
	if got := tg.ID.DirPath(); got != "web/web/data-web-0" || tg.ID.Share != "/export" {
		t.Fatalf("dir %q on %q", got, tg.ID.Share)
	}
	// The default pattern does not render this path: refused, with the flag to use.
	_, err = Map(pv, claim, noEndpoints, Options{MountMap: mountMap(t, "nfs1:/export=/mnt/e")})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "--path-pattern") {
		t.Fatalf("default pattern: %v", err)
	}
}

func TestMapCSIDriverNFS(t *testing.T) {
	for _, c := range []struct {
		name   string
		handle string
		attrs  map[string]string
	}{
		{"handle with uuid and onDelete", "nfs.example.com#export#pvc-1##delete",
			map[string]string{"server": "nfs.example.com", "share": "/export", "subdir": "pvc-1", "csi.storage.k8s.io/pv/name": "pvc-1"}},
		{"old handle, share attribute holding the directory", "nfs.example.com#export#pvc-1",
			map[string]string{"server": "nfs.example.com", "share": "/export/pvc-1"}},
		{"static PV: attributes only", "any-unique-handle",
			map[string]string{"server": "nfs.example.com", "share": "/export", "subdir": "pvc-1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			pv, claim := boundPair(v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{
				Driver: "nfs.csi.k8s.io", VolumeHandle: c.handle, VolumeAttributes: c.attrs}})
			tg, err := Map(pv, claim, noEndpoints, Options{MountMap: mountMap(t, "nfs.example.com:/export=/shares/nfs")})
			if err != nil {
				t.Fatal(err)
			}
			if tg.Kind != KindCSINFS || tg.ID.String() != "1#nfs#nfs.example.com#/export#pvc-1#retain" || tg.LocalShare != "/shares/nfs" {
				t.Fatalf("target %s %s at %s", tg.Kind, tg.ID, tg.LocalShare)
			}
		})
	}
}

func TestMapHeketi(t *testing.T) {
	pv, claim := boundPair(v1.PersistentVolumeSource{Glusterfs: &v1.GlusterfsPersistentVolumeSource{
		EndpointsName: "glusterfs-dynamic-data-web-0", Path: "vol_0123abcd", EndpointsNamespace: ptr.To("web")}})
	pv.Annotations[kubeview.AnnGID] = "2001"
	var asked string
	endpoints := func(ns, name string) ([]string, error) {
		asked = ns + "/" + name
		return []string{"192.0.2.10", "192.0.2.11"}, nil
	}
	tg, err := Map(pv, claim, endpoints, Options{VolumeType: params.VolumeTypeNFS})
	if err != nil {
		t.Fatal(err)
	}
	if asked != "web/glusterfs-dynamic-data-web-0" {
		t.Errorf("asked Endpoints %s", asked)
	}
	want := "1#gluster#192.0.2.10,192.0.2.11#vol_0123abcd##retain"
	if tg.ID.String() != want || tg.Kind != KindHeketi || tg.GID != 2001 {
		t.Fatalf("target %s %s gid %d, want %s", tg.Kind, tg.ID, tg.GID, want)
	}
	// Gluster is always CSI (no in-tree plugin since Kubernetes 1.26),
	// whatever --volume-type says for NFS.
	if c := tg.New.Spec.CSI; c == nil || c.VolumeHandle != want || tg.New.Spec.Glusterfs != nil || tg.New.Annotations[kubeview.AnnGID] != "2001" {
		t.Errorf("new PV %+v %v", tg.New.Spec.PersistentVolumeSource, tg.New.Annotations)
	}
	// --gluster-servers replaces the Endpoints.
	tg, err = Map(pv, claim, noEndpoints, Options{GlusterServers: []string{"g1", "g2"}})
	if err != nil || tg.ID.Servers[0] != "g1" || len(tg.ID.Servers) != 2 {
		t.Fatalf("with --gluster-servers: %v %v", tg, err)
	}
}

func TestMapRefusals(t *testing.T) {
	mm := Options{MountMap: mountMap(t, "nfs1:/export=/mnt/e")}
	subdir := func(path string) v1.PersistentVolumeSource {
		return v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: "nfs1", Path: path}}
	}
	good := "/export/web-data-web-0-pvc-" + string(claimUID)
	for _, c := range []struct {
		name  string
		src   v1.PersistentVolumeSource
		edit  func(*v1.PersistentVolume, *v1.PersistentVolumeClaim) *v1.PersistentVolumeClaim
		want  error
		words string
	}{
		{name: "unknown shape", src: v1.PersistentVolumeSource{HostPath: &v1.HostPathVolumeSource{Path: "/x"}},
			want: ErrUnknownShape},
		{name: "another CSI driver", src: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{Driver: "ebs.csi.aws.com", VolumeHandle: "vol-1"}},
			want: ErrUnknownShape, words: "ebs.csi.aws.com"},
		{name: "not bound", src: subdir(good), edit: func(pv *v1.PersistentVolume, c *v1.PersistentVolumeClaim) *v1.PersistentVolumeClaim {
			pv.Spec.ClaimRef, pv.Status.Phase = nil, v1.VolumeAvailable
			return nil
		}, want: ErrRefused, words: "not bound to a claim (phase Available)"},
		{name: "claim gone", src: subdir(good), edit: func(pv *v1.PersistentVolume, c *v1.PersistentVolumeClaim) *v1.PersistentVolumeClaim {
			pv.Status.Phase = v1.VolumeReleased
			return nil
		}, want: ErrRefused, words: "no longer exists (phase Released)"},
		{name: "claim recreated", src: subdir(good), edit: func(pv *v1.PersistentVolume, c *v1.PersistentVolumeClaim) *v1.PersistentVolumeClaim {
			c.UID = "another"
			return c
		}, want: ErrRefused, words: "now another object"},
		{name: "claim bound elsewhere", src: subdir(good), edit: func(pv *v1.PersistentVolume, c *v1.PersistentVolumeClaim) *v1.PersistentVolumeClaim {
			c.Spec.VolumeName = "other"
			return c
		}, want: ErrRefused, words: "not bound to it"},
		{name: "block volume", src: subdir(good), edit: func(pv *v1.PersistentVolume, c *v1.PersistentVolumeClaim) *v1.PersistentVolumeClaim {
			pv.Spec.VolumeMode = ptr.To(v1.PersistentVolumeBlock)
			return c
		}, want: ErrRefused, words: "Block"},
		{name: "path not the pattern's", src: subdir("/export/something-else"), want: ErrRefused, words: "--path-pattern"},
		{name: "server not mapped", src: v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: "nfs2", Path: good}},
			want: ErrRefused, words: "--mount-map nfs2:SHARE=LOCALPATH"},
		{name: "outside the mapped share", src: subdir("/other" + good[len("/export"):]), want: ErrRefused, words: "outside every share"},
		{name: "path climbing out", src: subdir("/export/../etc/web-data-web-0-pvc-" + string(claimUID)), want: ErrRefused, words: "not a clean absolute path"},
		{name: "read-only", src: v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: "nfs1", Path: good, ReadOnly: true}},
			want: ErrRefused, words: "readOnly"},
		{name: "bad gid annotation", src: subdir(good), edit: func(pv *v1.PersistentVolume, c *v1.PersistentVolumeClaim) *v1.PersistentVolumeClaim {
			pv.Annotations[kubeview.AnnGID] = "wheel"
			return c
		}, want: ErrRefused, words: "not a group ID"},
		{name: "csi-driver-nfs whole share", src: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{Driver: "nfs.csi.k8s.io",
			VolumeHandle: "static", VolumeAttributes: map[string]string{"server": "nfs1", "share": "/export"}}},
			want: ErrRefused, words: "the whole share nfs1:/export"},
		{name: "csi-driver-nfs handle and attributes disagree", src: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{Driver: "nfs.csi.k8s.io",
			VolumeHandle: "nfs1#export#pvc-1##", VolumeAttributes: map[string]string{"server": "nfs1", "share": "/export", "subdir": "pvc-2"}}},
			want: ErrRefused, words: "volumeAttributes share/subdir"},
		{name: "csi-driver-nfs reserved name", src: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{Driver: "nfs.csi.k8s.io",
			VolumeHandle: "nfs1#export#.carve-meta##"}}, want: ErrRefused, words: ".carve-meta"},
		{name: "heketi subdirectory", src: v1.PersistentVolumeSource{Glusterfs: &v1.GlusterfsPersistentVolumeSource{EndpointsName: "ep", Path: "vol_1/sub"}},
			want: ErrRefused, words: "whole heketi volumes"},
		{name: "heketi without endpoints", src: v1.PersistentVolumeSource{Glusterfs: &v1.GlusterfsPersistentVolumeSource{EndpointsName: "ep", Path: "vol_1"}},
			want: ErrRefused, words: "--gluster-servers"},
	} {
		t.Run(c.name, func(t *testing.T) {
			pv, claim := boundPair(c.src)
			if c.edit != nil {
				claim = c.edit(pv, claim)
			}
			tg, err := Map(pv, claim, noEndpoints, mm)
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.words) {
				t.Fatalf("Map: %v (target %+v), want %v saying %q", err, tg, c.want, c.words)
			}
			var r *Refusal
			if !errors.As(err, &r) || r.PV != pv.Name || !strings.Contains(err.Error(), pv.Name) {
				t.Errorf("the refusal does not name the PV: %v", err)
			}
		})
	}
}

func TestOverlaps(t *testing.T) {
	mm := Options{MountMap: mountMap(t, "nfs1:/export=/mnt/e"), Pattern: mustPattern(t, "${pvc.metadata.namespace}/${pvc.metadata.name}")}
	target := func(name, ns, claim string) *Target {
		pv, c := boundPair(v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: "nfs1", Path: "/export/" + ns + "/" + claim}})
		pv.Name, c.Spec.VolumeName, c.Namespace, c.Name = name, name, ns, claim
		pv.Spec.ClaimRef.Namespace, pv.Spec.ClaimRef.Name = ns, claim
		tg, err := Map(pv, c, noEndpoints, mm)
		if err != nil {
			t.Fatal(err)
		}
		return tg
	}
	a := target("pv-a", "web", "data")
	same := target("pv-same", "web", "data")
	// A claim named like a directory that holds another volume's: a/b.
	outer := target("pv-outer", "x", "y")
	inner := target("pv-inner", "x", "y")
	inner.ID.Dir = append(inner.ID.Dir, "z")
	other := target("pv-other", "web", "other")
	all := []*Target{a, same, outer, inner, other}
	for _, c := range []struct {
		t     *Target
		words string
	}{
		{a, "PersistentVolume pv-same points at the same data"},
		{outer, "holds directory x/y/z of PersistentVolume pv-inner"},
		{inner, "is inside directory x/y of PersistentVolume pv-outer"},
		{other, ""},
	} {
		err := Overlaps(c.t, all)
		if c.words == "" {
			if err != nil {
				t.Errorf("%s: %v", c.t.Old.Name, err)
			}
			continue
		}
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), c.words) {
			t.Errorf("%s: %v, want a refusal saying %q", c.t.Old.Name, err, c.words)
		}
	}
}

func mustPattern(t *testing.T, s string) *params.Pattern {
	t.Helper()
	p, err := params.ParseAnyPattern(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLocateReleased: a Released PV is not adopted, but where its data is
// still counts for the nesting checks of the others.
func TestLocateReleased(t *testing.T) {
	pv, claim := boundPair(v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: "nfs1", Path: "/export/web-data-web-0-pvc-" + string(claimUID)}})
	pv.Status.Phase = v1.VolumeReleased
	opts := Options{MountMap: mountMap(t, "nfs1:/export=/mnt/e")}
	if _, err := Map(pv, nil, noEndpoints, opts); !errors.Is(err, ErrRefused) {
		t.Fatalf("Map of a Released PV: %v", err)
	}
	released, err := Locate(pv, nil, noEndpoints, opts)
	if err != nil || released.ID.DirPath() != "web-data-web-0-pvc-"+string(claimUID) {
		t.Fatalf("Locate: %+v %v", released, err)
	}
	// A bound PV on the same directory is refused because of it.
	other := pv.DeepCopy()
	other.Name, other.Status.Phase = "pvc-"+string(claimUID), v1.VolumeBound
	released.Old = pv.DeepCopy()
	released.Old.Name = "released"
	tg, err := Map(other, claim, noEndpoints, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := Overlaps(tg, []*Target{tg, released}); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "PersistentVolume released points at the same data") {
		t.Fatalf("Overlaps: %v", err)
	}
}
