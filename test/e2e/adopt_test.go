//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"

	"github.com/carve-csi/carve/internal/testenv/glusterd"
	"github.com/carve-csi/carve/pkg/adopt"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/gluster"
	"github.com/carve-csi/carve/pkg/kubeview"
	"github.com/carve-csi/carve/test/cluster"
)

// TestAdoptLegacyVolumes (issue 15, item 3): PVs made exactly as
// nfs-subdir-external-provisioner, csi-driver-nfs and the in-tree glusterfs
// plugin with heketi made them, each bound to its claim and holding a file,
// are taken over by carve-adopt: a dry run changes nothing (and refuses the
// claim a pod still uses), --apply replaces every PV by a carve CSI PV of
// the same name bound to the same claim, a second run has nothing to do,
// and a pod on the real node reads the old files through carve's node
// plugin: bind mounts of the share's directories for NFS (this kernel has no
// NFS client, so the old spec.nfs PVs could never be mounted here), a FUSE
// mount of the heketi volume, writable by a non-root user through the
// volume's kept pv.beta.kubernetes.io/gid.
func TestAdoptLegacyVolumes(t *testing.T) {
	g := glusterd.Start(t)
	// heketi names volumes vol_<32 hex digits>.
	hexID := make([]byte, 16)
	_, _ = rand.Read(hexID)
	vol := g.CreateVolume(t, "vol_"+hex.EncodeToString(hexID), 1)
	glusterMount := g.Mount(t, vol.Name)
	// heketi gave the brick root the volume's GID and mode 2775; the
	// application's files are group-writable.
	if err := os.Chown(glusterMount, 0, 2001); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(glusterMount, 0o775|os.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	hello := filepath.Join(glusterMount, "hello.txt")
	if err := os.WriteFile(hello, []byte("from heketi\n"), 0o664); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(hello, 0, 2001); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(hello, 0o664); err != nil {
		t.Fatal(err)
	}
	hostIP := nonLoopbackIP(t)

	c, _, share := startRealCSI(t)
	ctx := t.Context()
	bin := buildAdopt(t, c)
	const ns = "legacy"
	t.Cleanup(func() { dumpPods(t, c, ns) })
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The old provisioners' classes, claims and PVs.
	for name, prov := range map[string]string{"nfs-client": "k8s-sigs.io/nfs-subdir-external-provisioner",
		"nfs-csi": "nfs.csi.k8s.io", "glusterfs": "kubernetes.io/glusterfs"} {
		sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: prov,
			ReclaimPolicy: ptr.To(v1.PersistentVolumeReclaimDelete)}
		if _, err := c.Client.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	old := &legacy{t: t, c: c, ns: ns, share: share}
	subdirClaim := old.claim(ctx, "data-subdir", "nfs-client")
	subdirDir := ns + "-" + subdirClaim.Name + "-pvc-" + string(subdirClaim.UID)
	old.dir(subdirDir, "from nfs-subdir\n")
	old.pv(ctx, subdirClaim, map[string]string{adopt.AnnProvisionedBy: "k8s-sigs.io/nfs-subdir-external-provisioner"}, nil,
		v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: "nfs.example.com", Path: "/export/" + subdirDir}})

	csiClaim := old.claim(ctx, "data-csi", "nfs-csi")
	csiDir := "pvc-" + string(csiClaim.UID)
	old.dir(csiDir, "from csi-driver-nfs\n")
	old.pv(ctx, csiClaim, map[string]string{adopt.AnnProvisionedBy: "nfs.csi.k8s.io"},
		[]string{"external-provisioner.volume.kubernetes.io/finalizer"},
		v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{
			Driver:       "nfs.csi.k8s.io",
			VolumeHandle: "nfs.example.com#export#" + csiDir + "##",
			VolumeAttributes: map[string]string{"server": "nfs.example.com", "share": "/export", "subdir": csiDir,
				"csi.storage.k8s.io/pv/name": csiDir, "csi.storage.k8s.io/pvc/name": csiClaim.Name, "csi.storage.k8s.io/pvc/namespace": ns},
		}})

	glusterClaim := old.claim(ctx, "data-gluster", "glusterfs")
	ep := "glusterfs-dynamic-" + string(glusterClaim.UID)
	subsets := []v1.EndpointSubset{{Addresses: []v1.EndpointAddress{{IP: hostIP}}, Ports: []v1.EndpointPort{{Port: 1}}}} //lint:ignore SA1019 the in-tree glusterfs plugin's PVs name an Endpoints object
	endpoints := &v1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: ep, Namespace: ns}, Subsets: subsets}                 //lint:ignore SA1019 as above
	if _, err := c.Client.CoreV1().Endpoints(ns).Create(ctx, endpoints, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	old.pv(ctx, glusterClaim, map[string]string{
		adopt.AnnProvisionedBy:                   "kubernetes.io/glusterfs",
		kubeview.AnnGID:                          "2001",
		"gluster.kubernetes.io/heketi-volume-id": hex.EncodeToString(hexID),
		"gluster.org/type":                       "file",
		"Description":                            "Gluster-Internal: Dynamically provisioned PV",
	}, nil, v1.PersistentVolumeSource{Glusterfs: &v1.GlusterfsPersistentVolumeSource{
		EndpointsName: ep, Path: vol.Name, EndpointsNamespace: ptr.To(ns)}})
	claims := []*v1.PersistentVolumeClaim{subdirClaim, csiClaim, glusterClaim}
	old.waitBound(ctx, claims)
	before := old.snapshot(ctx)

	// The workload is still up: a pod of the nfs-subdir claim (it never
	// starts: there is no NFS client here, but it is not terminated).
	oldPod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "old-app", Namespace: ns}, Spec: v1.PodSpec{
		TerminationGracePeriodSeconds: ptr.To(int64(1)),
		Containers:                    []v1.Container{{Name: "app", Image: "carve.test/busybox:1.35", ImagePullPolicy: v1.PullNever, Command: []string{"sleep", "1000000"}}},
		Volumes:                       []v1.Volume{{Name: "data", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: subdirClaim.Name}}}},
	}}
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, oldPod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	args := []string{"--kubeconfig", c.Kubeconfig, "--mount-map", "nfs.example.com:/export=" + share,
		"--storage-class", "nfs-client,nfs-csi,glusterfs"}
	out, code := runAdopt(t, bin, args...)
	if code != 1 || !strings.Contains(out, "claim legacy/data-subdir is used by running pod(s) old-app") ||
		!strings.Contains(out, "Dry run: 2 to adopt, 1 refused") {
		t.Fatalf("dry run with the workload up: exit %d, want 1 and the claim's pod named", code)
	}
	old.unchanged(ctx, before, g, vol.Name)

	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, oldPod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := poll(ctx, 2*time.Minute, func(ctx context.Context) (bool, error) {
		_, err := c.Client.CoreV1().Pods(ns).Get(ctx, oldPod.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	}); err != nil {
		t.Fatalf("pod old-app not gone: %v", err)
	}
	out, code = runAdopt(t, bin, args...)
	if code != 0 || !strings.Contains(out, "Dry run: 3 to adopt, 0 refused") {
		t.Fatalf("dry run: exit %d", code)
	}
	for _, step := range []string{"set reclaimPolicy Retain on pv/pvc-" + string(glusterClaim.UID) + " (now Delete)",
		"record carve's ownership on Gluster volume " + vol.Name, "volumeHandle: 1#gluster#" + hostIP + "#" + vol.Name + "##retain",
		"volumeHandle: 1#nfs#nfs.example.com#/export#" + subdirDir + "#retain", "volumeHandle: 1#nfs#nfs.example.com#/export#" + csiDir + "#retain"} {
		if !strings.Contains(out, step) {
			t.Errorf("the dry run's plan does not say %q", step)
		}
	}
	old.unchanged(ctx, before, g, vol.Name)

	// --apply, killed (SIGKILL) as soon as it has deleted the first old PV:
	// that claim is Lost (the PersistentVolume controller's verdict for a
	// bound claim whose PV is gone) until the next run puts the carve PV in
	// place from the note on the claim and finishes the rest.
	t0 := time.Now()
	lost := old.applyKilled(ctx, bin, append(args, "--apply"), before)
	t.Logf("carve-adopt --apply killed after deleting pv/%s; claim %s/%s is %s", lost.Spec.VolumeName, ns, lost.Name, lost.Status.Phase)
	if lost.Status.Phase != v1.ClaimLost {
		t.Errorf("claim %s after the old PV's deletion: phase %s, want Lost", lost.Name, lost.Status.Phase)
	}
	out, code = runAdopt(t, bin, append(args, "--apply")...)
	if code != 0 || !strings.Contains(out, "Adopted 3 (1 finishing an earlier run), 0 refused") {
		t.Fatalf("--apply after the crash: exit %d, want 0 and the 3 PVs adopted, one of them finishing the killed run's work", code)
	}
	t.Logf("carve-adopt --apply: killed once, run again; 3 PVs replaced and their claims Bound again in %s", time.Since(t0).Round(100*time.Millisecond))

	// Same names, same claims, carve's PVs; carve's records written.
	for _, cl := range claims {
		got, err := c.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, cl.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.UID != cl.UID || got.Spec.VolumeName != cl.Spec.VolumeName || got.Status.Phase != v1.ClaimBound {
			t.Errorf("claim %s after adoption: uid %s volume %s phase %s", cl.Name, got.UID, got.Spec.VolumeName, got.Status.Phase)
		}
		if _, ok := got.Annotations[adopt.AnnCheckpoint]; ok {
			t.Errorf("claim %s keeps %s", cl.Name, adopt.AnnCheckpoint)
		}
		pv, err := c.Client.CoreV1().PersistentVolumes().Get(ctx, cl.Spec.VolumeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		id, ok, err := kubeview.VolumeID(pv)
		if !ok || err != nil || pv.Spec.CSI == nil || pv.Spec.CSI.Driver != kubeview.DriverName || string(pv.UID) == before[pv.Name].uid ||
			pv.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimRetain || pv.Spec.ClaimRef.UID != cl.UID {
			t.Fatalf("PV %s after adoption: %+v (%v %v)", pv.Name, pv.Spec, ok, err)
		}
		if len(id.Dir) > 0 {
			sh, err := dirvol.Open(share)
			if err != nil {
				t.Fatal(err)
			}
			info, err := sh.Lookup(id.Dir)
			if err != nil || info.Meta == nil || info.Meta.PV != pv.Name || info.Meta.Claim != cl.Name || info.Meta.Namespace != ns {
				t.Errorf("carve's record of %s: %+v %v", id.DirPath(), info, err)
			}
		} else if pv.Annotations[kubeview.AnnGID] != "2001" {
			t.Errorf("the heketi PV lost its GID: %v", pv.Annotations)
		}
	}
	if o := glusterOption(t, g, vol.Name, gluster.OptPV); o != glusterClaim.Spec.VolumeName {
		t.Errorf("Gluster volume %s: %s=%q, want %s", vol.Name, gluster.OptPV, o, glusterClaim.Spec.VolumeName)
	}

	// Idempotent: nothing left to do.
	out, code = runAdopt(t, bin, append(args, "--apply")...)
	if code != 0 || !strings.Contains(out, "Adopted 0 (0 finishing an earlier run), 0 refused or failed, 3 carve's already") {
		t.Fatalf("second --apply: exit %d", code)
	}

	// A pod on the real node reads the old data through carve and writes
	// it as a non-root user without fsGroup: the heketi volume's group
	// comes from the kept GID annotation, which the kubelet adds to the
	// container's supplementary groups, and Gluster's FUSE client, in
	// carve's FUSE holder, reads them from /proc (hostPID).
	t0 = time.Now()
	user := func(name, cmd string, gid int64, mounts ...string) v1.Container {
		ctr := v1.Container{
			Name: name, Image: "carve.test/busybox:1.35", ImagePullPolicy: v1.PullNever,
			SecurityContext: &v1.SecurityContext{RunAsUser: ptr.To(int64(999)), RunAsGroup: ptr.To(gid)},
			Command:         []string{"sh", "-c", cmd + " && touch /tmp/ready && exec sleep 1000000"},
			ReadinessProbe:  &v1.Probe{ProbeHandler: v1.ProbeHandler{Exec: &v1.ExecAction{Command: []string{"cat", "/tmp/ready"}}}, PeriodSeconds: 1},
		}
		for _, m := range mounts {
			ctr.VolumeMounts = append(ctr.VolumeMounts, v1.VolumeMount{Name: m, MountPath: "/" + m})
		}
		return ctr
	}
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "new-app", Namespace: ns}, Spec: v1.PodSpec{
		TerminationGracePeriodSeconds: ptr.To(int64(1)),
		Containers: []v1.Container{
			user("app", "echo after-adoption >> /subdir/hello.txt && echo after-adoption >> /csi/hello.txt && echo after-adoption >> /gluster/hello.txt",
				999, "subdir", "csi", "gluster"),
		},
		Volumes: []v1.Volume{
			{Name: "subdir", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: subdirClaim.Name}}},
			{Name: "csi", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: csiClaim.Name}}},
			{Name: "gluster", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: glusterClaim.Name}}},
		},
	}}
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := poll(ctx, 3*time.Minute, func(ctx context.Context) (bool, error) {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		return err == nil && podReady(p), err
	}); err != nil {
		t.Fatalf("pod new-app not Ready: %v", err)
	}
	t.Logf("pod new-app Ready on the real node %s after its creation", time.Since(t0).Round(100*time.Millisecond))
	inPod, err := c.Kubectl(ctx, "-n", ns, "exec", pod.Name, "-c", "app", "--", "sh", "-c",
		"cat /subdir/hello.txt /csi/hello.txt /gluster/hello.txt; awk '$2==\"/gluster\" {print \"mount\", $3}' /proc/mounts; echo groups $(id -G)")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("inside new-app:\n%s", inPod)
	for _, want := range []string{"from nfs-subdir\nafter-adoption\n", "from csi-driver-nfs\nafter-adoption\n", "from heketi\nafter-adoption\n",
		"mount fuse.glusterfs\n"} {
		if !strings.Contains(inPod, want) {
			t.Errorf("new-app does not show %q", want)
		}
	}
	if groups := strings.Fields(inPod[strings.LastIndex(inPod, "groups "):]); !slices.Contains(groups, "2001") {
		t.Errorf("container app runs with groups %v: the kept %s=2001 did not reach it", groups[1:], kubeview.AnnGID)
	}
	for path, want := range map[string]string{
		filepath.Join(share, subdirDir, "hello.txt"): "from nfs-subdir\nafter-adoption\n",
		filepath.Join(share, csiDir, "hello.txt"):    "from csi-driver-nfs\nafter-adoption\n",
		filepath.Join(glusterMount, "hello.txt"):     "from heketi\nafter-adoption\n",
	} {
		if b, err := os.ReadFile(path); err != nil || string(b) != want {
			t.Errorf("%s holds %q (%v), want %q", path, b, err, want)
		}
	}
}

