package scenario

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/carve-csi/carve/test/cluster"
)

// RealImages reads dir/images.txt (make images) and returns the image
// tarballs and carve's own tag.
func RealImages(dir string) (tars []string, tag string, err error) {
	f, err := os.Open(filepath.Join(dir, "images.txt"))
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		tars = append(tars, filepath.Join(dir, fields[0]+".tar"))
		if fields[0] == "carve-csi-node" {
			tag = fields[1][strings.LastIndex(fields[1], ":")+1:]
		}
	}
	if err := sc.Err(); err != nil {
		return nil, "", err
	}
	if tag == "" {
		return nil, "", fmt.Errorf("%s/images.txt lists no carve-csi-node", dir)
	}
	return tars, tag, nil
}

// RealOverlay writes the test overlay of deploy/examples/csi-nfs
// (deploy/csi-driver with one NFS export) into dir. It changes:
//   - images: carve's own at the tag make images built; csi-snapshotter
//     built from source (module proxy; csi-provisioner, carve's build of it,
//     is named by deploy/ as make images tags it); carve-registrar,
//     carve-livenessprobe and carve-resizer, carve's stand-ins for
//     node-driver-registrar, livenessprobe and csi-resizer, which the module
//     proxy does not serve;
//   - the share: the example's nfs-share volume (in-tree NFS, which this
//     kernel cannot mount) becomes a hostPath of the directory standing in
//     for the export, and the node plugin gets the documented mapped-share
//     variant (--mount-map plus the hostPath), which deploy's node.yaml
//     ships commented out.
func RealOverlay(dir, repo, share, tag string) error {
	return writeOverlay(dir, repo, "deploy/examples/csi-nfs", csiImages+`patches:
`+hostPathShare("carve-csi-controller")+`
  - target: {kind: DaemonSet, name: carve-csi-node}
    patch: |
      - op: add
        path: /spec/template/spec/containers/2/args/-
        value: --mount-map=nfs.example.com:/export=/shares/nfs
      - op: add
        path: /spec/template/spec/containers/2/volumeMounts/-
        value: {name: nfs-share, mountPath: /shares/nfs, mountPropagation: HostToContainer}
      - op: add
        path: /spec/template/spec/volumes/-
        value: {name: nfs-share, hostPath: {path: %[3]q, type: Directory}}
`, tag, share)
}

// csiImages is the overlays' images section for deploy/csi-driver (see
// RealOverlay); %[2]s is the tag make images built.
const csiImages = `images:
  - {name: ghcr.io/carve-csi/carve-csi-controller, newTag: %[2]q}
  - {name: ghcr.io/carve-csi/carve-csi-node, newTag: %[2]q}
  - {name: registry.k8s.io/sig-storage/csi-node-driver-registrar, newName: ghcr.io/carve-csi/carve-registrar, newTag: %[2]q}
  - {name: registry.k8s.io/sig-storage/livenessprobe, newName: ghcr.io/carve-csi/carve-livenessprobe, newTag: %[2]q}
  - {name: registry.k8s.io/sig-storage/csi-resizer, newName: ghcr.io/carve-csi/carve-resizer, newTag: %[2]q}
  - {name: registry.k8s.io/sig-storage/csi-snapshotter, newName: ghcr.io/carve-csi/csi-snapshotter}
`

// RealBaseOverlay writes the test overlay of deploy/csi-driver as shipped,
// with no share: only the images change (as in RealOverlay).
func RealBaseOverlay(dir, repo, tag string) error {
	return writeOverlay(dir, repo, "deploy/csi-driver", csiImages, tag, "")
}

// hostPathShare is a kustomize patch turning the nfs-share volume of
// Deployment name (an nfs pod volume in deploy/examples) into a hostPath of
// the overlay's share, %[3]s: the volume is matched by name, whatever its
// place in the list.
func hostPathShare(name string) string {
	return `  - target: {kind: Deployment, name: ` + name + `}
    patch: |
      apiVersion: apps/v1
      kind: Deployment
      metadata: {name: ` + name + `}
      spec:
        template:
          spec:
            volumes:
              - {name: nfs-share, nfs: null, hostPath: {path: %[3]q, type: Directory}}
`
}

// writeOverlay writes dir/kustomization.yaml: the kustomization of
// repo/base (relative to dir), followed by body, a format whose %[2]s is the
// images' tag and %[3]s the share's directory.
func writeOverlay(dir, repo, base, body, tag, share string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	rel, err := filepath.Rel(dir, filepath.Join(repo, base))
	if err != nil {
		return err
	}
	k := fmt.Sprintf("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - %[1]s\n"+body, rel, tag, share)
	return os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644)
}

