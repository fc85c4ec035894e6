// Package scenario runs carve's StatefulSet story on a real local control
// plane: the classic provisioner as its own process with the shipped RBAC, a
// real NFS server (or glusterd), and the MongoDB example's manifests. With
// Env.Node, cmd/csi-driver's node service runs too and the story publishes
// each replica's CSI volume through it, as the kubelet would. `make e2e` runs
// it as tests; `make demo` runs it for a person to watch.
package scenario

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/yaml"

	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/volid"
	"github.com/carve-csi/carve/test/cluster"
)

// NFS is the userspace NFS client view of the share.
type NFS interface {
	Server() string
	Export() string
	List(nfsPath string) ([]string, error)
}

// Env is what the story runs on. The zero values of the optional fields give
// the NFS story with in-tree NFS PVs.
type Env struct {
	Cluster *cluster.Cluster
	// NFS is the NFS server; nil when the story runs on another backend (the
	// StorageClass is then pointed at it with ClassParams).
	NFS       NFS
	ShareDir  string // the share, as the provisioner sees it (Gluster: a FUSE mount)
	Repo      string // repository root (manifests, cmd/provisioner)
	Namespace string
	Logf      func(format string, args ...any)
	// Show, when set, is called after each step with its title (the demo
	// prints the cluster's objects and the share there).
	Show func(ctx context.Context, title string)
	// ProvisionerArgs are extra flags for cmd/provisioner (benchmarks compare settings).
	ProvisionerArgs []string

	// Overlay is the example overlay deployed; OverlayNFS if empty.
	Overlay string
	// ClassParams are set on the overlay's StorageClass after server and
	// share are pointed at NFS (volumeType: csi; Gluster's servers, volume).
	ClassParams map[string]string
	// ShareKey is the provisioner's --mount-map SERVER:SHARE for ShareDir;
	// NFS's server:export if empty.
	ShareKey string
	// Node, when set, runs cmd/csi-driver's node service and publishes each
	// Ready replica's volume through it, as the kubelet would.
	Node *Node
	// CheckVolume, when set, is called for each Ready replica's claim and PV
	// (a Gluster quota limit).
	CheckVolume func(ctx context.Context, pvc *v1.PersistentVolumeClaim, pv *v1.PersistentVolume) error

	client      kubernetes.Interface
	provisioner *cluster.Process
	health      string // the provisioner's --health-address
	// class is the story's StorageClass as created (step 6 copies it).
	class *storagev1.StorageClass
	// retained maps each ordinal to the PV source its data lives at.
	retained map[int]string
}

const (
	sts      = "mongo"
	template = "data"
	// Timeouts are generous: CI machines are small and busy.
	stepTimeout = 3 * time.Minute
)

// The example overlays the story deploys.
const (
	OverlayNFS     = "examples/mongo-statefulset/overlays/nfs"
	OverlayGluster = "examples/mongo-statefulset/overlays/gluster"
)

func (e *Env) overlay() string {
	if e.Overlay == "" {
		return OverlayNFS
	}
	return e.Overlay
}

func (e *Env) shareKey() string {
	if e.ShareKey == "" {
		return e.NFS.Server() + ":" + e.NFS.Export()
	}
	return e.ShareKey
}

func (e *Env) logf(format string, args ...any) {
	if e.Logf != nil {
		e.Logf(format, args...)
	}
}

func (e *Env) show(ctx context.Context, title string) {
	e.logf("== %s", title)
	if e.Show != nil {
		e.Show(ctx, title)
	}
}

