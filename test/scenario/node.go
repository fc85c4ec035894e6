package scenario

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	mount "k8s.io/mount-utils"

	"github.com/carve-csi/carve/pkg/volid"
	"github.com/carve-csi/carve/test/cluster"
)

// Driver is the CSI driver name the story's CSI PVs must name.
const Driver = "carve.csi.dev"

// Node runs cmd/csi-driver's node service (--mode node) as its own process
// and plays the kubelet on one node: when a replica is Ready it calls
// NodePublishVolume on the socket with the PV's volume handle and a pod
// target path, and NodeUnpublishVolume when the pod is gone. kwok runs no
// containers, so nothing else mounts; the story checks through each target
// that the data there is the data on the share, both ways, and that what
// earlier pods wrote survives unpublish and republish at another target.
type Node struct {
	// NodeID is --nodeid; kwok-node-0 if empty.
	NodeID string
	// MountMap is the node's --mount-map SERVER:SHARE=LOCALPATH (bind
	// mounts from a node-level mount); empty: the backend's own mount
	// (mount -t nfs, mount -t glusterfs).
	MountMap string
	// FSType, when set, is the file system type every target must show in
	// the mount table (fuse.glusterfs: a bind from a FUSE mount shows it too).
	FSType string

	proc   *cluster.Process
	dir    string
	conn   *grpc.ClientConn
	client csi.NodeClient
	logf   func(string, ...any)
	share  string
	// published maps a pod UID to its publish; written maps a claim to the
	// files written through its targets (name → content).
	published map[string]publish
	written   map[string]map[string]string
	// Publishes and Unpublishes count the calls that succeeded.
	Publishes, Unpublishes int
}

type publish struct {
	pod, claim, volumeID, target, shareDir string
	dir                                    string // the volume's directory on the share
}

// start builds cmd/csi-driver and runs its node service.
func (n *Node) start(ctx context.Context, e *Env) error {
	if n.NodeID == "" {
		n.NodeID = "kwok-node-0"
	}
	n.logf, n.share = e.logf, e.ShareDir
	n.published, n.written = map[string]publish{}, map[string]map[string]string{}
	n.dir = filepath.Join(e.Cluster.Dir, "kubelet")
	if err := os.MkdirAll(n.dir, 0o750); err != nil {
		return err
	}
	bin := filepath.Join(e.Cluster.Dir, "carve-csi-driver")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/csi-driver")
	build.Dir = e.Repo
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build cmd/csi-driver: %w\n%s", err, out)
	}
	sock := filepath.Join(n.dir, "csi.sock")
	args := []string{bin, "--mode=node", "--nodeid=" + n.NodeID, "--endpoint=unix://" + sock, "--v=4"}
	if n.MountMap != "" {
		args = append(args, "--mount-map="+n.MountMap)
	}
	p, err := e.Cluster.StartProcess("carve-csi-node", args, nil)
	if err != nil {
		return err
	}
	n.proc = p
	n.conn, err = grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	n.client = csi.NewNodeClient(n.conn)
	how := "the backend's own mount"
	if n.MountMap != "" {
		how = "bind mounts from --mount-map " + n.MountMap
	}
	e.logf("CSI node service running as node %s (%s), log %s", n.NodeID, how, p.LogPath)
	return e.poll(ctx, "CSI node service answers NodeGetInfo", time.Minute, func(ctx context.Context) (bool, error) {
		select {
		case <-p.Done():
			return false, fmt.Errorf("csi-driver exited: %v (log %s)", p.Err(), p.LogPath)
		default:
		}
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		info, err := n.client.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
		if err != nil {
			return false, nil
		}
		if info.GetNodeId() != n.NodeID {
			return false, fmt.Errorf("NodeGetInfo = %q, want %q", info.GetNodeId(), n.NodeID)
		}
		return true, nil
	})
}

