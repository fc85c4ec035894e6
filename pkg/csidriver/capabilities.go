package csidriver

import (
	"fmt"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// What carve advertises. Not advertised, on purpose:
//   - LIST_VOLUMES: a volume ID is a path plus a policy, and volumes deleted
//     with onDelete=retain keep their directory and record; listing the share
//     would report volumes Kubernetes has deleted. Nothing in Kubernetes needs it.
//   - PUBLISH_UNPUBLISH_VOLUME, STAGE_UNSTAGE_VOLUME: a shared filesystem has
//     nothing to attach, and each publish is one mount (bind or NFS).
//   - VOLUME_ACCESSIBILITY_CONSTRAINTS: every node reaches every share.
//   - MODIFY_VOLUME: not implemented.
//
// Snapshots and clones (CREATE_DELETE_SNAPSHOT, LIST_SNAPSHOTS, CLONE_VOLUME)
// are advertised although one kind of class cannot have them: a Gluster
// volume per claim (mode volume). Capabilities are per driver, not per
// class, and most classes can; those volumes are refused per request with
// InvalidArgument and a message saying why (docs/snapshots.md).
var (
	controllerCaps = []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		csi.ControllerServiceCapability_RPC_GET_CAPACITY,
		csi.ControllerServiceCapability_RPC_EXPAND_VOLUME,
		csi.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
		csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS,
		csi.ControllerServiceCapability_RPC_CLONE_VOLUME,
	}
	nodeCaps = []csi.NodeServiceCapability_RPC_Type{
		csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
		csi.NodeServiceCapability_RPC_VOLUME_CONDITION,
		csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	}
)

func controllerCapabilities() []*csi.ControllerServiceCapability {
	out := make([]*csi.ControllerServiceCapability, 0, len(controllerCaps))
	for _, c := range controllerCaps {
		out = append(out, &csi.ControllerServiceCapability{
			Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{Type: c}},
		})
	}
	return out
}

func nodeCapabilities() []*csi.NodeServiceCapability {
	out := make([]*csi.NodeServiceCapability, 0, len(nodeCaps))
	for _, c := range nodeCaps {
		out = append(out, &csi.NodeServiceCapability{
			Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: c}},
		})
	}
	return out
}

// checkCapabilities accepts filesystem volumes in every access mode: NFS and
// GlusterFS are shared filesystems. A requested fsType is ignored because the
// backend decides the filesystem (external-provisioner may pass its default).
func checkCapabilities(caps []*csi.VolumeCapability) error {
	for _, c := range caps {
		if err := checkCapability(c); err != nil {
			return err
		}
	}
	return nil
}

func checkCapability(c *csi.VolumeCapability) error {
	if c == nil {
		return fmt.Errorf("empty volume capability")
	}
	if c.GetBlock() != nil {
		return fmt.Errorf("block volumes are not supported: NFS and GlusterFS volumes are filesystems (use volumeMode Filesystem)")
	}
	if c.GetMount() == nil {
		return fmt.Errorf("volume capability needs access type mount")
	}
	switch m := c.GetAccessMode().GetMode(); m {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY,
		csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY,
		csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER,
		csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER:
	default:
		return fmt.Errorf("unsupported access mode %v", m)
	}
	return nil
}

// readOnlyMode: access modes that promise no writer.
func readOnlyMode(c *csi.VolumeCapability) bool {
	switch c.GetAccessMode().GetMode() {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY, csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY:
		return true
	}
	return false
}