// StartProvisioner builds cmd/provisioner and runs it as its own process,
// authenticated as the ServiceAccount from deploy/provisioner with exactly
// that RBAC, so the shipped RBAC is proven sufficient. With Env.Node it also
// starts the CSI node service.
func (e *Env) StartProvisioner(ctx context.Context) error {
	e.client = e.Cluster.Client
	for _, f := range []string{"namespace.yaml", "rbac.yaml"} {
		if err := e.Cluster.Apply(ctx, filepath.Join(e.Repo, "deploy/provisioner", f)); err != nil {
			return fmt.Errorf("apply deploy/provisioner/%s: %w", f, err)
		}
	}
	bin := filepath.Join(e.Cluster.Dir, "carve-provisioner")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/provisioner")
	build.Dir = e.Repo
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build cmd/provisioner: %w\n%s", err, out)
	}
	kubeconfig, err := e.Cluster.ServiceAccountKubeconfig(ctx, "carve-system", "carve-provisioner")
	if err != nil {
		return err
	}
	health, err := freeAddr()
	if err != nil {
		return err
	}
	metrics, err := freeAddr()
	if err != nil {
		return err
	}
	p, err := e.Cluster.StartProcess("carve-provisioner", append([]string{bin,
		"--kubeconfig=" + kubeconfig,
		"--mount-map=" + e.shareKey() + "=" + e.ShareDir,
		"--leader-elect=true",
		"--health-address=" + health,
		"--metrics-address=" + metrics,
		"--v=2",
	}, e.ProvisionerArgs...), []string{"POD_NAMESPACE=carve-system"})
	if err != nil {
		return err
	}
	e.provisioner = p
	e.health = health
	e.logf("provisioner running as system:serviceaccount:carve-system:carve-provisioner, log %s", p.LogPath)
	if e.Node != nil {
		if err := e.Node.start(ctx, e); err != nil {
			return err
		}
	}
	return e.poll(ctx, "provisioner /readyz", time.Minute, func(context.Context) (bool, error) {
		return Ready(p, health)
	})
}