// applyKilled starts carve-adopt with args, kills it as soon as one of the
// PVs in before is deleted, and returns that PV's claim once the
// PersistentVolume controller has marked it Lost (or after 30s).
func (l *legacy) applyKilled(ctx context.Context, bin string, args []string, before map[string]objState) *v1.PersistentVolumeClaim {
	t := l.t
	w, err := l.c.Client.CoreV1().PersistentVolumes().Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var gone *v1.PersistentVolume
	timeout := time.After(2 * time.Minute)
	for gone == nil {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatal("PV watch ended")
			}
			if pv, isPV := ev.Object.(*v1.PersistentVolume); isPV && ev.Type == watch.Deleted && before[pv.Name].uid == string(pv.UID) {
				gone = pv
			}
		case <-timeout:
			_ = cmd.Process.Kill()
			t.Fatalf("no old PV deleted within 2 minutes; carve-adopt said:\n%s", out.String())
		}
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	t.Logf("$ carve-adopt %s (killed)\n%s", strings.Join(args, " "), out.String())
	var claim *v1.PersistentVolumeClaim
	ref := gone.Spec.ClaimRef
	_ = poll(ctx, 30*time.Second, func(ctx context.Context) (bool, error) {
		c, err := l.c.Client.CoreV1().PersistentVolumeClaims(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err == nil {
			claim = c
		}
		return err == nil && c.Status.Phase == v1.ClaimLost, err
	})
	if claim == nil {
		t.Fatalf("claim %s/%s of the deleted PV: not found", ref.Namespace, ref.Name)
	}
	return claim
}

