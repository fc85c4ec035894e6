//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/carve-csi/carve/test/cluster"
	"github.com/carve-csi/carve/test/scenario"
)

// The real-node story (issue #11): carve's CSI driver deployed from
// deploy/csi-driver as users deploy it, through a test overlay that changes
// only images and the share (see scenario.RealOverlay),
// on a real node (containerd + runc + the kubelet, test/cluster's
// AddRealNode). The kubelet registers the node plugin through
// carve-registrar, calls NodePublishVolume, and real containers of a
// StatefulSet write and re-read their data through the mounts across pod
// deletion, scaling 3 → 5 → 3 → 5, and StatefulSet + claim deletion with
// re-attach. TestRealNodeExpandNFS grows a claim in use 1Gi → 2Gi through
// carve-resizer (the csi-resizer stand-in) and ControllerExpandVolume.
//
// The share: this kernel has no NFS client, so nothing here can mount
// SERVER:/export (neither the kubelet's in-tree spec.nfs volumes nor the node
// plugin's direct mounts). A directory stands in for the node's and the
// controller's mount of the export, and carve's --mount-map turns every
// publish into a bind mount of the claim's directory: the path users take
// when the node has the share mounted.

// realImages returns the image tarballs of make images and carve's tag.
func realImages(t testing.TB) (tars []string, tag string) {
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return scenario.RealImagesFor(t, repo)
}

func skipOrFailReal(t testing.TB, msg string) {
	t.Helper()
	scenario.SkipOrFailReal(t, msg)
}

// startRealNode starts a control plane with no kwok node and one real node
// with the images imported (scenario.StartRealNode).
func startRealNode(t *testing.T) (*cluster.Cluster, *cluster.RealNode, string) {
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return scenario.StartRealNode(t, repo, cluster.RealNodeOptions{})
}

// startRealCSI starts a real node with carve deployed from deploy/csi-driver
// (scenario.StartRealCSI); the pods of carve-system are logged at the end.
// The share is a directory standing in for the node's (and the
// controller's) mount of the export; rshared like a mount on a systemd host.
func startRealCSI(t *testing.T) (*cluster.Cluster, *cluster.RealNode, string) {
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	c, n, share := scenario.StartRealCSI(t, repo, cluster.RealNodeOptions{})
	t.Cleanup(func() { dumpPods(t, c, "carve-system") })
	return c, n, share
}

// TestRealNodeStatefulSetNFS is the StatefulSet story on the real node. It
// first applies deploy/csi-driver as shipped (images aside), which names no
// share: every pod must become Ready, and a claim of a class naming a share
// the controller does not map must fail with an event that says what to add.
// Then deploy/examples/csi-nfs adds the share and the story runs.
func TestRealNodeStatefulSetNFS(t *testing.T) {
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	c, n, tag := scenario.StartRealNode(t, repo, cluster.RealNodeOptions{})
	t.Cleanup(func() { dumpPods(t, c, "carve-system") })
	ctx := t.Context()
	t0 := time.Now()
	if err := scenario.DeployRealBase(ctx, c, n, repo, tag); err != nil {
		t.Fatalf("deploy/csi-driver as shipped: %v", err)
	}
	t.Logf("deploy/csi-driver as shipped: every pod Ready, node plugin registered, in %s", time.Since(t0).Round(time.Second))
	snapshotterWithoutCRDs(t, c)
	unmappedShare(t, c)
	share, err := n.SharedDir("export")
	if err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	if err := scenario.DeployRealCSI(ctx, c, n, repo, share, tag); err != nil {
		t.Fatal(err)
	}
	t.Logf("deploy/examples/csi-nfs applied over it, in %s", time.Since(t0).Round(time.Second))
	s := &realStory{t: t, c: c, ns: "web", share: share, class: "carve-nfs-csi"}
	t.Cleanup(func() { dumpPods(t, c, s.ns) })
	s.run(ctx)
}

