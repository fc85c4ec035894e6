//go:build e2e

// Package e2e runs carve's StatefulSet story on a real local control plane
// with a real NFS server or a real glusterd: `make e2e`.
package e2e

import (
	"context"
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/carve-csi/carve/internal/testenv/ganesha"
	"github.com/carve-csi/carve/internal/testenv/glusterd"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/volid"
	"github.com/carve-csi/carve/test/cluster"
	"github.com/carve-csi/carve/test/scenario"
)

// TestStatefulSetStory: the classic provisioner, in-tree NFS PVs.
func TestStatefulSetStory(t *testing.T) {
	share, nfs := startNFS(t)
	runStory(t, &scenario.Env{NFS: nfs, ShareDir: share})
}

// TestStatefulSetStoryCSI (issue #4): the same story with `volumeType: csi`
// on NFS. The classic provisioner writes CSI PVs for carve.csi.dev; the CSI
// node service, run as its own process, publishes each replica's volume at a
// pod target path through its socket, as the kubelet would, and the data
// written there is the data on the share, through scale-down, pod and
// StatefulSet deletion and re-attach.
func TestStatefulSetStoryCSI(t *testing.T) {
	share, nfs := startNFS(t)
	runStory(t, &scenario.Env{
		NFS: nfs, ShareDir: share,
		ClassParams: map[string]string{"volumeType": "csi"},
		// The node has the share mounted once (there is no kernel NFS
		// client here: the export directory stands in for that mount) and
		// bind-mounts each volume from it.
		Node: &scenario.Node{MountMap: nfs.Server() + ":" + nfs.Export() + "=" + share},
	})
}

// glusterNodeDirect picks how the Gluster story's node service mounts: true,
// the node's own `mount -t glusterfs SERVER:/VOLUME/DIR` per volume; false,
// bind mounts from a node-level FUSE mount of the volume (--mount-map).
const glusterNodeDirect = true

// TestStatefulSetStoryGluster (issues #5 and #6): the story on a real
// glusterd, with the example's gluster overlay (mode subdir, quota gluster)
// pointed at a 1-brick volume with quota enabled. The classic provisioner
// carves the claims' directories on its FUSE mount of the volume, claims
// are Bound to CSI PVs, each has a quota limit of its size, and the node
// service publishes each one with a real FUSE mount; the data written through
// a target survives unpublish, republish at another target path, scale-down
// and StatefulSet deletion.
func TestStatefulSetStoryGluster(t *testing.T) {
	g := glusterd.Start(t)
	vol := g.CreateVolume(t, "carve-e2e-mongo", 1)
	g.EnableQuota(t, vol.Name)
	share := g.Mount(t, vol.Name) // the provisioner's FUSE mount
	key := g.Host() + ":" + vol.Name
	node := &scenario.Node{FSType: "fuse.glusterfs"}
	if glusterNodeDirect {
		t.Log("node publishes with its own glusterfs mount per volume")
	} else {
		node.MountMap = key + "=" + g.Mount(t, vol.Name) // the node's FUSE mount
		t.Log("node publishes with bind mounts from its own FUSE mount of the volume")
	}
	quotaSeen := map[string]bool{}
	runStory(t, &scenario.Env{
		ShareDir: share,
		ShareKey: key,
		Overlay:  scenario.OverlayGluster,
		// The overlay names carve.csi.dev, the CSI driver's name; here the
		// classic provisioner serves that name (there is no csi-provisioner
		// sidecar in the harness).
		ProvisionerArgs: []string{"--name=" + scenario.Driver},
		ClassParams:     map[string]string{"servers": g.Host(), "volume": vol.Name},
		Node:            node,
		CheckVolume: func(ctx context.Context, pvc *v1.PersistentVolumeClaim, pv *v1.PersistentVolume) error {
			if err := checkQuota(ctx, g, vol.Name, pvc, pv); err != nil {
				return err
			}
			if !quotaSeen[pv.Name] {
				quotaSeen[pv.Name] = true
				t.Logf("quota: %s (PV %s) has a limit of %s", pvc.Name, pv.Name, pvc.Spec.Resources.Requests.Storage())
			}
			return nil
		},
	})
}

// checkQuota: the claim's directory has a Gluster quota limit of its size.
func checkQuota(ctx context.Context, g *glusterd.Cluster, vol string, pvc *v1.PersistentVolumeClaim, pv *v1.PersistentVolume) error {
	if pv.Spec.CSI == nil {
		return fmt.Errorf("not a CSI PV: %+v", pv.Spec.PersistentVolumeSource)
	}
	id, err := volid.Parse(pv.Spec.CSI.VolumeHandle)
	if err != nil {
		return err
	}
	out, err := g.Gluster(ctx, "volume", "quota", vol, "list", "--xml")
	if err != nil {
		return err
	}
	var res struct {
		Limits []struct {
			Path      string `xml:"path"`
			HardLimit int64  `xml:"hard_limit"`
		} `xml:"volQuota>limit"`
	}
	if err := xml.Unmarshal(out, &res); err != nil {
		return fmt.Errorf("parse quota list: %w\n%s", err, out)
	}
	want := pvc.Spec.Resources.Requests.Storage().Value()
	for _, l := range res.Limits {
		if l.Path == "/"+id.DirPath() {
			if l.HardLimit != want {
				return fmt.Errorf("quota limit of %s is %d bytes, want %d", l.Path, l.HardLimit, want)
			}
			return nil
		}
	}
	return fmt.Errorf("no quota limit for /%s in %+v", id.DirPath(), res.Limits)
}

func startNFS(t *testing.T) (string, *ganesha.Server) {
	share := filepath.Join(t.TempDir(), "export")
	if err := os.Mkdir(share, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := dirvol.Declare(share); err != nil {
		t.Fatal(err)
	}
	return share, ganesha.Start(t, share)
}

// runStory completes env with a 3-node control plane and the repository,
// starts the provisioner (and the node service) and runs the story.
func runStory(t *testing.T, env *scenario.Env) {
	env.Cluster = cluster.StartForTest(t, cluster.Options{Nodes: 3})
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	env.Repo, env.Namespace, env.Logf = repo, "mongo", t.Logf
	if env.Node != nil {
		t.Cleanup(env.Node.Cleanup) // before the cluster's directory goes
	}
	ctx := t.Context()
	if err := env.StartProvisioner(ctx); err != nil {
		t.Fatal(err)
	}
	if err := env.Run(ctx); err != nil {
		t.Logf("share:\n%s", scenario.Tree(env.ShareDir))
		t.Error(err)
		dumpPods(t, env.Cluster, env.Namespace)
		t.FailNow()
	}
	t.Logf("share at the end:\n%s", scenario.Tree(env.ShareDir))
}