// legacy creates objects as the old provisioners did.
type legacy struct {
	t     *testing.T
	c     *cluster.Cluster
	ns    string
	share string
}

func (l *legacy) claim(ctx context.Context, name, class string) *v1.PersistentVolumeClaim {
	pvc := &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: l.ns, Name: name},
		Spec: v1.PersistentVolumeClaimSpec{
			StorageClassName: ptr.To(class),
			AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteMany},
			Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	out, err := l.c.Client.CoreV1().PersistentVolumeClaims(l.ns).Create(ctx, pvc, metav1.CreateOptions{})
	if err != nil {
		l.t.Fatal(err)
	}
	return out
}

// dir creates a volume directory on the share as nfs-subdir and
// csi-driver-nfs do (mode 0777), with a file in it.
func (l *legacy) dir(name, content string) {
	p := filepath.Join(l.share, name)
	if err := os.Mkdir(p, 0o755); err != nil {
		l.t.Fatal(err)
	}
	if err := os.Chmod(p, 0o777); err != nil {
		l.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p, "hello.txt"), []byte(content), 0o666); err != nil {
		l.t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(p, "hello.txt"), 0o666); err != nil {
		l.t.Fatal(err)
	}
}

// pv creates the PV a provisioner returns for claim: named pvc-<claim UID>,
// pre-bound to the claim, reclaim policy Delete from the class; the PV
// controller then binds the claim.
func (l *legacy) pv(ctx context.Context, claim *v1.PersistentVolumeClaim, ann map[string]string, finalizers []string, src v1.PersistentVolumeSource) {
	pv := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pvc-" + string(claim.UID), Annotations: ann, Finalizers: finalizers},
		Spec: v1.PersistentVolumeSpec{
			PersistentVolumeSource:        src,
			Capacity:                      v1.ResourceList{v1.ResourceStorage: claim.Spec.Resources.Requests[v1.ResourceStorage]},
			AccessModes:                   claim.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: v1.PersistentVolumeReclaimDelete,
			StorageClassName:              *claim.Spec.StorageClassName,
			VolumeMode:                    ptr.To(v1.PersistentVolumeFilesystem),
			ClaimRef: &v1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: claim.Namespace, Name: claim.Name,
				UID: claim.UID, ResourceVersion: claim.ResourceVersion},
		},
	}
	if _, err := l.c.Client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
		l.t.Fatal(err)
	}
	claim.Spec.VolumeName = pv.Name
}