// snapshotterWithoutCRDs: on a cluster without the snapshot CRDs (this one,
// before deploy/examples) csi-snapshotter keeps running and waits for them;
// it must not have restarted.
func snapshotterWithoutCRDs(t *testing.T, c *cluster.Cluster) {
	ctx := t.Context()
	if _, err := c.Client.Discovery().ServerResourcesForGroupVersion("snapshot.storage.k8s.io/v1"); err == nil {
		t.Fatal("the cluster serves snapshot.storage.k8s.io/v1 before deploy/snapshot-controller")
	}
	pods, err := c.Client.CoreV1().Pods("carve-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=carve-csi-controller"})
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, p := range pods.Items {
		for _, st := range p.Status.ContainerStatuses {
			if st.Name != "csi-snapshotter" {
				continue
			}
			seen++
			if st.RestartCount != 0 || st.State.Running == nil || !st.Ready {
				t.Errorf("pod %s: csi-snapshotter without the CRDs: restarts %d, running %t, ready %t", p.Name, st.RestartCount, st.State.Running != nil, st.Ready)
			}
		}
	}
	if seen == 0 {
		t.Fatal("no csi-snapshotter container in the controller's pods")
	}
	t.Logf("csi-snapshotter without the snapshot CRDs: %d containers running, none restarted", seen)
}