// syncNode brings the node in line with the replicas, as the kubelet's
// volume manager would: volumes of pods that are gone are checked and
// unpublished first, then each Ready pod's volume is published and checked.
func (e *Env) syncNode(ctx context.Context) error {
	n := e.Node
	if n == nil {
		return nil
	}
	pods, err := e.client.CoreV1().Pods(e.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=mongo"})
	if err != nil {
		return err
	}
	ready := map[string]*v1.Pod{}
	for i := range pods.Items {
		if p := &pods.Items[i]; podReady(p) {
			ready[string(p.UID)] = p
		}
	}
	for uid := range n.published {
		if ready[uid] == nil {
			if err := n.unpublish(ctx, uid); err != nil {
				return err
			}
		}
	}
	for _, uid := range slices.Sorted(maps.Keys(ready)) {
		if _, ok := n.published[uid]; ok {
			continue
		}
		if err := e.publish(ctx, ready[uid]); err != nil {
			return err
		}
	}
	return nil
}

// publish publishes pod's data volume at <dir>/pods/<pod>-<uid>/volumes/data
// (one target per pod incarnation, as the kubelet's pods/<uid>/volumes/...)
// with what the kubelet passes: the PV's handle, attributes and mount options.
func (e *Env) publish(ctx context.Context, pod *v1.Pod) error {
	n := e.Node
	claimName := podClaim(pod)
	pvc, err := e.client.CoreV1().PersistentVolumeClaims(e.Namespace).Get(ctx, claimName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	pv, err := e.client.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != Driver {
		return fmt.Errorf("PV %s of %s is not a %s CSI PV: %+v", pv.Name, claimName, Driver, pv.Spec.PersistentVolumeSource)
	}
	id, err := volid.Parse(pv.Spec.CSI.VolumeHandle)
	if err != nil {
		return fmt.Errorf("PV %s: %w", pv.Name, err)
	}
	p := publish{
		pod: pod.Name, claim: claimName, volumeID: pv.Spec.CSI.VolumeHandle,
		target:   filepath.Join(n.dir, "pods", pod.Name+"-"+string(pod.UID)[:8], "volumes", template),
		shareDir: filepath.Join(n.share, filepath.FromSlash(id.DirPath())),
		dir:      id.DirPath(),
	}
	mode := csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
	if slices.Contains(pv.Spec.AccessModes, v1.ReadWriteMany) {
		mode = csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER
	}
	start := time.Now()
	_, err = n.client.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
		VolumeId:      p.volumeID,
		TargetPath:    p.target,
		VolumeContext: pv.Spec.CSI.VolumeAttributes,
		VolumeCapability: &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{
				FsType: pv.Spec.CSI.FSType, MountFlags: pv.Spec.MountOptions,
			}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
		},
	})
	if err != nil {
		return fmt.Errorf("NodePublishVolume %s (%s) at %s: %w", claimName, p.volumeID, p.target, err)
	}
	n.Publishes++
	n.published[string(pod.UID)] = p
	took := time.Since(start)
	if err := n.check(p, "published"); err != nil {
		return err
	}
	// Share to target: the marker the story wrote on the share.
	markerSeen := "no marker yet"
	if want, err := os.ReadFile(filepath.Join(p.shareDir, "marker")); err == nil {
		if got, err := os.ReadFile(filepath.Join(p.target, "marker")); err != nil || !bytes.Equal(got, want) {
			return fmt.Errorf("%s: marker through %s = %q, %v; on the share %q", claimName, p.target, got, err, want)
		}
		markerSeen = "marker there"
	}
	// Target to share: a file written through the target.
	name := "written-by-" + pod.Name + "-" + string(pod.UID)[:8]
	content := fmt.Sprintf("%s %s %s\n", pod.Name, pod.UID, p.volumeID)
	if err := os.WriteFile(filepath.Join(p.target, name), []byte(content), 0o644); err != nil {
		return fmt.Errorf("%s: write through the target: %w", claimName, err)
	}
	if got, err := os.ReadFile(filepath.Join(p.shareDir, name)); err != nil || string(got) != content {
		return fmt.Errorf("%s: %s written through %s is %q on the share (%v), want %q", claimName, name, p.target, got, err, content)
	}
	if n.written[claimName] == nil {
		n.written[claimName] = map[string]string{}
	}
	n.written[claimName][name] = content
	n.logf("node: published %s for %s at %s in %s; %s, %d file(s) of earlier pods there, wrote %s",
		claimName, pod.Name, strings.TrimPrefix(p.target, n.dir+"/"), took.Round(time.Millisecond), markerSeen, len(n.written[claimName])-1, name)
	return nil
}