func (l *legacy) waitBound(ctx context.Context, claims []*v1.PersistentVolumeClaim) {
	if err := poll(ctx, 2*time.Minute, func(ctx context.Context) (bool, error) {
		for _, cl := range claims {
			got, err := l.c.Client.CoreV1().PersistentVolumeClaims(l.ns).Get(ctx, cl.Name, metav1.GetOptions{})
			if err != nil || got.Status.Phase != v1.ClaimBound || got.Spec.VolumeName != cl.Spec.VolumeName {
				return false, err
			}
		}
		return true, nil
	}); err != nil {
		l.t.Fatalf("the old PVs' claims never Bound: %v", err)
	}
}

type objState struct {
	uid     string
	version string
}

// snapshot records every PV's and claim's identity and version.
func (l *legacy) snapshot(ctx context.Context) map[string]objState {
	out := map[string]objState{}
	pvs, err := l.c.Client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		l.t.Fatal(err)
	}
	for _, pv := range pvs.Items {
		out[pv.Name] = objState{string(pv.UID), pv.ResourceVersion}
	}
	claims, err := l.c.Client.CoreV1().PersistentVolumeClaims(l.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		l.t.Fatal(err)
	}
	for _, cl := range claims.Items {
		out["claim "+cl.Name] = objState{string(cl.UID), cl.ResourceVersion}
	}
	return out
}

