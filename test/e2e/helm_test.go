//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/carve-csi/carve/test/chart"
	"github.com/carve-csi/carve/test/cluster"
	"github.com/carve-csi/carve/test/scenario"
)

// TestHelm installs charts/carve with helm install on a real node, as
// README's "Install with Helm" does, in both modes: the CSI driver, then the
// classic provisioner beside it. Each install gets values pointing at the
// images make images built (imported into the node, pullPolicy Never) and at
// the share, a directory standing in for the node's mount of the export (the
// controller's hostPath, the node plugin's mapped share: this kernel has no
// NFS client, see realnode_test.go). In each mode a claim is provisioned and
// a pod writes a file through it, which must land in the claim's directory on
// the share. The kubelet runs with a --root-dir of its own (not
// /var/lib/kubelet), which the chart follows through kubeletDir. Last, helm
// uninstall removes both releases' cluster-wide objects.
func TestHelm(t *testing.T) {
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	helm, err := chart.Helm(t.Context(), repo)
	if err != nil {
		t.Fatal(err)
	}
	c, n, tag := scenario.StartRealNode(t, repo, cluster.RealNodeOptions{KubeletRoot: "scratch"})
	t.Cleanup(func() {
		dumpPods(t, c, "carve-csi")
		dumpPods(t, c, "carve-classic")
	})
	share, err := n.SharedDir("export")
	if err != nil {
		t.Fatal(err)
	}
	helmHome := t.TempDir()
	env := []string{
		"KUBECONFIG=" + c.Kubeconfig,
		// Helm's own state (repositories, cache) stays in the test's directory.
		"HELM_CACHE_HOME=" + filepath.Join(helmHome, "cache"),
		"HELM_CONFIG_HOME=" + filepath.Join(helmHome, "config"),
		"HELM_DATA_HOME=" + filepath.Join(helmHome, "data"),
	}
	install := func(t *testing.T, ns, values string) {
		t.Helper()
		p := filepath.Join(t.TempDir(), "values.yaml")
		if err := os.WriteFile(p, []byte(values), 0o644); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		out, err := chart.Run(t.Context(), helm, env, "install", "carve", filepath.Join(repo, chart.Dir),
			"--namespace", ns, "--create-namespace", "-f", p, "--wait", "--timeout", "5m")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("helm install -n %s: %s\n%s", ns, time.Since(t0).Round(time.Second), out)
	}
	// What the real node has: carve's images at make images' tag, and carve's
	// stand-ins for the sidecars the module proxy does not serve (README
	// "Images"), as scenario.RealOverlay sets them for deploy/.
	images := fmt.Sprintf(`
images:
  controller: {repository: ghcr.io/carve-csi/carve-csi-controller, tag: %[1]q, pullPolicy: Never}
  node: {repository: ghcr.io/carve-csi/carve-csi-node, tag: %[1]q, pullPolicy: Never}
  provisioner: {repository: ghcr.io/carve-csi/carve-provisioner, tag: %[1]q, pullPolicy: Never}
  csiProvisioner: {repository: ghcr.io/carve-csi/csi-provisioner, pullPolicy: Never}
  csiResizer: {repository: ghcr.io/carve-csi/carve-resizer, tag: %[1]q, pullPolicy: Never}
  nodeDriverRegistrar: {repository: ghcr.io/carve-csi/carve-registrar, tag: %[1]q, pullPolicy: Never}
  livenessProbe: {repository: ghcr.io/carve-csi/carve-livenessprobe, tag: %[1]q, pullPolicy: Never}
  csiSnapshotter: {repository: ghcr.io/carve-csi/csi-snapshotter, pullPolicy: Never}
shares:
  nfs:
    - {name: nfs, server: nfs.example.com, share: /export, hostPath: %[2]q, nodeHostPath: %[2]q}
`, tag, share)

	ok := t.Run("csi", func(t *testing.T) {
		install(t, "carve-csi", images+fmt.Sprintf(`
mode: csi
kubeletDir: %q
storageClasses:
  - name: helm-csi
    isDefaultClass: true
    parameters: {backend: nfs, server: nfs.example.com, share: /export}
`, n.KubeletRoot))
		if err := scenario.WaitRegistered(t.Context(), c, n, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		// No storageClassName: the chart's isDefaultClass picks helm-csi.
		pv := writeThroughClaim(t, c, share, "helm-csi-app", nil)
		if pv.Spec.StorageClassName != "helm-csi" || pv.Spec.CSI == nil || pv.Spec.CSI.Driver != "carve.csi.dev" {
			t.Errorf("PV %s: class %q, csi %+v: want helm-csi, driver carve.csi.dev", pv.Name, pv.Spec.StorageClassName, pv.Spec.CSI)
		}
	})
	if !ok {
		t.FailNow()
	}
	// The classic provisioner writes spec.nfs PVs by default, which the
	// kubelet mounts with this node's missing NFS client; volumeType csi
	// hands the mount to the CSI release's node plugin (README "Deploy").
	ok = t.Run("provisioner", func(t *testing.T) {
		install(t, "carve-classic", images+`
mode: provisioner
storageClasses:
  - name: helm-classic
    parameters: {backend: nfs, server: nfs.example.com, share: /export, volumeType: csi}
`)
		pv := writeThroughClaim(t, c, share, "helm-classic-app", ptr.To("helm-classic"))
		if pv.Annotations["pv.kubernetes.io/provisioned-by"] != "carve.csi.dev/provisioner" || pv.Spec.CSI == nil {
			t.Errorf("PV %s: provisioned by %q, csi %+v: want the classic provisioner, a spec.csi PV",
				pv.Name, pv.Annotations["pv.kubernetes.io/provisioned-by"], pv.Spec.CSI)
		}
	})
	if !ok {
		t.FailNow()
	}
	t.Run("uninstall", func(t *testing.T) {
		ctx := t.Context()
		for _, ns := range []string{"carve-classic", "carve-csi"} {
			if out, err := chart.Run(ctx, helm, env, "uninstall", "carve", "--namespace", ns, "--wait", "--timeout", "3m"); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		}
		if _, err := c.Client.StorageV1().CSIDrivers().Get(ctx, "carve.csi.dev", metav1.GetOptions{}); err == nil {
			t.Error("CSIDriver carve.csi.dev left after helm uninstall")
		}
		classes, err := c.Client.StorageV1().StorageClasses().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(classes.Items) != 0 {
			t.Errorf("%d StorageClasses left after helm uninstall", len(classes.Items))
		}
		roles, err := c.Client.RbacV1().ClusterRoles().List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/part-of=carve"})
		if err != nil {
			t.Fatal(err)
		}
		if len(roles.Items) != 0 {
			t.Errorf("ClusterRoles left after helm uninstall: %v", roles.Items)
		}
	})
}

// writeThroughClaim creates a namespace, a claim of class (nil: the default
// class) and a pod (non-root, fsGroup) that writes a file into it and exits;
// the file must then be in the claim's directory on the share (the default
// pathPattern: <namespace>/<claim>). It returns the claim's PV.
func writeThroughClaim(t *testing.T, c *cluster.Cluster, share, ns string, class *string) *v1.PersistentVolume {
	t.Helper()
	ctx := t.Context()
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	const claim = "data"
	pvc := &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: claim, Namespace: ns},
		Spec: v1.PersistentVolumeClaimSpec{
			AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			StorageClassName: class,
			Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("16Mi")}},
		},
	}
	if _, err := c.Client.CoreV1().PersistentVolumeClaims(ns).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	msg := "written by " + ns + " through carve"
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "writer", Namespace: ns},
		Spec: v1.PodSpec{
			RestartPolicy:                 v1.RestartPolicyNever,
			TerminationGracePeriodSeconds: ptr.To(int64(1)),
			SecurityContext: &v1.PodSecurityContext{
				RunAsUser: ptr.To(int64(999)), RunAsGroup: ptr.To(int64(999)), FSGroup: ptr.To(int64(999)),
			},
			Containers: []v1.Container{{
				Name:            "app",
				Image:           "carve.test/busybox:1.35",
				ImagePullPolicy: v1.PullNever,
				Command:         []string{"sh", "-c", "echo '" + msg + "' > /data/hello.txt"},
				VolumeMounts:    []v1.VolumeMount{{Name: "data", MountPath: "/data"}},
			}},
			Volumes: []v1.Volume{{Name: "data", VolumeSource: v1.VolumeSource{
				PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: claim},
			}}},
		},
	}
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	var phase v1.PodPhase
	if err := poll(ctx, 3*time.Minute, func(ctx context.Context) (bool, error) {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		phase = p.Status.Phase
		return phase == v1.PodSucceeded || phase == v1.PodFailed, nil
	}); err != nil || phase != v1.PodSucceeded {
		dumpPods(t, c, ns)
		out, _ := c.Kubectl(ctx, "-n", ns, "describe", "pod,pvc")
		t.Fatalf("pod %s/%s: phase %s (%v)\n%s", ns, pod.Name, phase, err, out)
	}
	t.Logf("%s: claim bound, pod wrote through it and exited in %s", ns, time.Since(t0).Round(100*time.Millisecond))
	got, err := os.ReadFile(filepath.Join(share, ns, claim, "hello.txt"))
	if err != nil || string(got) != msg+"\n" {
		t.Fatalf("the share's %s/%s/hello.txt holds %q (%v), want %q", ns, claim, got, err, msg+"\n")
	}
	bound, err := c.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, claim, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pv, err := c.Client.CoreV1().PersistentVolumes().Get(ctx, bound.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The pod is done; delete it so the node unpublishes the volume while
	// the node plugin still runs (uninstall removes it).
	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := poll(ctx, 2*time.Minute, func(ctx context.Context) (bool, error) {
		_, err := c.Client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	}); err != nil {
		t.Fatalf("pod %s/%s not gone: %v", ns, pod.Name, err)
	}
	return pv
}
