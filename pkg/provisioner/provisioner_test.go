package provisioner

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/klog/v2/ktesting"

	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/kubeview"
	"github.com/carve-csi/carve/pkg/sharemount"
)

const provName = "carve.csi.dev/provisioner"

type harness struct {
	t      *testing.T
	ctx    context.Context
	client kubernetes.Interface
	root   string
}

// startController runs the real wiring (informers, lib controller, carve's
// provisioner) against a fake API server and a share in a temp dir.
func startController(t *testing.T) *harness {
	t.Helper()
	root := filepath.Join(t.TempDir(), "export")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := dirvol.Declare(root); err != nil {
		t.Fatal(err)
	}
	return startControllerOn(t, "10.0.0.5:/export", root)
}

// startControllerOn maps the share SERVER:SHARE to the local directory root.
func startControllerOn(t *testing.T, share, root string) *harness {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	client := fake.NewClientset()
	// The fake API server drops objects created between an informer's List
	// and Watch; wait for the watches before the test creates anything.
	var mu sync.Mutex
	watched := map[string]bool{}
	client.PrependWatchReactor("*", func(a k8stesting.Action) (bool, watch.Interface, error) {
		mu.Lock()
		watched[a.GetResource().Resource] = true
		mu.Unlock()
		return false, nil, nil
	})
	m := sharemount.Map{}
	if err := m.Set(share + "=" + root); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, client, Config{Name: provName, MountMap: m, Threadiness: 4, ResyncPeriod: time.Second})
	}()
	err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		return watched["persistentvolumeclaims"] && watched["persistentvolumes"] && watched["storageclasses"], nil
	})
	if err != nil {
		t.Fatalf("informers never started watching: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("controller did not stop")
		}
	})
	return &harness{t: t, ctx: ctx, client: client, root: root}
}

func (h *harness) class(name string, reclaim v1.PersistentVolumeReclaimPolicy, params map[string]string, mountOptions ...string) {
	h.t.Helper()
	sc := &storagev1.StorageClass{
		ObjectMeta:    metav1.ObjectMeta{Name: name},
		Provisioner:   provName,
		ReclaimPolicy: &reclaim,
		Parameters:    params,
		MountOptions:  mountOptions,
	}
	if _, err := h.client.StorageV1().StorageClasses().Create(h.ctx, sc, metav1.CreateOptions{}); err != nil {
		h.t.Fatal(err)
	}
}

func nfsParams(extra ...string) map[string]string {
	m := map[string]string{"backend": "nfs", "server": "10.0.0.5", "share": "/export"}
	for i := 0; i+1 < len(extra); i += 2 {
		m[extra[i]] = extra[i+1]
	}
	return m
}