// check verifies that the target is a mount point (of type FSType; without
// MountMap, of the volume's own directory) and shows every file written
// through the claim's targets so far, as on the share.
func (n *Node) check(p publish, when string) error {
	if ok, err := isMountPoint(p.target); err != nil || !ok {
		return fmt.Errorf("%s %s: %s is not a mount point (%v)", when, p.claim, p.target, err)
	}
	if n.FSType != "" || n.MountMap == "" {
		mps, err := mount.New("").List()
		if err != nil {
			return err
		}
		i := slices.IndexFunc(mps, func(mp mount.MountPoint) bool { return mp.Path == p.target })
		if i < 0 {
			return fmt.Errorf("%s %s: %s is not in the mount table", when, p.claim, p.target)
		}
		if mp := mps[i]; (n.FSType != "" && mp.Type != n.FSType) || (n.MountMap == "" && !strings.HasSuffix(mp.Device, "/"+p.dir)) {
			return fmt.Errorf("%s %s: %s holds %s of type %s, want type %q (if set) and, for the node's own mount, a source ending in /%s", when, p.claim, p.target, mp.Device, mp.Type, n.FSType, p.dir)
		}
	}
	for name, content := range n.written[p.claim] {
		for _, dir := range []string{p.target, p.shareDir} {
			if got, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(got) != content {
				return fmt.Errorf("%s %s: %s in %s = %q, %v; want %q", when, p.claim, name, dir, got, err, content)
			}
		}
	}
	return nil
}

// unpublish checks the data is still at the pod's target, unpublishes it and
// checks the target is gone and the data stays on the share.
func (n *Node) unpublish(ctx context.Context, uid string) error {
	p := n.published[uid]
	if err := n.check(p, "before unpublishing"); err != nil {
		return err
	}
	if _, err := n.client.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: p.volumeID, TargetPath: p.target}); err != nil {
		return fmt.Errorf("NodeUnpublishVolume %s at %s: %w", p.claim, p.target, err)
	}
	n.Unpublishes++
	delete(n.published, uid)
	if ok, _ := isMountPoint(p.target); ok {
		return fmt.Errorf("%s: %s still mounted after NodeUnpublishVolume", p.claim, p.target)
	}
	if _, err := os.Stat(p.target); !os.IsNotExist(err) {
		return fmt.Errorf("%s: target %s not removed by NodeUnpublishVolume (%v)", p.claim, p.target, err)
	}
	for name, content := range n.written[p.claim] {
		if got, err := os.ReadFile(filepath.Join(p.shareDir, name)); err != nil || string(got) != content {
			return fmt.Errorf("%s after unpublishing: %s on the share = %q, %v; want %q", p.claim, name, got, err, content)
		}
	}
	n.logf("node: unpublished %s of %s; %d file(s) written through targets kept on the share", p.claim, p.pod, len(n.written[p.claim]))
	return nil
}

// unpublishAll unpublishes every published volume (the story's end).
func (n *Node) unpublishAll(ctx context.Context) error {
	for uid := range n.published {
		if err := n.unpublish(ctx, uid); err != nil {
			return err
		}
	}
	n.logf("node: %d publishes, %d unpublishes, %d claims with data written through targets", n.Publishes, n.Unpublishes, len(n.written))
	return nil
}

// isMountPoint reports whether path is a mount point (a bind mount too).
func isMountPoint(path string) (bool, error) {
	return mount.New("").IsMountPoint(path)
}

// Cleanup detaches whatever is still published (a story that failed halfway)
// so that removing the cluster's directory can never reach into a share.
func (n *Node) Cleanup() {
	for uid, p := range n.published {
		if ok, _ := isMountPoint(p.target); ok {
			if err := syscall.Unmount(p.target, syscall.MNT_DETACH); err != nil {
				n.logf("node: detach %s: %v", p.target, err)
			}
		}
		delete(n.published, uid)
	}
	if n.conn != nil {
		_ = n.conn.Close()
	}
}