// unmappedShare: a claim of a class naming a share the controller does not
// map gets a ProvisioningFailed event naming the share and the flag to add,
// and no PV.
func unmappedShare(t *testing.T, c *cluster.Cluster) {
	ctx := t.Context()
	const ns, class = "unmapped", "carve-unmapped"
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sc := &storagev1.StorageClass{
		ObjectMeta:  metav1.ObjectMeta{Name: class},
		Provisioner: "carve.csi.dev",
		Parameters:  map[string]string{"backend": "nfs", "server": "nfs.example.com", "share": "/export"},
	}
	if _, err := c.Client.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	createClaim(t, c.Client, ns, "data", class)
	err := poll(ctx, 2*time.Minute, claimEvent(c.Client, ns, "data", "ProvisioningFailed",
		"nfs.example.com:/export", "share is not mapped", "--mount-map nfs.example.com:/export=LOCALPATH"))
	if err != nil {
		logEvents(t, c.Client, ns, "data")
		t.Fatalf("no ProvisioningFailed event naming the unmapped share: %v", err)
	}
	pvc, err := c.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data", metav1.GetOptions{})
	if err != nil || pvc.Spec.VolumeName != "" {
		t.Fatalf("claim on an unmapped share: %v, volume %q", err, pvc.Spec.VolumeName)
	}
	logEvents(t, c.Client, ns, "data")
	if err := c.Client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Client.StorageV1().StorageClasses().Delete(ctx, class, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

type realStory struct {
	t     *testing.T
	c     *cluster.Cluster
	ns    string
	share string
	// class is the StorageClass of the claims (one of deploy/csi-driver's).
	class string
	// fsType: what /data inside a container must be mounted as.
	fsType string
	// starts counts the container starts each ordinal's data has seen.
	starts map[int]int
}

const realSTS = "web"

func (s *realStory) run(ctx context.Context) {
	t := s.t
	s.starts = map[int]int{}
	if _, err := s.c.Client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: s.ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	step := func(name string, f func() error) {
		t0 := time.Now()
		if err := f(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Logf("step %q done in %s", name, time.Since(t0).Round(100*time.Millisecond))
	}
	step("3 replicas write through their volumes", func() error {
		if err := s.createSTS(ctx, 3); err != nil {
			return err
		}
		return s.check(ctx, 3, []int{0, 1, 2})
	})
	step("scale to 5", func() error {
		if err := s.scale(ctx, 5); err != nil {
			return err
		}
		return s.check(ctx, 5, []int{3, 4})
	})
	step("delete pod web-0: its replacement reads the old data", func() error {
		old, err := s.c.Client.CoreV1().Pods(s.ns).Get(ctx, realSTS+"-0", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if err := s.c.Client.CoreV1().Pods(s.ns).Delete(ctx, old.Name, metav1.DeleteOptions{}); err != nil {
			return err
		}
		if err := poll(ctx, 2*time.Minute, func(ctx context.Context) (bool, error) {
			p, err := s.c.Client.CoreV1().Pods(s.ns).Get(ctx, old.Name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			return p.UID != old.UID && podReady(p), nil
		}); err != nil {
			return fmt.Errorf("web-0 not back: %w", err)
		}
		return s.check(ctx, 5, []int{0})
	})
	step("scale to 3: the claims of web-3 and web-4 stay", func() error {
		if err := s.scale(ctx, 3); err != nil {
			return err
		}
		for _, i := range []int{3, 4} {
			if _, err := s.c.Client.CoreV1().PersistentVolumeClaims(s.ns).Get(ctx, claimName(i), metav1.GetOptions{}); err != nil {
				return err
			}
		}
		return s.check(ctx, 3, nil)
	})
	step("scale to 5 again: web-3 and web-4 find their data", func() error {
		if err := s.scale(ctx, 5); err != nil {
			return err
		}
		return s.check(ctx, 5, []int{3, 4})
	})
	step("restart the node plugin: running pods keep their volumes, new publishes work", func() error {
		return s.restartNodePlugin(ctx)
	})
	step("delete the StatefulSet and its claims, recreate: the volumes are re-attached", func() error {
		if err := s.c.Client.AppsV1().StatefulSets(s.ns).Delete(ctx, realSTS, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationForeground)}); err != nil {
			return err
		}
		if err := poll(ctx, 2*time.Minute, func(ctx context.Context) (bool, error) {
			pods, err := s.c.Client.CoreV1().Pods(s.ns).List(ctx, metav1.ListOptions{})
			return err == nil && len(pods.Items) == 0, nil
		}); err != nil {
			return fmt.Errorf("pods not gone: %w", err)
		}
		for i := 0; i < 5; i++ {
			if err := s.c.Client.CoreV1().PersistentVolumeClaims(s.ns).Delete(ctx, claimName(i), metav1.DeleteOptions{}); err != nil {
				return err
			}
		}
		if err := poll(ctx, 2*time.Minute, func(ctx context.Context) (bool, error) {
			pvcs, err := s.c.Client.CoreV1().PersistentVolumeClaims(s.ns).List(ctx, metav1.ListOptions{})
			return err == nil && len(pvcs.Items) == 0, nil
		}); err != nil {
			return fmt.Errorf("claims not gone: %w", err)
		}
		if err := s.createSTS(ctx, 5); err != nil {
			return err
		}
		return s.check(ctx, 5, []int{0, 1, 2, 3, 4})
	})
}

// TestRealNodeExpandNFS deploys carve as TestRealNodeStatefulSetNFS does and
// expands a claim while a pod uses it (see realStory.expand).
func TestRealNodeExpandNFS(t *testing.T) {
	c, _, share := startRealCSI(t)
	ctx := t.Context()
	s := &realStory{t: t, c: c, ns: "grow", share: share}
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: s.ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.expand(ctx); err != nil {
		t.Fatal(err)
	}
}

// expand creates a 1Gi claim of carve-nfs-csi (allowVolumeExpansion: true)
// and a pod writing to it, raises the claim's request to 2Gi, and waits
// until carve-resizer has called ControllerExpandVolume and recorded it:
// the PV's and the claim's capacity 2Gi, no resize condition or status
// left, a VolumeResizeSuccessful event; the pod keeps its data and mount.
func (s *realStory) expand(ctx context.Context) error {
	const name = "grow"
	pvc := &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.ns},
		Spec: v1.PersistentVolumeClaimSpec{
			AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			StorageClassName: ptr.To("carve-nfs-csi"),
			Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	claims := s.c.Client.CoreV1().PersistentVolumeClaims(s.ns)
	if _, err := claims.Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		return err
	}
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.ns},
		Spec: v1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To(int64(1)),
			SecurityContext: &v1.PodSecurityContext{
				RunAsUser: ptr.To(int64(999)), RunAsGroup: ptr.To(int64(999)), FSGroup: ptr.To(int64(999)),
			},
			Containers: []v1.Container{{
				Name:            "app",
				Image:           "carve.test/busybox:1.35",
				ImagePullPolicy: v1.PullNever,
				Command:         []string{"sh", "-c", `echo before-expand > /data/data.txt && touch /tmp/ready && exec sleep 1000000`},
				ReadinessProbe: &v1.Probe{
					ProbeHandler:  v1.ProbeHandler{Exec: &v1.ExecAction{Command: []string{"cat", "/tmp/ready"}}},
					PeriodSeconds: 1,
				},
				VolumeMounts: []v1.VolumeMount{{Name: "data", MountPath: "/data"}},
			}},
			Volumes: []v1.Volume{{Name: "data", VolumeSource: v1.VolumeSource{
				PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: name},
			}}},
		},
	}
	if _, err := s.c.Client.CoreV1().Pods(s.ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return err
	}
	if err := poll(ctx, 3*time.Minute, func(ctx context.Context) (bool, error) {
		p, err := s.c.Client.CoreV1().Pods(s.ns).Get(ctx, name, metav1.GetOptions{})
		return err == nil && podReady(p), err
	}); err != nil {
		return fmt.Errorf("pod %s not Ready: %w", name, err)
	}
	bound, err := claims.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if c := bound.Status.Capacity[v1.ResourceStorage]; c.String() != "1Gi" {
		return fmt.Errorf("claim bound with capacity %s, want 1Gi", c.String())
	}

	t0 := time.Now()
	patch := []byte(`{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}`)
	if _, err := claims.Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("raise the request to 2Gi: %w", err)
	}
	want := resource.MustParse("2Gi")
	var last *v1.PersistentVolumeClaim
	if err := poll(ctx, 2*time.Minute, func(ctx context.Context) (bool, error) {
		p, err := claims.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		last = p
		c := p.Status.Capacity[v1.ResourceStorage]
		return c.Cmp(want) == 0, nil
	}); err != nil {
		return fmt.Errorf("claim capacity never 2Gi: %w; status %+v", err, last.Status)
	}
	s.t.Logf("claim %s: capacity 2Gi %s after the request", name, time.Since(t0).Round(10*time.Millisecond))
	for _, c := range last.Status.Conditions {
		if c.Type == v1.PersistentVolumeClaimResizing || c.Type == v1.PersistentVolumeClaimFileSystemResizePending ||
			c.Type == v1.PersistentVolumeClaimControllerResizeError {
			return fmt.Errorf("claim still has condition %s: %+v", c.Type, last.Status.Conditions)
		}
	}
	if st, ok := last.Status.AllocatedResourceStatuses[v1.ResourceStorage]; ok {
		return fmt.Errorf("claim still has allocatedResourceStatuses[storage] %q", st)
	}
	if a := last.Status.AllocatedResources[v1.ResourceStorage]; a.Cmp(want) != 0 {
		return fmt.Errorf("claim allocatedResources %s, want 2Gi", a.String())
	}
	pv, err := s.c.Client.CoreV1().PersistentVolumes().Get(ctx, last.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if c := pv.Spec.Capacity[v1.ResourceStorage]; c.Cmp(want) != 0 {
		return fmt.Errorf("PV %s capacity %s, want 2Gi", pv.Name, c.String())
	}
	if err := poll(ctx, time.Minute, func(ctx context.Context) (bool, error) {
		evs, err := s.c.Client.CoreV1().Events(s.ns).List(ctx, metav1.ListOptions{
			FieldSelector: "involvedObject.kind=PersistentVolumeClaim,involvedObject.name=" + name + ",reason=VolumeResizeSuccessful",
		})
		return err == nil && len(evs.Items) > 0, err
	}); err != nil {
		return fmt.Errorf("no VolumeResizeSuccessful event on the claim: %w", err)
	}
	out, err := s.c.Kubectl(ctx, "-n", s.ns, "exec", name, "--", "sh", "-c", "cat /data/data.txt && echo after-expand >> /data/data.txt && awk '$2==\"/data\"' /proc/mounts")
	if err != nil {
		return fmt.Errorf("pod after the expansion: %w", err)
	}
	if !strings.HasPrefix(out, "before-expand\n") || !strings.Contains(out, " /data ") {
		return fmt.Errorf("pod after the expansion reads %q", out)
	}
	onShare, err := os.ReadFile(filepath.Join(s.share, s.ns, name, "data.txt"))
	if err != nil || string(onShare) != "before-expand\nafter-expand\n" {
		return fmt.Errorf("the share holds %q (%v)", onShare, err)
	}
	return nil
}