// unchanged: a dry run left the cluster, the share and Gluster as they were.
func (l *legacy) unchanged(ctx context.Context, before map[string]objState, g *glusterd.Cluster, vol string) {
	l.t.Helper()
	after := l.snapshot(ctx)
	for k, v := range before {
		if after[k] != v {
			l.t.Errorf("the dry run changed %s: %+v → %+v", k, v, after[k])
		}
	}
	if len(after) != len(before) {
		l.t.Errorf("the dry run added or removed objects: %d → %d", len(before), len(after))
	}
	if _, err := os.Stat(filepath.Join(l.share, ".carve-meta")); !errors.Is(err, os.ErrNotExist) {
		l.t.Errorf("the dry run wrote .carve-meta on the share (%v)", err)
	}
	if o := glusterOption(l.t, g, vol, gluster.OptPV); o != "" {
		l.t.Errorf("the dry run recorded %s=%s on Gluster volume %s", gluster.OptPV, o, vol)
	}
}

// glusterOption reads a reconfigured option of a volume ("" when unset)
// from `gluster volume info`, which lists them as "NAME: VALUE".
func glusterOption(t *testing.T, g *glusterd.Cluster, vol, name string) string {
	t.Helper()
	out, err := g.Gluster(context.Background(), "volume", "info", vol)
	if err != nil {
		t.Fatalf("gluster volume info %s: %v", vol, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+": "); ok {
			return v
		}
	}
	return ""
}