func (h *harness) claim(ns, name, class string, mutate ...func(*v1.PersistentVolumeClaim)) *v1.PersistentVolumeClaim {
	h.t.Helper()
	c := &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   ns,
			Name:        name,
			UID:         types.UID(fmt.Sprintf("uid-%s-%s-%d", ns, name, time.Now().UnixNano())),
			Annotations: map[string]string{"volume.kubernetes.io/storage-provisioner": provName},
		},
		Spec: v1.PersistentVolumeClaimSpec{
			StorageClassName: &class,
			AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("2Gi")}},
		},
	}
	for _, m := range mutate {
		m(c)
	}
	c, err := h.client.CoreV1().PersistentVolumeClaims(ns).Create(h.ctx, c, metav1.CreateOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

func (h *harness) waitPV(c *v1.PersistentVolumeClaim) *v1.PersistentVolume {
	h.t.Helper()
	var pv *v1.PersistentVolume
	err := wait.PollUntilContextTimeout(h.ctx, 20*time.Millisecond, 15*time.Second, true, func(ctx context.Context) (bool, error) {
		var err error
		pv, err = h.client.CoreV1().PersistentVolumes().Get(ctx, "pvc-"+string(c.UID), metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		h.t.Fatalf("no PV for claim %s/%s: %v; events: %s", c.Namespace, c.Name, err, h.events(c.Namespace))
	}
	return pv
}

func (h *harness) events(ns string) string {
	list, _ := h.client.CoreV1().Events(ns).List(h.ctx, metav1.ListOptions{})
	var b strings.Builder
	for _, e := range list.Items {
		fmt.Fprintf(&b, "[%s %s %s: %s] ", e.InvolvedObject.Name, e.Type, e.Reason, e.Message)
	}
	return b.String()
}

func (h *harness) waitEvent(ns, object, reason, contains string) {
	h.t.Helper()
	err := wait.PollUntilContextTimeout(h.ctx, 20*time.Millisecond, 15*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := h.client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		for _, e := range list.Items {
			if e.InvolvedObject.Name == object && e.Reason == reason && strings.Contains(e.Message, contains) {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		h.t.Fatalf("no %s event on %s containing %q; events: %s", reason, object, contains, h.events(ns))
	}
}

// hasEvent reports whether any event on object mentions contains.
func (h *harness) hasEvent(ns, object, contains string) bool {
	list, err := h.client.CoreV1().Events(ns).List(h.ctx, metav1.ListOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	for _, e := range list.Items {
		if e.InvolvedObject.Name == object && strings.Contains(e.Message, contains) {
			return true
		}
	}
	return false
}

// release marks a PV Released as the PV controller does after its claim is deleted.
func (h *harness) release(pv *v1.PersistentVolume) {
	h.t.Helper()
	if err := h.client.CoreV1().PersistentVolumeClaims(pv.Spec.ClaimRef.Namespace).Delete(h.ctx, pv.Spec.ClaimRef.Name, metav1.DeleteOptions{}); err != nil {
		h.t.Fatal(err)
	}
	pv, err := h.client.CoreV1().PersistentVolumes().Get(h.ctx, pv.Name, metav1.GetOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	pv.Status.Phase = v1.VolumeReleased
	if _, err := h.client.CoreV1().PersistentVolumes().UpdateStatus(h.ctx, pv, metav1.UpdateOptions{}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) waitPVGone(name string) {
	h.t.Helper()
	err := wait.PollUntilContextTimeout(h.ctx, 20*time.Millisecond, 15*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := h.client.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		h.t.Fatalf("PV %s not deleted: %v", name, err)
	}
}

func TestProvisionPV(t *testing.T) {
	h := startController(t)
	h.class("carve-nfs", v1.PersistentVolumeReclaimRetain, nfsParams(), "hard", "nfsvers=4.1")
	c := h.claim("db", "data-mongo-0", "carve-nfs", func(c *v1.PersistentVolumeClaim) {
		c.Spec.AccessModes = []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce, v1.ReadOnlyMany}
	})
	pv := h.waitPV(c)

	if pv.Spec.NFS == nil || pv.Spec.NFS.Server != "10.0.0.5" || pv.Spec.NFS.Path != "/export/db/data-mongo-0" {
		t.Errorf("source = %+v, want nfs 10.0.0.5:/export/db/data-mongo-0", pv.Spec.PersistentVolumeSource)
	}
	if q := pv.Spec.Capacity[v1.ResourceStorage]; q.String() != "2Gi" {
		t.Errorf("capacity = %s", q.String())
	}
	if fmt.Sprint(pv.Spec.AccessModes) != "[ReadWriteOnce ReadOnlyMany]" {
		t.Errorf("access modes = %v", pv.Spec.AccessModes)
	}
	if pv.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimRetain {
		t.Errorf("reclaim = %s", pv.Spec.PersistentVolumeReclaimPolicy)
	}
	if fmt.Sprint(pv.Spec.MountOptions) != "[hard nfsvers=4.1]" {
		t.Errorf("mount options = %v", pv.Spec.MountOptions)
	}
	if pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.Name != "data-mongo-0" || pv.Spec.StorageClassName != "carve-nfs" {
		t.Errorf("claimRef/class = %+v %q", pv.Spec.ClaimRef, pv.Spec.StorageClassName)
	}
	if pv.Annotations[kubeview.AnnGID] != "2000" {
		t.Errorf("gid annotation = %q, want 2000", pv.Annotations[kubeview.AnnGID])
	}
	if got := pv.Annotations[kubeview.AnnVolumeID]; got != "1#nfs#10.0.0.5#/export#db/data-mongo-0#retain" {
		t.Errorf("volume id = %q", got)
	}
	fi, err := os.Stat(filepath.Join(h.root, "db", "data-mongo-0"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); os.Getuid() == 0 && (st.Gid != 2000 || st.Mode&0o7777 != 0o2770) {
		t.Errorf("directory is gid %d mode %#o, want 2000 02770", st.Gid, st.Mode&0o7777)
	}

	// A second claim gets the next GID.
	pv2 := h.waitPV(h.claim("db", "data-mongo-1", "carve-nfs"))
	if pv2.Annotations[kubeview.AnnGID] != "2001" {
		t.Errorf("second gid = %q, want 2001", pv2.Annotations[kubeview.AnnGID])
	}

	// volumeType csi writes a CSI PV for carve's node plugin.
	h.class("carve-csi", v1.PersistentVolumeReclaimRetain, nfsParams("volumeType", "csi"))
	cpv := h.waitPV(h.claim("db", "csi-claim", "carve-csi"))
	if cpv.Spec.CSI == nil || cpv.Spec.CSI.Driver != kubeview.DriverName || cpv.Spec.CSI.VolumeHandle != cpv.Annotations[kubeview.AnnVolumeID] ||
		cpv.Spec.CSI.VolumeAttributes["subdir"] != "db/csi-claim" {
		t.Errorf("csi source = %+v", cpv.Spec.CSI)
	}
}

func TestUnsupportedClaimsGetEvents(t *testing.T) {
	h := startController(t)
	h.class("carve-nfs", v1.PersistentVolumeReclaimRetain, nfsParams())
	h.class("typo", v1.PersistentVolumeReclaimRetain, nfsParams("archiveOnDelet", "true"))
	h.class("unreachable", v1.PersistentVolumeReclaimRetain, map[string]string{"backend": "nfs", "server": "10.9.9.9", "share": "/other"})
	block := v1.PersistentVolumeBlock
	h.claim("ns", "block", "carve-nfs", func(c *v1.PersistentVolumeClaim) { c.Spec.VolumeMode = &block })
	h.claim("ns", "clone", "carve-nfs", func(c *v1.PersistentVolumeClaim) {
		c.Spec.DataSource = &v1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: "src"}
	})
	h.claim("ns", "selector", "carve-nfs", func(c *v1.PersistentVolumeClaim) {
		c.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"a": "b"}}
	})
	h.claim("ns", "typo", "typo")
	h.claim("ns", "unreachable", "unreachable")
	h.claim("ns", "hostile", "carve-nfs", func(c *v1.PersistentVolumeClaim) { c.Name = "hostile" })

	h.waitEvent("ns", "block", "ProvisioningFailed", "does not support block")
	h.waitEvent("ns", "clone", "ProvisioningFailed", "remove spec.dataSource")
	h.waitEvent("ns", "selector", "ProvisioningFailed", "remove the selector")
	h.waitEvent("ns", "typo", "ProvisioningFailed", `unknown parameter "archiveOnDelet"`)
	// Each refusal names the object at fault, and only that one (the
	// library itself prefixes "failed to provision volume with StorageClass").
	h.waitEvent("ns", "clone", "ProvisioningFailed", "fix PersistentVolumeClaim ns/clone (spec.dataSource)")
	h.waitEvent("ns", "selector", "ProvisioningFailed", "fix PersistentVolumeClaim ns/selector (spec.selector)")
	h.waitEvent("ns", "typo", "ProvisioningFailed", "fix StorageClass typo: invalid StorageClass parameter")
	for _, claim := range []string{"clone", "selector"} {
		if h.hasEvent("ns", claim, "invalid StorageClass parameter") {
			t.Errorf("claim %s's event blames a StorageClass", claim)
		}
	}
	h.waitEvent("ns", "unreachable", "ProvisioningFailed", "--mount-map 10.9.9.9:/other=LOCALPATH")
	entries, _ := os.ReadDir(filepath.Join(h.root, "ns"))
	for _, e := range entries {
		if e.Name() != "hostile" {
			t.Errorf("unexpected directory ns/%s", e.Name())
		}
	}
}

func TestHostileLabelsNeverEscape(t *testing.T) {
	h := startController(t)
	h.class("by-label", v1.PersistentVolumeReclaimRetain, nfsParams("pathPattern", "${pvc.metadata.namespace}/${pvc.metadata.annotations['dir']}"))
	h.claim("ns", "evil", "by-label", func(c *v1.PersistentVolumeClaim) { c.Annotations["dir"] = "../../etc" })
	h.waitEvent("ns", "evil", "ProvisioningFailed", "unsafe path segment")
	h.waitEvent("ns", "evil", "ProvisioningFailed", `fix PersistentVolumeClaim ns/evil (metadata.annotations["dir"])`)
	if h.hasEvent("ns", "evil", "invalid StorageClass parameter") || h.hasEvent("ns", "evil", "fix StorageClass") {
		t.Error("a hostile annotation is blamed on the StorageClass")
	}
	h.claim("ns", "unlabelled", "by-label")
	h.waitEvent("ns", "unlabelled", "ProvisioningFailed", `fix PersistentVolumeClaim ns/unlabelled (metadata.annotations["dir"])`)
	if _, err := os.Stat(filepath.Join(h.root, "ns")); !os.IsNotExist(err) {
		t.Errorf("something was created: %v", err)
	}
}

func TestReattachAndDeletePolicies(t *testing.T) {
	h := startController(t)
	h.class("retain", v1.PersistentVolumeReclaimRetain, nfsParams())
	h.class("archive", v1.PersistentVolumeReclaimDelete, nfsParams("onDelete", "archive"))
	h.class("delete", v1.PersistentVolumeReclaimDelete, nfsParams("onDelete", "delete"))

	// Retain: claim deleted, PV Released, data stays; a new claim of the same
	// name re-attaches with an event.
	pv := h.waitPV(h.claim("db", "data-mongo-0", "retain"))
	marker := filepath.Join(h.root, "db", "data-mongo-0", "marker")
	if err := os.WriteFile(marker, []byte("mongo-0"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.release(pv)
	c2 := h.claim("db", "data-mongo-0", "retain")
	pv2 := h.waitPV(c2)
	if pv2.Spec.NFS.Path != pv.Spec.NFS.Path || pv2.Annotations[kubeview.AnnGID] != pv.Annotations[kubeview.AnnGID] {
		t.Errorf("re-attached PV %s:%s, want %s:%s", pv2.Spec.NFS.Path, pv2.Annotations[kubeview.AnnGID], pv.Spec.NFS.Path, pv.Annotations[kubeview.AnnGID])
	}
	h.waitEvent("db", "data-mongo-0", ReasonReattached, "re-attached existing directory db/data-mongo-0")
	if b, err := os.ReadFile(marker); err != nil || string(b) != "mongo-0" {
		t.Errorf("marker = %q, %v", b, err)
	}

	// Two live claims never share a directory, whatever the pattern.
	h.class("flat", v1.PersistentVolumeReclaimRetain, nfsParams("pathPattern", "${pvc.metadata.name}"))
	h.waitPV(h.claim("team-a", "shared", "flat"))
	h.claim("team-b", "shared", "flat")
	h.waitEvent("team-b", "shared", "ProvisioningFailed", "is in use by PersistentVolume")

	// Archive.
	apv := h.waitPV(h.claim("db", "to-archive", "archive"))
	if err := os.WriteFile(filepath.Join(h.root, "db", "to-archive", "f"), []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.release(apv)
	h.waitPVGone(apv.Name)
	archived, _ := filepath.Glob(filepath.Join(h.root, ".carve-archive", "db", "to-archive-*", "f"))
	if len(archived) != 1 {
		t.Errorf("archive = %v, want one copy", archived)
	}
	h.waitEvent("", apv.Name, ReasonDeleted, "onDelete=archive")

	// Delete.
	dpv := h.waitPV(h.claim("db", "to-delete", "delete"))
	h.release(dpv)
	h.waitPVGone(dpv.Name)
	if _, err := os.Stat(filepath.Join(h.root, "db", "to-delete")); !os.IsNotExist(err) {
		t.Errorf("deleted volume still there: %v", err)
	}
	err := wait.PollUntilContextTimeout(h.ctx, 20*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		e, _ := os.ReadDir(filepath.Join(h.root, ".carve-trash"))
		return len(e) == 0, nil
	})
	if err != nil {
		t.Error("trash never purged")
	}
	// The retained claim's data is untouched by all of this.
	if b, err := os.ReadFile(marker); err != nil || string(b) != "mongo-0" {
		t.Errorf("marker after deletes = %q, %v", b, err)
	}
}
