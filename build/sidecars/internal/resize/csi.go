package resize

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	v1 "k8s.io/api/core/v1"
)

// Expander calls a driver's ControllerExpandVolume.
type Expander interface {
	Expand(ctx context.Context, volumeID string, requiredBytes int64, secrets map[string]string, vc *csi.VolumeCapability) (capacity int64, nodeExpansionRequired bool, err error)
}

// CSIExpander is the Expander of a driver behind a gRPC connection.
type CSIExpander struct {
	client csi.ControllerClient
	// SingleNodeMultiWriter: the driver advertises SINGLE_NODE_MULTI_WRITER,
	// so ReadWriteOnce maps to SINGLE_NODE_MULTI_WRITER as csi-resizer does.
	SingleNodeMultiWriter bool
}

// NewCSIExpander checks that the driver at conn has the controller
// capability EXPAND_VOLUME.
func NewCSIExpander(ctx context.Context, conn grpc.ClientConnInterface) (*CSIExpander, error) {
	client := csi.NewControllerClient(conn)
	resp, err := client.ControllerGetCapabilities(ctx, &csi.ControllerGetCapabilitiesRequest{})
	if err != nil {
		return nil, fmt.Errorf("ControllerGetCapabilities: %w", err)
	}
	var caps []csi.ControllerServiceCapability_RPC_Type
	for _, c := range resp.GetCapabilities() {
		caps = append(caps, c.GetRpc().GetType())
	}
	if !slices.Contains(caps, csi.ControllerServiceCapability_RPC_EXPAND_VOLUME) {
		return nil, errors.New("the driver does not have the controller capability EXPAND_VOLUME: nothing to resize")
	}
	return &CSIExpander{client: client,
		SingleNodeMultiWriter: slices.Contains(caps, csi.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER)}, nil
}

// Expand calls ControllerExpandVolume with capacity_range.required_bytes.
func (e *CSIExpander) Expand(ctx context.Context, volumeID string, requiredBytes int64, secrets map[string]string, vc *csi.VolumeCapability) (int64, bool, error) {
	resp, err := e.client.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{
		VolumeId:         volumeID,
		CapacityRange:    &csi.CapacityRange{RequiredBytes: requiredBytes},
		Secrets:          secrets,
		VolumeCapability: vc,
	})
	if err != nil {
		return 0, false, err
	}
	return resp.GetCapacityBytes(), resp.GetNodeExpansionRequired(), nil
}

// VolumeCapability is the capability of a PV as csi-resizer sends it: block
// or mount (with the PV's fsType), and the access mode of its access modes.
func VolumeCapability(pv *v1.PersistentVolume, singleNodeMultiWriter bool) (*csi.VolumeCapability, error) {
	vc := &csi.VolumeCapability{}
	if pv.Spec.VolumeMode != nil && *pv.Spec.VolumeMode == v1.PersistentVolumeBlock {
		vc.AccessType = &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
	} else {
		fsType := ""
		if pv.Spec.CSI != nil {
			fsType = pv.Spec.CSI.FSType
		}
		vc.AccessType = &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fsType}}
	}
	mode, err := accessMode(pv.Spec.AccessModes, singleNodeMultiWriter)
	if err != nil {
		return nil, fmt.Errorf("volume %s: %w", pv.Name, err)
	}
	vc.AccessMode = &csi.VolumeCapability_AccessMode{Mode: mode}
	return vc, nil
}

// accessMode maps Kubernetes access modes to one CSI mode, as
// csi-lib-utils' accessmodes.ToCSIAccessMode does.
func accessMode(modes []v1.PersistentVolumeAccessMode, singleNodeMultiWriter bool) (csi.VolumeCapability_AccessMode_Mode, error) {
	has := func(m v1.PersistentVolumeAccessMode) bool { return slices.Contains(modes, m) }
	switch {
	case has(v1.ReadWriteOncePod):
		if len(modes) > 1 {
			return 0, errors.New("ReadWriteOncePod may not be combined with other access modes")
		}
		if singleNodeMultiWriter {
			return csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER, nil
		}
		return csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, nil
	case has(v1.ReadWriteMany):
		return csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, nil
	case has(v1.ReadOnlyMany) && has(v1.ReadWriteOnce):
		return 0, errors.New("ReadOnlyMany with ReadWriteOnce has no CSI access mode")
	case has(v1.ReadOnlyMany):
		return csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY, nil
	case has(v1.ReadWriteOnce):
		if singleNodeMultiWriter {
			return csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER, nil
		}
		return csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, nil
	}
	return 0, fmt.Errorf("no access mode among %v", modes)
}

// finalError: the call failed and is surely not running in the driver
// (csi-resizer's util.IsFinalError).
func finalError(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	switch st.Code() {
	case codes.Canceled, codes.DeadlineExceeded, codes.Unavailable, codes.ResourceExhausted, codes.Aborted:
		return false
	}
	return true
}

// infeasibleError: the driver refuses this size or volume for good; only a
// new request is tried (csi-resizer's util.IsInfeasibleError).
func infeasibleError(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	switch st.Code() {
	case codes.InvalidArgument, codes.OutOfRange, codes.NotFound:
		return true
	}
	return false
}

// driverMessage is the message of a gRPC error, the error's text otherwise.
func driverMessage(err error) string {
	if st, ok := status.FromError(err); ok {
		return fmt.Sprintf("%s: %s", st.Code(), st.Message())
	}
	return err.Error()
}
