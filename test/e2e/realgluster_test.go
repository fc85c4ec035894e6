//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/carve-csi/carve/internal/testenv/glusterd"
	"github.com/carve-csi/carve/test/cluster"
	"github.com/carve-csi/carve/test/scenario"
)

// TestRealNodeStatefulSetGluster is the real-node story on GlusterFS:
// deploy/csi-driver as shipped plus the Gluster settings its comments
// document (scenario.DeployRealGluster), a real glusterd with a quota-enabled
// volume, the claims carved as directories with a quota each, and every
// publish a FUSE mount (mount -t glusterfs HOST:/VOLUME/DIR) made by the FUSE
// holder (carve-csi-fuse), through which the StatefulSet's containers write.
// Then a pod whose only access is the volume's GID writes to a claim of its
// own (groupWrite).
func TestRealNodeStatefulSetGluster(t *testing.T) {
	g := glusterd.Start(t)
	vol := g.CreateVolume(t, "carve-real", 1)
	g.EnableQuota(t, vol.Name)
	// The controller's view of the volume: the host's FUSE mount, as a user
	// mounts it on the node and maps it in by hostPath.
	mount := g.Mount(t, vol.Name)
	c, n, tag := startRealNode(t)
	ctx := t.Context()
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	nfsShare, err := n.SharedDir("export")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	t.Cleanup(func() { dumpPods(t, c, "carve-system") })
	gl := scenario.RealGluster{Host: g.Host(), Volume: vol.Name, Mount: mount}
	if err := scenario.DeployRealGluster(ctx, c, n, repo, nfsShare, tag, gl); err != nil {
		t.Fatal(err)
	}
	t.Logf("carve deployed from deploy/csi-driver with Gluster %s:%s, node plugin registered, in %s", gl.Host, gl.Volume, time.Since(t0).Round(time.Second))

	s := &realStory{t: t, c: c, ns: "web", share: mount, class: "carve-gluster", fsType: "fuse.glusterfs"}
	t.Cleanup(func() { dumpPods(t, c, s.ns) })
	s.run(ctx)
	// The quota is the claim's size, and df inside the pod shows it
	// (carve sets quota-deem-statfs).
	out, err := c.Kubectl(ctx, "-n", s.ns, "exec", realSTS+"-0", "--", "df", "-kP", "/data")
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(lastLine(out)); len(f) < 2 || f[1] != "16384" {
		t.Fatalf("df -k /data in %s-0: want a size of 16384 KiB (the claim's 16Mi quota), got %q", realSTS, out)
	}
	t.Logf("df -k /data in %s-0: %s", realSTS, lastLine(out))
	if err := groupWrite(ctx, c, s.ns, "carve-gluster"); err != nil {
		t.Fatal(err)
	}
	// No client outlives its mount: the pods deleted on the way took theirs.
	targets, procs, rss := fuseClients(vol.Name)
	t.Logf("Gluster FUSE clients: %d mounts, %d processes (auto_unmount adds one per mount), %d MiB RSS in all",
		len(targets), procs, rss>>20)
	if len(targets) != 5 { // groupWrite's pod is gone
		t.Errorf("glusterfs clients of %s serve %d targets, want the 5 pods': %q", vol.Name, len(targets), slices.Sorted(maps.Keys(targets)))
	}
}

// fuseClients finds the glusterfs client processes serving the kubelet's
// targets of volume vol: the targets, the processes and their resident
// memory.
func fuseClients(vol string) (targets map[string]bool, n int, rss int64) {
	targets = map[string]bool{}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		cmd, err := os.ReadFile(filepath.Join(p, "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(cmd), "\x00"), "\x00")
		if filepath.Base(args[0]) != "glusterfs" || !strings.Contains(string(cmd), vol) ||
			!strings.Contains(string(cmd), "/var/lib/kubelet/pods/") {
			continue
		}
		n++
		targets[args[len(args)-1]] = true
		status, _ := os.ReadFile(filepath.Join(p, "status"))
		for _, l := range strings.Split(string(status), "\n") {
			if f := strings.Fields(l); len(f) == 3 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				rss += kb << 10
			}
		}
	}
	return targets, n, rss
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// groupWrite: access by group, as shares with group-owned directories are
// used. A class like the shipped one with a gid gives the claim's directory
// that group (mode 2770); a pod running as another user and group writes
// there through supplementalGroups alone. Gluster's FUSE client must see the
// caller's supplementary groups for that (hostPID in
// deploy/csi-driver/fuse.yaml); heketi's volumes, adopted with their
// pv.beta.kubernetes.io/gid, are used the same way.
func groupWrite(ctx context.Context, c *cluster.Cluster, ns, class string) error {
	const name, gid = "by-group", 4000
	sc, err := c.Client.StorageV1().StorageClasses().Get(ctx, class, metav1.GetOptions{})
	if err != nil {
		return err
	}
	sc.ObjectMeta = metav1.ObjectMeta{Name: class + "-gid"}
	sc.Parameters["gid"] = strconv.Itoa(gid)
	if _, err := c.Client.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{}); err != nil {
		return err
	}
	pvc := &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1.PersistentVolumeClaimSpec{
			AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			StorageClassName: ptr.To(sc.Name),
			Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("16Mi")}},
		},
	}
	if _, err := c.Client.CoreV1().PersistentVolumeClaims(ns).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		return err
	}
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1.PodSpec{
			RestartPolicy:                 v1.RestartPolicyNever,
			TerminationGracePeriodSeconds: ptr.To(int64(1)),
			SecurityContext: &v1.PodSecurityContext{RunAsUser: ptr.To(int64(4321)), RunAsGroup: ptr.To(int64(4321)),
				SupplementalGroups: []int64{gid}},
			Containers: []v1.Container{{
				Name: "app", Image: "carve.test/busybox:1.35", ImagePullPolicy: v1.PullNever,
				Command:      []string{"sh", "-c", "id; ls -ldn /data; echo written > /data/by-group && cat /data/by-group"},
				VolumeMounts: []v1.VolumeMount{{Name: "data", MountPath: "/data"}},
			}},
			Volumes: []v1.Volume{{Name: "data", VolumeSource: v1.VolumeSource{
				PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: name}}}},
		},
	}
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return err
	}
	var phase v1.PodPhase
	if err := poll(ctx, 3*time.Minute, func(ctx context.Context) (bool, error) {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		phase = p.Status.Phase
		return phase == v1.PodSucceeded || phase == v1.PodFailed, nil
	}); err != nil {
		return fmt.Errorf("pod %s never finished: %w", name, err)
	}
	out, err := c.Kubectl(ctx, "-n", ns, "logs", name)
	if err != nil {
		return err
	}
	claim, err := c.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if phase != v1.PodSucceeded || !strings.HasSuffix(strings.TrimSpace(out), "written") {
		return fmt.Errorf("a pod with only the directory's group %d (PV %s) as a supplementary group could not write: %s\n%s", gid, claim.Spec.VolumeName, phase, out)
	}
	if !regexp.MustCompile(fmt.Sprintf(`\s0\s+%d\s`, gid)).MatchString(out) {
		return fmt.Errorf("the claim's directory is not root:%d, the write proves nothing:\n%s", gid, out)
	}
	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		return err
	}
	return poll(ctx, 2*time.Minute, func(ctx context.Context) (bool, error) {
		_, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
}