// DeployRealCSI applies deploy/csi-driver through RealOverlay on a real
// node and waits until the controller and the node plugin are Ready and the
// kubelet has registered the driver (CSINode). The rendered manifests go to
// the cluster's LogDir/deployed.yaml.
func DeployRealCSI(ctx context.Context, c *cluster.Cluster, n *cluster.RealNode, repo, share, tag string) error {
	overlay := filepath.Join(n.Dir, "overlay")
	if err := RealOverlay(overlay, repo, share, tag); err != nil {
		return err
	}
	return deployOverlay(ctx, c, n, overlay)
}

// DeployRealBase applies deploy/csi-driver as shipped (RealBaseOverlay:
// images only, no share) on a real node and waits as DeployRealCSI does.
func DeployRealBase(ctx context.Context, c *cluster.Cluster, n *cluster.RealNode, repo, tag string) error {
	overlay := filepath.Join(n.Dir, "overlay-base")
	if err := RealBaseOverlay(overlay, repo, tag); err != nil {
		return err
	}
	return deployOverlay(ctx, c, n, overlay)
}

// applyOverlay renders a kustomization into the cluster's LogDir/name and
// applies it. deploy/examples' VolumeSnapshotClasses need the snapshot
// CRDs, which a cluster has before it applies them: installed first
// (InstallSnapshotCRDs) when the kustomization has one.
func applyOverlay(ctx context.Context, c *cluster.Cluster, overlay, name string) error {
	out, err := c.Kubectl(ctx, "kustomize", overlay)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(c.LogDir, name), []byte(out), 0o644); err != nil {
		return err
	}
	if strings.Contains(out, "\nkind: VolumeSnapshotClass\n") {
		repo, err := cluster.RepoRoot()
		if err != nil {
			return err
		}
		if err := InstallSnapshotCRDs(ctx, c, repo); err != nil {
			return err
		}
	}
	_, err = c.Kubectl(ctx, "apply", "-k", overlay)
	return err
}

// snapshotCRDs are the CRDs deploy/snapshot-controller/crds holds.
var snapshotCRDs = []string{
	"crd/volumesnapshotclasses.snapshot.storage.k8s.io",
	"crd/volumesnapshotcontents.snapshot.storage.k8s.io",
	"crd/volumesnapshots.snapshot.storage.k8s.io",
}

// InstallSnapshotCRDs applies deploy/snapshot-controller's CRDs alone and
// waits until the API server serves them.
func InstallSnapshotCRDs(ctx context.Context, c *cluster.Cluster, repo string) error {
	if _, err := c.Kubectl(ctx, "apply", "-f", filepath.Join(repo, "deploy/snapshot-controller/crds")); err != nil {
		return err
	}
	_, err := c.Kubectl(ctx, append([]string{"wait", "--for=condition=Established", "--timeout=60s"}, snapshotCRDs...)...)
	return err
}

// DeploySnapshotController applies deploy/snapshot-controller (CRDs first,
// as InstallSnapshotCRDs) with the snapshot-controller image make images
// built, and waits until it has rolled out. The rendered manifests go to the
// cluster's LogDir/deployed-snapshot-controller.yaml.
func DeploySnapshotController(ctx context.Context, c *cluster.Cluster, n *cluster.RealNode, repo string) error {
	if err := InstallSnapshotCRDs(ctx, c, repo); err != nil {
		return err
	}
	overlay := filepath.Join(n.Dir, "overlay-snapshot-controller")
	if err := writeOverlay(overlay, repo, "deploy/snapshot-controller", `images:
  - {name: registry.k8s.io/sig-storage/snapshot-controller, newName: ghcr.io/carve-csi/snapshot-controller}
`, "", ""); err != nil {
		return err
	}
	if err := applyOverlay(ctx, c, overlay, "deployed-snapshot-controller.yaml"); err != nil {
		return err
	}
	_, err := c.Kubectl(ctx, "-n", "kube-system", "rollout", "status", "deployment/snapshot-controller", "--timeout=3m")
	return err
}

// deployOverlay applies a kustomization of deploy/csi-driver and waits for
// the controller, the node plugin and the kubelet's registration of it.
func deployOverlay(ctx context.Context, c *cluster.Cluster, n *cluster.RealNode, overlay string) error {
	if err := applyOverlay(ctx, c, overlay, "deployed.yaml"); err != nil {
		return err
	}
	for _, w := range []string{"deployment/carve-csi-controller", "daemonset/carve-csi-node"} {
		if _, err := c.Kubectl(ctx, "-n", "carve-system", "rollout", "status", w, "--timeout=3m"); err != nil {
			return err
		}
	}
	// The FUSE holder updates OnDelete, which rollout status does not follow.
	err := wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		ds, err := c.Client.AppsV1().DaemonSets("carve-system").Get(ctx, "carve-csi-fuse", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		return ds.Status.DesiredNumberScheduled > 0 && ds.Status.NumberReady == ds.Status.DesiredNumberScheduled, nil
	})
	if err != nil {
		return fmt.Errorf("DaemonSet carve-csi-fuse never Ready: %w", err)
	}
	return WaitRegistered(ctx, c, n, time.Minute)
}