// restartNodePlugin deletes the node plugin's pod and waits for the
// DaemonSet's replacement; every replica must still read its data and
// write through its mount meanwhile (NFS with --mount-map publishes bind
// mounts, which belong to the kernel, not to the plugin's processes), and
// the kubelet must re-register the plugin (the next step publishes again).
func (s *realStory) restartNodePlugin(ctx context.Context) error {
	pods, err := s.c.Client.CoreV1().Pods("carve-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=carve-csi-node"})
	if err != nil || len(pods.Items) != 1 {
		return fmt.Errorf("node plugin pod: %v (%d pods)", err, len(pods.Items))
	}
	old := pods.Items[0]
	if err := s.c.Client.CoreV1().Pods("carve-system").Delete(ctx, old.Name, metav1.DeleteOptions{}); err != nil {
		return err
	}
	t0 := time.Now()
	if err := poll(ctx, 2*time.Minute, func(ctx context.Context) (bool, error) {
		pods, err := s.c.Client.CoreV1().Pods("carve-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=carve-csi-node"})
		if err != nil {
			return false, err
		}
		return len(pods.Items) == 1 && pods.Items[0].UID != old.UID && podReady(&pods.Items[0]), nil
	}); err != nil {
		return fmt.Errorf("node plugin not back: %w", err)
	}
	s.t.Logf("node plugin pod replaced and Ready in %s", time.Since(t0).Round(100*time.Millisecond))
	for i := 0; i < 5; i++ {
		pod := fmt.Sprintf("%s-%d", realSTS, i)
		if _, err := s.c.Kubectl(ctx, "-n", s.ns, "exec", pod, "--", "sh", "-c", "echo after-restart > /data/probe.txt && cat /data/probe.txt && cat /data/log.txt >/dev/null"); err != nil {
			return fmt.Errorf("%s after the plugin restart: %w", pod, err)
		}
		if b, err := os.ReadFile(filepath.Join(s.share, s.ns, claimName(i), "probe.txt")); err != nil || string(b) != "after-restart\n" {
			return fmt.Errorf("%s: write after the plugin restart did not reach the share: %q %v", pod, b, err)
		}
	}
	return s.check(ctx, 5, nil)
}