func buildAdopt(t *testing.T, c *cluster.Cluster) string {
	t.Helper()
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(c.Dir, "carve-adopt")
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "./cmd/carve-adopt")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build carve-adopt: %v\n%s", err, out)
	}
	return bin
}

// runAdopt runs carve-adopt and returns its output and exit code.
func runAdopt(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), bin, args...)
	out, err := cmd.CombinedOutput()
	t.Logf("$ carve-adopt %s\n%s", strings.Join(args, " "), out)
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	case err != nil:
		t.Fatalf("carve-adopt: %v", err)
	}
	return string(out), 0
}

// nonLoopbackIP is an address of this host that an Endpoints object
// accepts (not loopback) and the node, in the host's network, reaches: the
// one of the default route (a UDP "connection" sends nothing).
func nonLoopbackIP(t *testing.T) string {
	t.Helper()
	conn, err := net.Dial("udp4", "192.0.2.1:9")
	if err != nil {
		t.Fatalf("no IPv4 route for the heketi Endpoints' address: %v", err)
	}
	defer conn.Close()
	ip := conn.LocalAddr().(*net.UDPAddr).IP
	if ip.IsLoopback() {
		t.Fatalf("the default route's address %s is a loopback address, which Endpoints refuse", ip)
	}
	return ip.String()
}