// WaitRegistered waits until the kubelet lists carve.csi.dev in the node's
// CSINode: the registrar found the plugin socket under the kubelet's
// directory.
func WaitRegistered(ctx context.Context, c *cluster.Cluster, n *cluster.RealNode, timeout time.Duration) error {
	err := wait.PollUntilContextTimeout(ctx, time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		cn, err := c.Client.StorageV1().CSINodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		return slices.ContainsFunc(cn.Spec.Drivers, func(d storagev1.CSINodeDriver) bool {
			return d.Name == "carve.csi.dev" && d.NodeID == n.Name
		}), nil
	})
	if err != nil {
		return fmt.Errorf("CSINode %s never listed carve.csi.dev: %w", n.Name, err)
	}
	return nil
}

// StartRealNode starts a control plane with no kwok node (every pod lands on
// the real node) and one real node with make images' images (CARVE_IMAGES_DIR,
// default bin/images at the repository root) imported besides opts.Images.
// It returns carve's image tag. Without images or a real node it skips, or
// fails under CARVE_REQUIRE_REAL=1.
func StartRealNode(t *testing.T, repo string, opts cluster.RealNodeOptions) (*cluster.Cluster, *cluster.RealNode, string) {
	t.Helper()
	tars, tag := RealImagesFor(t, repo)
	opts.Images = append(tars, opts.Images...)
	c := cluster.StartForTest(t, cluster.Options{Nodes: -1})
	n, err := c.AddRealNode(t.Context(), opts)
	if errors.Is(err, cluster.ErrNoRealNode) {
		SkipOrFailReal(t, err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.MarkFailed()
		}
		n.Stop()
	})
	return c, n, tag
}

// RealImagesFor returns make images' tarballs (CARVE_IMAGES_DIR, default
// bin/images at the repository root) and carve's tag; without them it skips,
// or fails under CARVE_REQUIRE_REAL=1.
func RealImagesFor(t testing.TB, repo string) (tars []string, tag string) {
	t.Helper()
	dir := os.Getenv("CARVE_IMAGES_DIR")
	if dir == "" {
		dir = filepath.Join(repo, "bin/images")
	}
	tars, tag, err := RealImages(dir)
	if err != nil {
		SkipOrFailReal(t, fmt.Sprintf("real node: no images (run make images): %v", err))
	}
	return tars, tag
}

// SkipOrFailReal skips the test, or fails it when CARVE_REQUIRE_REAL=1 (CI:
// a missing part must not pass as a skip).
func SkipOrFailReal(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CARVE_REQUIRE_REAL") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// RealProvisionerOverlay writes the test overlay of
// deploy/examples/provisioner-nfs (deploy/provisioner, the classic
// provisioner, with one NFS export) into dir. Like RealOverlay it changes only the image
// (carve-provisioner at the tag make images built) and the share: the
// nfs-share volume (in-tree NFS, which this kernel cannot mount) becomes a
// hostPath of the directory standing in for the export.
func RealProvisionerOverlay(dir, repo, share, tag string) error {
	return writeOverlay(dir, repo, "deploy/examples/provisioner-nfs", `images:
  - {name: ghcr.io/carve-csi/carve-provisioner, newTag: %[2]q}
patches:
`+hostPathShare("carve-provisioner"), tag, share)
}

// DeployRealProvisioner applies deploy/provisioner through
// RealProvisionerOverlay on a real node and waits until the Deployment has
// rolled out (its pods are Ready only once their caches have synced and the
// share answers). The rendered manifests go to the cluster's
// LogDir/deployed-provisioner.yaml.
func DeployRealProvisioner(ctx context.Context, c *cluster.Cluster, n *cluster.RealNode, repo, share, tag string) error {
	overlay := filepath.Join(n.Dir, "overlay-provisioner")
	if err := RealProvisionerOverlay(overlay, repo, share, tag); err != nil {
		return err
	}
	if err := applyOverlay(ctx, c, overlay, "deployed-provisioner.yaml"); err != nil {
		return err
	}
	_, err := c.Kubectl(ctx, "-n", "carve-system", "rollout", "status", "deployment/carve-provisioner", "--timeout=3m")
	return err
}

// StartRealCSI starts a real node (StartRealNode) and deploys
// deploy/csi-driver on it with a directory standing in for the NFS export
// (DeployRealCSI); it returns that directory.
func StartRealCSI(t *testing.T, repo string, opts cluster.RealNodeOptions) (*cluster.Cluster, *cluster.RealNode, string) {
	t.Helper()
	c, n, tag := StartRealNode(t, repo, opts)
	share, err := n.SharedDir("export")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := DeployRealCSI(t.Context(), c, n, repo, share, tag); err != nil {
		t.Fatal(err)
	}
	t.Logf("carve deployed from deploy/csi-driver, node plugin registered, in %s", time.Since(t0).Round(time.Second))
	return c, n, share
}