func claimName(i int) string { return fmt.Sprintf("data-%s-%d", realSTS, i) }

// createSTS creates the StatefulSet: busybox containers (non-root, fsGroup)
// that append a line to /data/log.txt each time they start.
func (s *realStory) createSTS(ctx context.Context, replicas int32) error {
	labels := map[string]string{"app": realSTS}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: realSTS, Namespace: s.ns},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr.To(replicas),
			ServiceName:         realSTS,
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Selector:            &metav1.LabelSelector{MatchLabels: labels},
			Template: v1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: v1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To(int64(1)),
					SecurityContext: &v1.PodSecurityContext{
						RunAsUser: ptr.To(int64(999)), RunAsGroup: ptr.To(int64(999)), FSGroup: ptr.To(int64(999)),
						FSGroupChangePolicy: ptr.To(v1.FSGroupChangeOnRootMismatch),
					},
					Containers: []v1.Container{{
						Name:            "app",
						Image:           "carve.test/busybox:1.35",
						ImagePullPolicy: v1.PullNever,
						Command: []string{"sh", "-c",
							`echo "start $(hostname) $(date +%s)" >> /data/log.txt && touch /tmp/ready && exec sleep 1000000`},
						ReadinessProbe: &v1.Probe{
							ProbeHandler:  v1.ProbeHandler{Exec: &v1.ExecAction{Command: []string{"cat", "/tmp/ready"}}},
							PeriodSeconds: 1,
						},
						VolumeMounts: []v1.VolumeMount{{Name: "data", MountPath: "/data"}},
					}},
				},
			},
			VolumeClaimTemplates: []v1.PersistentVolumeClaim{{
				ObjectMeta: metav1.ObjectMeta{Name: "data"},
				Spec: v1.PersistentVolumeClaimSpec{
					AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
					StorageClassName: ptr.To(s.class),
					Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("16Mi")}},
				},
			}},
		},
	}
	_, err := s.c.Client.AppsV1().StatefulSets(s.ns).Create(ctx, sts, metav1.CreateOptions{})
	return err
}

func (s *realStory) scale(ctx context.Context, n int32) error {
	scale, err := s.c.Client.AppsV1().StatefulSets(s.ns).GetScale(ctx, realSTS, metav1.GetOptions{})
	if err != nil {
		return err
	}
	scale.Spec.Replicas = n
	_, err = s.c.Client.AppsV1().StatefulSets(s.ns).UpdateScale(ctx, realSTS, scale, metav1.UpdateOptions{})
	return err
}