// Ready says whether the provisioner process p answers ready on its
// --health-address health; an exited process is an error.
func Ready(p *cluster.Process, health string) (bool, error) {
	select {
	case <-p.Done():
		return false, fmt.Errorf("provisioner exited: %v (log %s)", p.Err(), p.LogPath)
	default:
	}
	resp, err := http.Get("http://" + health + "/readyz")
	if err != nil {
		return false, nil
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}

// Run is the whole story, step by step. It returns at the first broken promise.
func (e *Env) Run(ctx context.Context) error {
	type step struct {
		name string
		fn   func(context.Context) error
	}
	steps := []step{
		{"1. StorageClass (Retain) + headless Service + StatefulSet mongo with 3 replicas", e.deploy},
		{"2. scale to 5, down to 3, up to 5 again", e.scale},
		{"3. delete pod mongo-1: it comes back with the same claim", e.deletePod},
		{"4. delete the StatefulSet, then its claims: data stays on the share", e.deleteAll},
		{"5. create the StatefulSet again: claims re-attach to the retained data", e.recreate},
		{"6. reclaimPolicy Delete with onDelete archive, then delete", e.deletePolicies},
		{"7. no unexpected errors in claim events or provisioner logs", e.noErrors},
	}
	if e.Node != nil {
		steps = slices.Insert(steps, len(steps)-1,
			step{"6b. node: unpublish every volume; the data stays on the share", e.Node.unpublishAll})
	}
	for _, s := range steps {
		e.logf("--- %s", s.name)
		if err := s.fn(ctx); err != nil {
			return fmt.Errorf("step %q: %w", s.name, err)
		}
		e.show(ctx, s.name)
	}
	return nil
}

func (e *Env) deploy(ctx context.Context) error {
	if _, err := e.client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.Namespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	if err := e.applyExample(ctx); err != nil {
		return err
	}
	if err := e.createPolicyClasses(ctx); err != nil {
		return err
	}
	if err := e.waitReplicas(ctx, 3); err != nil {
		return err
	}
	for i := range 3 {
		if err := os.WriteFile(e.marker(i), []byte(fmt.Sprintf("mongo-%d\n", i)), 0o644); err != nil {
			return fmt.Errorf("write marker: %w", err)
		}
	}
	return e.syncNode(ctx)
}

// applyExample renders the example overlay, points its StorageClass at the
// test's server (NFS, and ClassParams) and applies the rest unchanged.
func (e *Env) applyExample(ctx context.Context) error {
	overlay := e.overlay()
	out, err := e.Cluster.Kubectl(ctx, "kustomize", filepath.Join(e.Repo, overlay))
	if err != nil {
		return fmt.Errorf("render %s: %w", overlay, err)
	}
	var rest []string
	sawClass := false
	for _, doc := range strings.Split(out, "\n---\n") {
		var meta struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			return fmt.Errorf("parse rendered example: %w", err)
		}
		if meta.Kind != "StorageClass" {
			rest = append(rest, doc)
			continue
		}
		var sc storagev1.StorageClass
		if err := yaml.Unmarshal([]byte(doc), &sc); err != nil {
			return err
		}
		if e.NFS != nil {
			sc.Parameters["server"], sc.Parameters["share"] = e.NFS.Server(), e.NFS.Export()
		}
		maps.Copy(sc.Parameters, e.ClassParams)
		if sc.ReclaimPolicy == nil || *sc.ReclaimPolicy != v1.PersistentVolumeReclaimRetain {
			return fmt.Errorf("the example's StorageClass %s must have reclaimPolicy Retain", sc.Name)
		}
		if _, err := e.client.StorageV1().StorageClasses().Create(ctx, &sc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
		e.class = &sc
		sawClass = true
	}
	if !sawClass {
		return fmt.Errorf("%s renders no StorageClass", overlay)
	}
	f := filepath.Join(e.Cluster.Dir, "example.yaml")
	if err := os.WriteFile(f, []byte(strings.Join(rest, "\n---\n")), 0o644); err != nil {
		return err
	}
	_, err = e.Cluster.Kubectl(ctx, "apply", "-n", e.Namespace, "-f", f)
	return err
}

func (e *Env) scale(ctx context.Context) error {
	uids, err := e.claimUIDs(ctx, 3)
	if err != nil {
		return err
	}
	if err := e.scaleTo(ctx, 5); err != nil {
		return err
	}
	for i := 3; i < 5; i++ {
		if err := os.WriteFile(e.marker(i), []byte(fmt.Sprintf("mongo-%d\n", i)), 0o644); err != nil {
			return err
		}
	}
	if err := e.syncNode(ctx); err != nil {
		return err
	}
	before, err := e.claimUIDs(ctx, 5)
	if err != nil {
		return err
	}
	for i := range 3 {
		if before[i] != uids[i] {
			return fmt.Errorf("claim %s changed while scaling up", claim(i))
		}
	}
	if err := e.scaleTo(ctx, 3); err != nil {
		return err
	}
	// Scale-down keeps claims, PVs and directories of ordinals 3 and 4
	// (the node unpublished them, keeping what was written through them).
	if err := e.syncNode(ctx); err != nil {
		return err
	}
	if err := e.checkKept(ctx, 5); err != nil {
		return err
	}
	if err := e.scaleTo(ctx, 5); err != nil {
		return err
	}
	if err := e.syncNode(ctx); err != nil {
		return err
	}
	after, err := e.claimUIDs(ctx, 5)
	if err != nil {
		return err
	}
	if !slices.Equal(before, after) {
		return fmt.Errorf("pods 3 and 4 came back with other claims: %v, want %v", after, before)
	}
	return e.checkMarkers(5)
}

func (e *Env) deletePod(ctx context.Context) error {
	old, err := e.client.CoreV1().Pods(e.Namespace).Get(ctx, "mongo-1", metav1.GetOptions{})
	if err != nil {
		return err
	}
	before, err := e.claimUIDs(ctx, 5)
	if err != nil {
		return err
	}
	if err := e.client.CoreV1().Pods(e.Namespace).Delete(ctx, "mongo-1", metav1.DeleteOptions{}); err != nil {
		return err
	}
	err = e.poll(ctx, "mongo-1 recreated and Ready", stepTimeout, func(ctx context.Context) (bool, error) {
		p, err := e.client.CoreV1().Pods(e.Namespace).Get(ctx, "mongo-1", metav1.GetOptions{})
		return err == nil && p.UID != old.UID && podReady(p), nil
	})
	if err != nil {
		return err
	}
	p, err := e.client.CoreV1().Pods(e.Namespace).Get(ctx, "mongo-1", metav1.GetOptions{})
	if err != nil {
		return err
	}
	if got := podClaim(p); got != claim(1) {
		return fmt.Errorf("new mongo-1 uses claim %q", got)
	}
	after, err := e.claimUIDs(ctx, 5)
	if err != nil {
		return err
	}
	if after[1] != before[1] {
		return errors.New("claim data-mongo-1 was replaced")
	}
	// The node unpublishes the old pod's volume and publishes the new one's
	// at another target path.
	return e.syncNode(ctx)
}

// pvSource is where a PV's data lives: the NFS path of an in-tree PV, the
// volume handle of a CSI PV.
func pvSource(pv *v1.PersistentVolume) string {
	switch {
	case pv.Spec.NFS != nil:
		return pv.Spec.NFS.Path
	case pv.Spec.CSI != nil:
		return pv.Spec.CSI.Driver + " " + pv.Spec.CSI.VolumeHandle
	}
	return ""
}

func (e *Env) deleteAll(ctx context.Context) error {
	e.retained = map[int]string{}
	for i := range 5 {
		pvc, err := e.client.CoreV1().PersistentVolumeClaims(e.Namespace).Get(ctx, claim(i), metav1.GetOptions{})
		if err != nil {
			return err
		}
		pv, err := e.client.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		e.retained[i] = pvSource(pv)
	}
	if err := e.client.AppsV1().StatefulSets(e.Namespace).Delete(ctx, sts, metav1.DeleteOptions{}); err != nil {
		return err
	}
	err := e.poll(ctx, "StatefulSet and its pods gone", stepTimeout, func(ctx context.Context) (bool, error) {
		pods, err := e.client.CoreV1().Pods(e.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=mongo"})
		if err != nil {
			return false, nil
		}
		_, err = e.client.AppsV1().StatefulSets(e.Namespace).Get(ctx, sts, metav1.GetOptions{})
		return apierrors.IsNotFound(err) && len(pods.Items) == 0, nil
	})
	if err != nil {
		return err
	}
	if err := e.syncNode(ctx); err != nil {
		return err
	}
	if err := e.checkKept(ctx, 5); err != nil {
		return fmt.Errorf("after StatefulSet deletion: %w", err)
	}
	for i := range 5 {
		if err := e.client.CoreV1().PersistentVolumeClaims(e.Namespace).Delete(ctx, claim(i), metav1.DeleteOptions{}); err != nil {
			return err
		}
	}
	err = e.poll(ctx, "claims gone and PVs Released", stepTimeout, func(ctx context.Context) (bool, error) {
		pvcs, err := e.client.CoreV1().PersistentVolumeClaims(e.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil || len(pvcs.Items) != 0 {
			return false, nil
		}
		pvs, err := e.client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		released := 0
		for _, pv := range pvs.Items {
			if pv.Status.Phase == v1.VolumeReleased {
				released++
			}
		}
		return released == 5, nil
	})
	if err != nil {
		return err
	}
	return e.checkMarkers(5)
}

func (e *Env) recreate(ctx context.Context) error {
	if err := e.applyExample(ctx); err != nil {
		return err
	}
	if err := e.scaleTo(ctx, 5); err != nil {
		return err
	}
	for i := range 5 {
		pvc, err := e.client.CoreV1().PersistentVolumeClaims(e.Namespace).Get(ctx, claim(i), metav1.GetOptions{})
		if err != nil {
			return err
		}
		pv, err := e.client.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if src := pvSource(pv); src == "" || src != e.retained[i] {
			return fmt.Errorf("claim %s got PV %s at %q, want the retained %q", claim(i), pv.Name, src, e.retained[i])
		}
		if err := e.listMarker(pv); err != nil {
			return err
		}
		if err := e.waitEvent(ctx, claim(i), "ReattachedVolume"); err != nil {
			return err
		}
	}
	// The node publishes the re-attached volumes at new target paths: what
	// the earlier pods wrote through theirs is there.
	if err := e.syncNode(ctx); err != nil {
		return err
	}
	return e.checkMarkers(5)
}

// listMarker lists the PV's directory over NFS, from the PV's own source, and
// expects the marker written before. Other backends are checked through the
// node's publish.
func (e *Env) listMarker(pv *v1.PersistentVolume) error {
	var server, path string
	switch {
	case e.NFS == nil:
		return nil
	case pv.Spec.NFS != nil:
		server, path = pv.Spec.NFS.Server, pv.Spec.NFS.Path
	case pv.Spec.CSI != nil:
		id, err := volid.Parse(pv.Spec.CSI.VolumeHandle)
		if err != nil {
			return fmt.Errorf("PV %s: %w", pv.Name, err)
		}
		if id.Backend != params.BackendNFS {
			return nil
		}
		server, path = id.Servers[0], strings.TrimSuffix(id.Share, "/")+"/"+id.DirPath()
	default:
		return fmt.Errorf("PV %s has neither an NFS nor a CSI source", pv.Name)
	}
	names, err := e.NFS.List(path)
	if err != nil {
		return fmt.Errorf("nfs-ls %s: %w", path, err)
	}
	if !slices.Contains(names, "marker") {
		return fmt.Errorf("nfs-ls %s:%s = %v, no marker", server, path, names)
	}
	return nil
}

// createPolicyClasses makes step 6's classes during setup: a claim created
// right after its class can reach the provisioner before the class does, and
// that transient ProvisioningFailed would be flagged by step 7.
func (e *Env) createPolicyClasses(ctx context.Context) error {
	for _, policy := range []string{"archive", "delete"} {
		// The story's class (same backend, server and share), with
		// reclaimPolicy Delete, the policy and a pattern of its own.
		reclaim := v1.PersistentVolumeReclaimDelete
		sc := &storagev1.StorageClass{
			ObjectMeta:    metav1.ObjectMeta{Name: "carve-" + policy},
			Provisioner:   e.class.Provisioner,
			ReclaimPolicy: &reclaim,
			Parameters:    maps.Clone(e.class.Parameters),
		}
		sc.Parameters["onDelete"] = policy
		sc.Parameters["pathPattern"] = "scratch/${pvc.metadata.namespace}/${pvc.metadata.name}"
		if _, err := e.client.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	return nil
}

func (e *Env) deletePolicies(ctx context.Context) error {
	for _, policy := range []string{"archive", "delete"} {
		name := "scratch-" + policy
		class := "carve-" + policy
		pvc := &v1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: v1.PersistentVolumeClaimSpec{
				StorageClassName: &class,
				AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteMany},
				Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}},
			},
		}
		if _, err := e.client.CoreV1().PersistentVolumeClaims(e.Namespace).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
			return err
		}
		var pvName string
		err := e.poll(ctx, name+" Bound", stepTimeout, func(ctx context.Context) (bool, error) {
			c, err := e.client.CoreV1().PersistentVolumeClaims(e.Namespace).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			pvName = c.Spec.VolumeName
			return c.Status.Phase == v1.ClaimBound, nil
		})
		if err != nil {
			return err
		}
		dir := filepath.Join(e.ShareDir, "scratch", e.Namespace, name)
		if err := os.WriteFile(filepath.Join(dir, "data"), []byte(policy), 0o644); err != nil {
			return err
		}
		if err := e.client.CoreV1().PersistentVolumeClaims(e.Namespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			return err
		}
		err = e.poll(ctx, "PV "+pvName+" deleted", stepTimeout, func(ctx context.Context) (bool, error) {
			_, err := e.client.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
		if err != nil {
			return err
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			return fmt.Errorf("%s still at %s after deletion (%v)", name, dir, err)
		}
		switch policy {
		case "archive":
			found, _ := filepath.Glob(filepath.Join(e.ShareDir, ".carve-archive", "scratch", e.Namespace, name+"-*", "data"))
			if len(found) != 1 {
				return fmt.Errorf("archive of %s: found %v", name, found)
			}
			e.logf("archived to %s", strings.TrimPrefix(filepath.Dir(found[0]), e.ShareDir+"/"))
		case "delete":
			err := e.poll(ctx, "trash purged", stepTimeout, func(context.Context) (bool, error) {
				entries, err := os.ReadDir(filepath.Join(e.ShareDir, ".carve-trash"))
				return err == nil && len(entries) == 0, nil
			})
			if err != nil {
				return err
			}
		}
	}
	return e.checkMarkers(5)
}

func (e *Env) noErrors(ctx context.Context) error {
	events, err := e.client.CoreV1().Events(e.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	var bad []string
	claimEvents := 0
	for _, ev := range events.Items {
		if ev.InvolvedObject.Kind != "PersistentVolumeClaim" {
			continue
		}
		claimEvents++
		if ev.Type != v1.EventTypeNormal {
			bad = append(bad, fmt.Sprintf("%s %s: %s", ev.InvolvedObject.Name, ev.Reason, ev.Message))
		}
	}
	logs := []*cluster.Process{e.provisioner}
	if e.Node != nil {
		logs = append(logs, e.Node.proc)
	}
	for _, p := range logs {
		lines, errs, err := logProblems(p.LogPath)
		if err != nil {
			return err
		}
		for _, l := range errs {
			bad = append(bad, p.Name+": "+l)
		}
		e.logf("checked %d lines of the %s log", lines, p.Name)
	}
	if len(bad) > 0 {
		return fmt.Errorf("unexpected errors:\n%s", strings.Join(bad, "\n"))
	}
	e.logf("checked %d claim events", claimEvents)
	return nil
}

// logProblems returns a klog file's line count and its error and warning
// lines (klog marks them with a leading E and W).
func logProblems(path string) (int, []string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	lines := 0
	var bad []string
	for sc.Scan() {
		lines++
		if l := sc.Text(); strings.HasPrefix(l, "E") || strings.HasPrefix(l, "W") {
			bad = append(bad, l)
		}
	}
	return lines, bad, sc.Err()
}

// --- helpers

func claim(i int) string { return fmt.Sprintf("%s-%s-%d", template, sts, i) }

func (e *Env) marker(i int) string {
	return filepath.Join(e.ShareDir, e.Namespace, claim(i), "marker")
}

func (e *Env) checkMarkers(n int) error {
	for i := range n {
		b, err := os.ReadFile(e.marker(i))
		if err != nil || string(b) != fmt.Sprintf("mongo-%d\n", i) {
			return fmt.Errorf("marker of %s = %q, %v", claim(i), b, err)
		}
	}
	return nil
}

// checkKept: claims and their PVs exist and the directories are on the share.
func (e *Env) checkKept(ctx context.Context, n int) error {
	for i := range n {
		pvc, err := e.client.CoreV1().PersistentVolumeClaims(e.Namespace).Get(ctx, claim(i), metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("claim %s: %w", claim(i), err)
		}
		if _, err := e.client.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{}); err != nil {
			return fmt.Errorf("PV of %s: %w", claim(i), err)
		}
	}
	return e.checkMarkers(n)
}

func (e *Env) scaleTo(ctx context.Context, n int32) error {
	// The StatefulSet controller updates the object meanwhile (status), so
	// a conflict is retried with a fresh read.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		s, err := e.client.AppsV1().StatefulSets(e.Namespace).GetScale(ctx, sts, metav1.GetOptions{})
		if err != nil {
			return err
		}
		s.Spec.Replicas = n
		_, err = e.client.AppsV1().StatefulSets(e.Namespace).UpdateScale(ctx, sts, s, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("scale to %d: %w", n, err)
	}
	return e.waitReplicas(ctx, int(n))
}

// waitReplicas waits for n Ready pods mongo-0..n-1, created in order, each
// with its Bound claim and a directory on the share, and no pod above n.
func (e *Env) waitReplicas(ctx context.Context, n int) error {
	err := e.poll(ctx, fmt.Sprintf("%d replicas Ready", n), stepTimeout, func(ctx context.Context) (bool, error) {
		set, err := e.client.AppsV1().StatefulSets(e.Namespace).Get(ctx, sts, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		pods, err := e.client.CoreV1().Pods(e.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		ready := 0
		for _, p := range pods.Items {
			if podReady(&p) {
				ready++
			}
		}
		return ready == n && len(pods.Items) == n && set.Status.ReadyReplicas == int32(n), nil
	})
	if err != nil {
		return err
	}
	pods := make([]*v1.Pod, n)
	for i := range n {
		p, err := e.client.CoreV1().Pods(e.Namespace).Get(ctx, fmt.Sprintf("%s-%d", sts, i), metav1.GetOptions{})
		if err != nil {
			return err
		}
		pods[i] = p
		pvc, err := e.client.CoreV1().PersistentVolumeClaims(e.Namespace).Get(ctx, claim(i), metav1.GetOptions{})
		if err != nil {
			return err
		}
		if pvc.Status.Phase != v1.ClaimBound || podClaim(p) != claim(i) {
			return fmt.Errorf("pod %s: claim %s is %s, pod uses %q", p.Name, claim(i), pvc.Status.Phase, podClaim(p))
		}
		if fi, err := os.Stat(filepath.Join(e.ShareDir, e.Namespace, claim(i))); err != nil || !fi.IsDir() {
			return fmt.Errorf("no directory for %s on the share: %v", claim(i), err)
		}
		if e.CheckVolume != nil {
			pv, err := e.client.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if err := e.CheckVolume(ctx, pvc, pv); err != nil {
				return fmt.Errorf("claim %s, PV %s: %w", claim(i), pv.Name, err)
			}
		}
	}
	// OrderedReady: a pod is created only once its predecessor is Ready.
	// (A predecessor recreated later, after a pod deletion, is not compared.)
	for i := 1; i < n; i++ {
		prev, cur := pods[i-1], pods[i]
		if prev.CreationTimestamp.After(cur.CreationTimestamp.Time) {
			continue
		}
		if cur.CreationTimestamp.Time.Before(readySince(prev)) {
			return fmt.Errorf("%s was created before %s was Ready", cur.Name, prev.Name)
		}
	}
	return nil
}

func (e *Env) claimUIDs(ctx context.Context, n int) ([]string, error) {
	var uids []string
	for i := range n {
		c, err := e.client.CoreV1().PersistentVolumeClaims(e.Namespace).Get(ctx, claim(i), metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		uids = append(uids, string(c.UID)+"/"+c.Spec.VolumeName)
	}
	return uids, nil
}

func (e *Env) waitEvent(ctx context.Context, object, reason string) error {
	return e.poll(ctx, reason+" event on "+object, stepTimeout, func(ctx context.Context) (bool, error) {
		events, err := e.client.CoreV1().Events(e.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		for _, ev := range events.Items {
			if ev.InvolvedObject.Name == object && ev.Reason == reason {
				return true, nil
			}
		}
		return false, nil
	})
}

func (e *Env) poll(ctx context.Context, what string, timeout time.Duration, cond func(context.Context) (bool, error)) error {
	start := time.Now()
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, cond)
	if err != nil {
		return fmt.Errorf("waiting for %s: %w", what, err)
	}
	e.logf("%s (%.1fs)", what, time.Since(start).Seconds())
	return nil
}

func podReady(p *v1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase != v1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == v1.PodReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

func readySince(p *v1.Pod) time.Time {
	for _, c := range p.Status.Conditions {
		if c.Type == v1.PodReady {
			return c.LastTransitionTime.Time
		}
	}
	return time.Time{}
}

func podClaim(p *v1.Pod) string {
	for _, v := range p.Spec.Volumes {
		if v.Name == template && v.PersistentVolumeClaim != nil {
			return v.PersistentVolumeClaim.ClaimName
		}
	}
	return ""
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port), nil
}

// Tree lists the share's directories and files (carve's own folders too), for
// the demo and for failure reports.
func Tree(root string) string {
	var lines []string
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		if strings.HasPrefix(rel, ".carve-meta/") || strings.HasPrefix(rel, ".carve-tmp") {
			return nil
		}
		depth := strings.Count(rel, string(filepath.Separator))
		suffix := ""
		if d.IsDir() {
			suffix = "/"
		}
		lines = append(lines, strings.Repeat("  ", depth)+d.Name()+suffix)
		return nil
	})
	return strings.Join(lines, "\n")
}

// ProvisionerPid is the provisioner process's PID (for RSS measurements).
func (e *Env) ProvisionerPid() int { return e.provisioner.Pid() }

// ProvisionerReady reports the provisioner's /readyz status code.
func (e *Env) ProvisionerReady() (int, error) {
	resp, err := http.Get("http://" + e.health + "/readyz")
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// ProvisionerLog is the path of the provisioner's log.
func (e *Env) ProvisionerLog() string { return e.provisioner.LogPath }
