package adopt

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/klog/v2/ktesting"

	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/kubeview"
)

// world is a fake cluster with nfs-subdir PVs and their claims, a declared
// share holding their directories, and a stand-in for the PV controller: a
// PV created for a claim's UID makes both Bound, as the controller does when
// a Lost claim's PV comes back.
type world struct {
	client *fake.Clientset
	share  string
	opts   Options
}

func newWorld(t *testing.T, objs ...runtime.Object) *world {
	t.Helper()
	share := filepath.Join(t.TempDir(), "export")
	if err := os.Mkdir(share, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := dirvol.Declare(share); err != nil {
		t.Fatal(err)
	}
	w := &world{client: fake.NewClientset(objs...), share: share, opts: Options{MountMap: mountMap(t, "nfs1:/export="+share)}}
	w.client.PrependReactor("create", "persistentvolumes", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pv := a.(k8stesting.CreateAction).GetObject().(*v1.PersistentVolume)
		ref := pv.Spec.ClaimRef
		obj, err := w.client.Tracker().Get(v1.SchemeGroupVersion.WithResource("persistentvolumeclaims"), ref.Namespace, ref.Name)
		if err != nil {
			return false, nil, nil
		}
		claim := obj.(*v1.PersistentVolumeClaim).DeepCopy()
		if claim.UID == ref.UID && claim.Spec.VolumeName == pv.Name {
			pv.Status.Phase = v1.VolumeBound
			claim.Status.Phase = v1.ClaimBound
			_ = w.client.Tracker().Update(v1.SchemeGroupVersion.WithResource("persistentvolumeclaims"), claim, claim.Namespace)
		}
		return false, nil, nil
	})
	return w
}

// subdirPV is an nfs-subdir PV bound to claim ns/name, with its directory
// and a file on the share.
func (w *world) subdirPV(t *testing.T, ns, name string) (*v1.PersistentVolume, *v1.PersistentVolumeClaim) {
	t.Helper()
	uid := "uid-" + name
	pvName := "pvc-" + uid
	dir := ns + "-" + name + "-" + pvName
	pv, claim := boundPair(v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: "nfs1", Path: "/export/" + dir}})
	pv.Name, pv.UID, pv.Finalizers = pvName, types.UID("pv-"+uid), []string{"kubernetes.io/pv-protection"}
	claim.Namespace, claim.Name, claim.UID, claim.Spec.VolumeName = ns, name, types.UID(uid), pvName
	claim.Status.Phase = v1.ClaimBound
	pv.Spec.ClaimRef.Namespace, pv.Spec.ClaimRef.Name, pv.Spec.ClaimRef.UID = ns, name, claim.UID
	if err := os.Mkdir(filepath.Join(w.share, dir), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(w.share, dir, "data.txt"), []byte(name+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return pv, claim
}

func (w *world) run(t *testing.T, apply bool, sel Selection) (*Report, string) {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var out bytes.Buffer
	rep, err := Run(ctx, Config{Client: w.client, Mapping: w.opts, Select: sel, Apply: apply, BindTimeout: 10 * time.Second, Out: &out})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	t.Logf("output:\n%s", out.String())
	return rep, out.String()
}

// mutations lists the changing API calls, as "verb resource/name".
func (w *world) mutations() []string {
	var out []string
	for _, a := range w.client.Actions() {
		switch a.GetVerb() {
		case "get", "list", "watch":
			continue
		}
		name := ""
		switch a := a.(type) {
		case k8stesting.CreateAction:
			name = a.GetObject().(metav1.Object).GetName()
		case k8stesting.PatchAction:
			name = a.GetName()
		case k8stesting.DeleteAction:
			name = a.GetName()
		}
		out = append(out, a.GetVerb()+" "+a.GetResource().Resource+"/"+name)
	}
	return out
}

func TestRunDryRunThenApply(t *testing.T) {
	w := newWorld(t)
	pv, claim := w.subdirPV(t, "web", "data-web-0")
	busyPV, busyClaim := w.subdirPV(t, "web", "data-web-1")
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "web"},
		Spec: v1.PodSpec{Volumes: []v1.Volume{{Name: "data", VolumeSource: v1.VolumeSource{
			PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: busyClaim.Name}}}}},
		Status: v1.PodStatus{Phase: v1.PodRunning}}
	for _, o := range []runtime.Object{pv, claim, busyPV, busyClaim, pod} {
		if err := w.client.Tracker().Add(o); err != nil {
			t.Fatal(err)
		}
	}

	rep, out := w.run(t, false, Selection{All: true})
	if len(rep.Planned) != 1 || rep.Planned[0] != pv.Name || len(rep.Refused) != 1 || !strings.Contains(rep.Refused[0].Error(), "running pod(s) web-1") {
		t.Fatalf("dry run report %+v", rep)
	}
	if m := w.mutations(); len(m) != 0 {
		t.Fatalf("the dry run changed the cluster: %v", m)
	}
	if _, err := os.Stat(filepath.Join(w.share, ".carve-meta")); !os.IsNotExist(err) {
		t.Fatalf("the dry run wrote to the share (%v)", err)
	}
	for _, want := range []string{"set reclaimPolicy Retain on pv/" + pv.Name + " (now Delete)", "volumeHandle: 1#nfs#nfs1#/export#web-data-web-0-", "Dry run: 1 to adopt, 1 refused"} {
		if !strings.Contains(out, want) {
			t.Errorf("the plan does not say %q", want)
		}
	}

	rep, _ = w.run(t, true, Selection{PVs: []string{pv.Name}})
	if len(rep.Adopted) != 1 || rep.Failed() {
		t.Fatalf("apply report %+v", rep)
	}
	// Retain before anything else; the claim carries the new PV while the
	// old one is deleted; the note goes once the new PV exists.
	want := []string{"patch persistentvolumes/" + pv.Name, "patch persistentvolumeclaims/" + claim.Name,
		"delete persistentvolumes/" + pv.Name, "create persistentvolumes/" + pv.Name, "patch persistentvolumeclaims/" + claim.Name}
	if got := w.mutations(); !slices.Equal(got, want) {
		t.Fatalf("API changes %v, want %v", got, want)
	}
	patch := w.client.Actions()
	for _, a := range patch {
		if p, ok := a.(k8stesting.PatchAction); ok && p.GetResource().Resource == "persistentvolumes" {
			if string(p.GetPatch()) != `{"spec":{"persistentVolumeReclaimPolicy":"Retain"}}` {
				t.Errorf("first patch of the old PV: %s", p.GetPatch())
			}
			break
		}
	}
	ctx := context.Background()
	got, err := w.client.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id, ok, err := kubeview.VolumeID(got)
	if !ok || err != nil || got.Spec.CSI == nil || got.Spec.ClaimRef.UID != claim.UID || got.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimRetain {
		t.Fatalf("new PV %+v (%v %v)", got.Spec, ok, err)
	}
	c, _ := w.client.CoreV1().PersistentVolumeClaims("web").Get(ctx, claim.Name, metav1.GetOptions{})
	if _, noted := c.Annotations[AnnCheckpoint]; noted || c.Status.Phase != v1.ClaimBound {
		t.Errorf("claim after adoption: %v %s", c.Annotations, c.Status.Phase)
	}
	share, _ := dirvol.Open(w.share)
	info, err := share.Lookup(id.Dir)
	if err != nil || info.Meta == nil || info.Meta.PV != pv.Name || info.Meta.Claim != claim.Name {
		t.Fatalf("record of %s: %+v %v", id.DirPath(), info, err)
	}

	// A second run has nothing left to do.
	w.client.ClearActions()
	rep, _ = w.run(t, true, Selection{PVs: []string{pv.Name}})
	if len(rep.Already) != 1 || len(w.mutations()) != 0 {
		t.Fatalf("second run: %+v, changes %v", rep, w.mutations())
	}
	if busy, _ := w.client.CoreV1().PersistentVolumes().Get(ctx, busyPV.Name, metav1.GetOptions{}); busy.Spec.NFS == nil ||
		busy.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimDelete {
		t.Errorf("the refused PV was changed: %+v", busy.Spec)
	}
}