// check waits for n Ready replicas (and no others), then, for every
// replica, reads /data/log.txt inside its container (kubectl exec) and in
// the share's directory of its claim: they must be the same and hold one
// "start web-i" line per start so far. started lists the ordinals that
// started (again) since the last check.
func (s *realStory) check(ctx context.Context, n int, started []int) error {
	for _, i := range started {
		s.starts[i]++
	}
	if err := poll(ctx, 3*time.Minute, func(ctx context.Context) (bool, error) {
		pods, err := s.c.Client.CoreV1().Pods(s.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		ready := 0
		for i := range pods.Items {
			if podReady(&pods.Items[i]) {
				ready++
			}
		}
		return ready == n && len(pods.Items) == n, nil
	}); err != nil {
		return fmt.Errorf("waiting for %d Ready replicas: %w", n, err)
	}
	for i := 0; i < n; i++ {
		pod := fmt.Sprintf("%s-%d", realSTS, i)
		inPod, err := s.c.Kubectl(ctx, "-n", s.ns, "exec", pod, "--", "sh", "-c", "cat /data/log.txt; grep -c . /proc/mounts >/dev/null; awk '$2==\"/data\"' /proc/mounts")
		if err != nil {
			return err
		}
		lines, mounts := splitExec(inPod)
		if len(mounts) == 0 {
			return fmt.Errorf("%s: /data is not a mount inside the container", pod)
		}
		if f := strings.Fields(mounts[0]); s.fsType != "" && (len(f) < 3 || f[2] != s.fsType) {
			return fmt.Errorf("%s: /data is %q, want a %s mount", pod, mounts[0], s.fsType)
		}
		want := s.starts[i]
		if len(lines) != want {
			return fmt.Errorf("%s: /data/log.txt has %d lines, want %d (one per start): %q", pod, len(lines), want, lines)
		}
		for _, l := range lines {
			if !strings.HasPrefix(l, "start "+pod+" ") {
				return fmt.Errorf("%s: unexpected line %q", pod, l)
			}
		}
		onShare, err := os.ReadFile(filepath.Join(s.share, s.ns, claimName(i), "log.txt"))
		if err != nil {
			return fmt.Errorf("%s: the share: %w", pod, err)
		}
		if strings.Join(lines, "\n")+"\n" != string(onShare) {
			return fmt.Errorf("%s: the container reads %q, the share holds %q", pod, lines, onShare)
		}
		if i == 0 {
			s.t.Logf("%s: /data is %s; log.txt: %q", pod, mounts[0], lines)
		}
	}
	return nil
}

// splitExec separates log lines from /proc/mounts lines in the exec output.
func splitExec(out string) (lines, mounts []string) {
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		switch {
		case strings.HasPrefix(l, "start "):
			lines = append(lines, l)
		case strings.Contains(l, " /data "):
			mounts = append(mounts, l)
		}
	}
	return lines, mounts
}

func podReady(p *v1.Pod) bool {
	if p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == v1.PodReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

func poll(ctx context.Context, timeout time.Duration, cond func(context.Context) (bool, error)) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		ok, err := cond(ctx)
		if err != nil && !apierrors.IsNotFound(err) {
			last = err
		}
		return ok, nil
	})
	if err != nil && last != nil {
		return fmt.Errorf("%w (last error: %v)", err, last)
	}
	return err
}

// dumpPods logs the pods of a namespace and their containers' states.
func dumpPods(t testing.TB, c *cluster.Cluster, ns string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := c.Kubectl(ctx, "-n", ns, "get", "pods", "-o", "wide")
	t.Logf("pods in %s:\n%s%v", ns, out, errOrEmpty(err))
	if t.Failed() {
		out, _ := c.Kubectl(ctx, "-n", ns, "describe", "pods")
		_ = os.WriteFile(filepath.Join(c.LogDir, "describe-"+ns+".txt"), []byte(out), 0o644)
		// CI keeps only the test's output: the namespace's events and
		// claims go there, the files above stay for a local run.
		out, err = c.Kubectl(ctx, "-n", ns, "get", "events", "--sort-by=.lastTimestamp")
		t.Logf("events in %s:\n%s%v", ns, tail(out, 60), errOrEmpty(err))
		out, err = c.Kubectl(ctx, "-n", ns, "get", "pvc,pv", "-o", "wide")
		t.Logf("claims in %s:\n%s%v", ns, out, errOrEmpty(err))
		for _, ctr := range []string{"carve", "csi-provisioner", "csi-resizer", "csi-snapshotter", "node-driver-registrar", "liveness-probe"} {
			for _, sel := range []string{"app.kubernetes.io/name=carve-csi-controller", "app.kubernetes.io/name=carve-csi-node"} {
				out, _ := c.Kubectl(ctx, "-n", ns, "logs", "-l", sel, "-c", ctr, "--tail=200", "--prefix")
				_ = os.WriteFile(filepath.Join(c.LogDir, "pod-"+strings.TrimPrefix(sel, "app.kubernetes.io/name=")+"-"+ctr+".log"), []byte(out), 0o644)
			}
		}
	}
}

// tail keeps the last n lines of s.
func tail(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "")
}

func errOrEmpty(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
