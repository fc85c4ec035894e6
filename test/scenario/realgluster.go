package scenario

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/carve-csi/carve/test/cluster"
)

// RealGluster is a Gluster volume for the real node.
type RealGluster struct {
	// Host is the pool member, as the StorageClass's servers name it; it
	// must resolve on the node (the node plugin runs in the host's network).
	Host string
	// Volume is the Gluster volume holding the claims' directories.
	Volume string
	// Mount is the host's FUSE mount of Volume, which the controller gets
	// by hostPath as a user mounts it on the node from fstab.
	Mount string
}

// GlusterShareInController is where the controller sees RealGluster.Mount.
const GlusterShareInController = "/shares/gluster"

// DeployRealGluster deploys deploy/csi-driver like DeployRealCSI (the NFS
// overlay stays: both StorageClasses work), plus what
// deploy/examples/csi-gluster adds for Gluster: the controller maps
// HOST:VOLUME to its FUSE mount of the volume (hostPath) and runs the
// gluster CLI against glusterd's socket (executor local, hostPath), and the
// carve-gluster StorageClass names the host and volume. The node plugin
// needs nothing more: it makes the FUSE mount of each claim's directory
// itself.
func DeployRealGluster(ctx context.Context, c *cluster.Cluster, n *cluster.RealNode, repo, nfsShare, tag string, g RealGluster) error {
	base := filepath.Join(n.Dir, "overlay")
	if err := RealOverlay(base, repo, nfsShare, tag); err != nil {
		return err
	}
	rendered, err := c.Kubectl(ctx, "kustomize", base)
	if err != nil {
		return err
	}
	// JSON patches address containers by index; the base overlay decides
	// which sidecars precede carve.
	i, err := containerIndex(rendered, "carve-csi-controller", "carve")
	if err != nil {
		return err
	}
	dir := filepath.Join(n.Dir, "overlay-gluster")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// deploy/examples/csi-gluster's class, with this pool's host and volume.
	class, err := os.ReadFile(filepath.Join(repo, "deploy/examples/csi-gluster/storageclass.yaml"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "storageclass.yaml"), class, 0o644); err != nil {
		return err
	}
	k := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../overlay
  - storageclass.yaml
patches:
  - target: {kind: Deployment, name: carve-csi-controller}
    patch: |
      - op: add
        path: /spec/template/spec/containers/%[1]d/args/-
        value: --mount-map=%[2]s:%[3]s=%[5]s
      - op: add
        path: /spec/template/spec/containers/%[1]d/volumeMounts/-
        value: {name: gluster-share, mountPath: %[5]s}
      - op: add
        path: /spec/template/spec/containers/%[1]d/volumeMounts/-
        value: {name: glusterd-socket, mountPath: /var/run/glusterd.socket}
      - op: add
        path: /spec/template/spec/volumes/-
        value: {name: gluster-share, hostPath: {path: %[4]q, type: Directory}}
      - op: add
        path: /spec/template/spec/volumes/-
        value: {name: glusterd-socket, hostPath: {path: /var/run/glusterd.socket, type: Socket}}
  - target: {kind: StorageClass, name: carve-gluster}
    patch: |
      - op: replace
        path: /parameters/servers
        value: %[2]q
      - op: replace
        path: /parameters/volume
        value: %[3]q
`, i, g.Host, g.Volume, g.Mount, GlusterShareInController)
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		return err
	}
	return deployOverlay(ctx, c, n, dir)
}

// containerIndex finds container name in Deployment deployment of a
// rendered multi-document YAML.
func containerIndex(rendered, deployment, name string) (int, error) {
	d := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(rendered), 4096)
	for {
		var dep appsv1.Deployment
		err := d.Decode(&dep)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, err
		}
		if dep.Kind != "Deployment" || dep.Name != deployment {
			continue
		}
		for i, ctr := range dep.Spec.Template.Spec.Containers {
			if ctr.Name == name {
				return i, nil
			}
		}
	}
	return 0, fmt.Errorf("no container %s in Deployment %s", name, deployment)
}