// TestRunResumesAfterCrash: a run that died after deleting the old PV left
// only the note on the claim; the next run creates the PV from it.
func TestRunResumesAfterCrash(t *testing.T) {
	w := newWorld(t)
	pv, claim := w.subdirPV(t, "web", "data-web-0")
	tg, err := Map(pv, claim, noEndpoints, w.opts)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(checkpoint{OldUID: pv.UID, PV: tg.New})
	claim.Annotations = map[string]string{AnnCheckpoint: string(data)}
	claim.Status.Phase = v1.ClaimLost
	if err := w.client.Tracker().Add(claim); err != nil {
		t.Fatal(err)
	}

	rep, out := w.run(t, false, Selection{All: true})
	if len(rep.Planned) != 1 || len(w.mutations()) != 0 || !strings.Contains(out, "deleted by an earlier run") {
		t.Fatalf("dry run: %+v, changes %v", rep, w.mutations())
	}
	rep, _ = w.run(t, true, Selection{StorageClasses: []string{"old"}})
	if len(rep.Adopted) != 1 || len(rep.Resumed) != 1 || rep.Failed() {
		t.Fatalf("apply report %+v", rep)
	}
	got, err := w.client.CoreV1().PersistentVolumes().Get(context.Background(), pv.Name, metav1.GetOptions{})
	if err != nil || got.Spec.CSI == nil || got.Spec.CSI.VolumeHandle != tg.ID.String() {
		t.Fatalf("PV after the resumed run: %+v %v", got, err)
	}
	if !slices.Equal(w.mutations(), []string{"create persistentvolumes/" + pv.Name, "patch persistentvolumeclaims/" + claim.Name}) {
		t.Errorf("changes %v", w.mutations())
	}
}

func TestRunRefusesUnknownNamedPV(t *testing.T) {
	w := newWorld(t, &v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "local-1"},
		Spec: v1.PersistentVolumeSpec{PersistentVolumeSource: v1.PersistentVolumeSource{Local: &v1.LocalVolumeSource{Path: "/mnt/disk"}}}})
	rep, _ := w.run(t, true, Selection{PVs: []string{"local-1", "missing"}})
	if len(rep.Refused) != 2 || !strings.Contains(rep.Refused[0].Error(), "local-1") || !strings.Contains(rep.Refused[1].Error(), "no such PersistentVolume") {
		t.Fatalf("report %+v", rep)
	}
	if len(w.mutations()) != 0 {
		t.Fatalf("changes %v", w.mutations())
	}
	// With --all other kinds are skipped, not refused.
	rep, _ = w.run(t, false, Selection{All: true})
	if len(rep.Skipped) != 1 || rep.Failed() {
		t.Fatalf("--all: %+v", rep)
	}
}
