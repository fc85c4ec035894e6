package csidriver

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"k8s.io/klog/v2"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/kubeview"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/volid"
	"github.com/carve-csi/carve/pkg/volume"
)

// Keys the external-provisioner adds to CreateVolume parameters when run with
// --extra-create-metadata.
const (
	keyPVCName      = "csi.storage.k8s.io/pvc/name"
	keyPVCNamespace = "csi.storage.k8s.io/pvc/namespace"
	keyPVName       = "csi.storage.k8s.io/pv/name"
)

// ControllerServer implements the CSI controller service on pkg/volume.
type ControllerServer struct {
	csi.UnimplementedControllerServer
	d *Driver
}

// ControllerGetCapabilities returns what capabilities.go advertises.
func (s *ControllerServer) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: controllerCapabilities()}, nil
}

// CreateVolume carves (or re-attaches) the directory the StorageClass's
// pathPattern renders for the claim. The request name (pvc-<uid>) is the
// volume's identity: a retry with the same name returns the same volume, and
// one asking for a size the recorded volume cannot satisfy gets AlreadyExists.
func (s *ControllerServer) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if req.GetName() == "" {
		return nil, invalidArg("name is required")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, invalidArg("volume_capabilities are required")
	}
	if err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
		return nil, invalidArg("%v", err)
	}
	src, err := contentSource(req.GetVolumeContentSource())
	if err != nil {
		return nil, err
	}
	if len(req.GetMutableParameters()) > 0 {
		return nil, invalidArg("carve does not support VolumeAttributesClasses (mutable parameters)")
	}
	size, err := requestedSize(req.GetCapacityRange())
	if err != nil {
		return nil, err
	}
	// csi-provisioner shows the message in the claim's event: name the
	// object at fault (CSI is not told the StorageClass's name).
	claim := req.GetParameters()[keyPVCNamespace] + "/" + req.GetParameters()[keyPVCName]
	vreq, err := s.volumeRequest(req, size)
	if err != nil {
		return nil, toStatus(params.Blame(err, claim, ""), noLookup)
	}
	vreq.Source = src
	logger := klog.FromContext(ctx).WithValues("volume", req.GetName())
	ctx = klog.NewContext(ctx, logger)

	release, err := s.d.locks.tryAcquire("name:" + req.GetName())
	if err != nil {
		return nil, toStatus(err, noLookup)
	}
	defer release()
	if vreq.Config.VolumePerClaim() {
		return s.createWholeVolume(ctx, req, vreq, size)
	}
	id, _, err := s.d.svc.Locate(vreq)
	if err != nil {
		return nil, toStatus(params.Blame(err, claim, ""), noLookup)
	}
	releaseID, err := s.d.locks.tryAcquire("id:" + id.String())
	if err != nil {
		return nil, toStatus(err, noLookup)
	}
	defer releaseID()

	res, err := s.d.svc.Create(ctx, vreq)
	if err != nil {
		return nil, toStatus(err, noLookup)
	}
	capacity := size
	if existing := res.CapacityBytes; existing > 0 {
		// This name's volume exists already (a retry): it must fit the request.
		r := req.GetCapacityRange()
		if existing < r.GetRequiredBytes() || (r.GetLimitBytes() > 0 && existing > r.GetLimitBytes()) {
			return nil, toStatus(fmt.Errorf("%w: volume %s exists with %d bytes, the request asks for %d..%d",
				errIncompatible, req.GetName(), existing, r.GetRequiredBytes(), r.GetLimitBytes()), noLookup)
		}
		capacity = existing
	}
	if res.Reattached {
		logger.Info("Re-attached retained data", "message", res.Message)
	}
	logWarnings(ctx, res)
	logger.V(2).Info("Created volume", "volumeID", res.ID.String(), "reattached", res.Reattached, "bytes", capacity)
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId:      res.ID.String(),
		CapacityBytes: capacity,
		VolumeContext: kubeview.VolumeAttributes(res.ID),
		ContentSource: req.GetVolumeContentSource(),
	}}, nil
}

// createWholeVolume gives the claim a Gluster volume of its own (mode
// volume): no path to render, the backend names the volume after the claim
// and keeps its record in the volume's options, which also make a retry
// with the same name return the same volume.
func (s *ControllerServer) createWholeVolume(ctx context.Context, req *csi.CreateVolumeRequest, vreq volume.Request, size int64) (*csi.CreateVolumeResponse, error) {
	logger := klog.FromContext(ctx)
	res, err := s.d.svc.Create(ctx, vreq)
	if err != nil {
		return nil, toStatus(err, noLookup)
	}
	capacity := size
	if res.CapacityBytes > 0 {
		r := req.GetCapacityRange()
		if res.CapacityBytes < r.GetRequiredBytes() || (r.GetLimitBytes() > 0 && res.CapacityBytes > r.GetLimitBytes()) {
			return nil, toStatus(fmt.Errorf("%w: volume %s exists with %d bytes, the request asks for %d..%d",
				errIncompatible, req.GetName(), res.CapacityBytes, r.GetRequiredBytes(), r.GetLimitBytes()), noLookup)
		}
		capacity = res.CapacityBytes
	}
	logWarnings(ctx, res)
	logger.V(2).Info("Created volume", "volumeID", res.ID.String(), "glusterVolume", res.ID.Share, "bytes", capacity)
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId:      res.ID.String(),
		CapacityBytes: capacity,
		VolumeContext: kubeview.VolumeAttributes(res.ID),
	}}, nil
}

// logWarnings logs what the classic provisioner would put in the claim's
// Warning events (e.g. the size is not enforced): CSI has no way to send
// events, so the controller's log is where they go.
func logWarnings(ctx context.Context, res *volume.Result) {
	for _, w := range res.Warnings {
		klog.FromContext(ctx).Info("WARNING: "+w, "volumeID", res.ID.String())
	}
}

// requestedSize is the size to record: the required bytes, else the limit.
func requestedSize(r *csi.CapacityRange) (int64, error) {
	req, lim := r.GetRequiredBytes(), r.GetLimitBytes()
	switch {
	case req < 0 || lim < 0:
		return 0, invalidArg("capacity_range must not be negative")
	case lim > 0 && req > lim:
		return 0, invalidArg("capacity_range: required_bytes %d exceeds limit_bytes %d", req, lim)
	case req > 0:
		return req, nil
	}
	return lim, nil
}

// volumeRequest turns a CreateVolume into the core's request: the same
// parameters as the classic provisioner, with the claim's name and namespace
// from --extra-create-metadata. ${pv.metadata.name} is the CSI name
// (pvc-<uid>, the PV's name) unless the external-provisioner says otherwise.
func (s *ControllerServer) volumeRequest(req *csi.CreateVolumeRequest, size int64) (volume.Request, error) {
	p := req.GetParameters()
	cfg, err := params.Parse(p)
	if err != nil {
		return volume.Request{}, err
	}
	pv := p[keyPVName]
	if pv == "" {
		pv = req.GetName()
	}
	if cfg.VolumePerClaim() {
		// No path: the volume is named <prefix>_<namespace>_<claim>_<uid>,
		// with the UID taken from the CSI name (pvc-<uid>). Without
		// --extra-create-metadata namespace and claim are empty there.
		return volume.Request{
			Name:      req.GetName(),
			Namespace: p[keyPVCNamespace],
			Claim:     p[keyPVCName],
			Config:    cfg,
			SizeBytes: size,
			ClaimUID:  claimUID(req.GetName()),
			Vars:      params.Vars{Namespace: p[keyPVCNamespace], Name: p[keyPVCName], PVName: pv},
		}, nil
	}
	if cfg.PathPattern.UsesMetadata() {
		return volume.Request{}, fmt.Errorf("%w: %s=%q uses claim labels or annotations, which CSI does not pass to drivers; "+
			"use ${pvc.metadata.namespace}, ${pvc.metadata.name} and ${pv.metadata.name} only, or the classic provisioner",
			backend.ErrInvalid, params.PathPattern, cfg.PathPattern)
	}
	ns, claim := p[keyPVCNamespace], p[keyPVCName]
	if cfg.PathPattern.UsesClaim() && (ns == "" || claim == "") {
		return volume.Request{}, fmt.Errorf("%w: %s=%q needs the claim's namespace and name, but the request has no %s and %s: "+
			"run csi-provisioner with --extra-create-metadata", backend.ErrInvalid, params.PathPattern, cfg.PathPattern,
			keyPVCNamespace, keyPVCName)
	}
	return volume.Request{
		Name:      req.GetName(),
		Namespace: ns,
		Claim:     claim,
		Config:    cfg,
		SizeBytes: size,
		Vars:      params.Vars{Namespace: ns, Name: claim, PVName: pv},
	}, nil
}

// claimUID is the claim's UID in a CSI name pvc-<uid> (csi-provisioner's
// default prefix), or "" for any other name.
func claimUID(name string) string {
	uid, ok := strings.CutPrefix(name, "pvc-")
	if !ok {
		return ""
	}
	return uid
}

// DeleteVolume applies the onDelete policy recorded in the ID. An ID that
// is not carve's, or a directory already gone, is success (CSI: idempotent).
func (s *ControllerServer) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, invalidArg("volume_id is required")
	}
	logger := klog.FromContext(ctx).WithValues("volumeID", req.GetVolumeId())
	ctx = klog.NewContext(ctx, logger)
	id, err := volid.Parse(req.GetVolumeId())
	if err != nil {
		logger.Info("Nothing to delete: not a carve volume ID", "err", err)
		return &csi.DeleteVolumeResponse{}, nil
	}
	if _, err := s.d.backendOf(id); err != nil {
		logger.Info("Nothing to delete: backend not enabled here", "backend", id.Backend)
		return &csi.DeleteVolumeResponse{}, nil
	}
	release, err := s.d.locks.tryAcquire("id:" + id.String())
	if err != nil {
		return nil, toStatus(err, lookup)
	}
	defer release()
	name, err := s.d.svc.DeletingName(ctx, id)
	if err == nil {
		var out volume.Outcome
		out, err = s.d.svc.Delete(ctx, name, id)
		if err == nil {
			logger.V(2).Info("Deleted volume", "action", out.Action, "where", out.Where)
			return &csi.DeleteVolumeResponse{}, nil
		}
	}
	if id.Backend == params.BackendGluster && errors.Is(err, backend.ErrNotFound) {
		// glusterd says the Gluster volume does not exist: the volume (a
		// directory in it, or the whole volume) is gone with it. NFS gets
		// no such shortcut: a missing export may be a misconfigured server.
		logger.Info("Nothing to delete: the volume's share does not exist", "err", err)
		return &csi.DeleteVolumeResponse{}, nil
	}
	return nil, toStatus(err, lookup)
}

// ValidateVolumeCapabilities confirms filesystem capabilities of an existing
// volume.
func (s *ControllerServer) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, invalidArg("volume_id is required")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, invalidArg("volume_capabilities are required")
	}
	id, err := volid.Parse(req.GetVolumeId())
	if err != nil {
		return nil, toStatus(err, lookup)
	}
	if err := s.exists(ctx, id); err != nil {
		return nil, toStatus(err, lookup)
	}
	if err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
	}
	if len(req.GetParameters()) > 0 {
		if _, err := params.Parse(req.GetParameters()); err != nil {
			return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
		}
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
	}}, nil
}

// exists: the volume's directory is on its share.
func (s *ControllerServer) exists(ctx context.Context, id volid.ID) error {
	b, err := s.d.backendOf(id)
	if err != nil {
		return err
	}
	if len(id.Dir) == 0 {
		// A whole Gluster volume: the share is the volume, and its root
		// belongs to the claim (no identity file is written there).
		_, err := b.Share(ctx, id.Servers, id.Share)
		return err
	}
	share, err := s.d.svc.Share(ctx, id)
	if err != nil {
		return err
	}
	_, err = share.Lookup(id.Dir)
	return err
}

// GetCapacity reports the free space of the StorageClass's share (statfs).
// Without parameters there is no share to ask, so it reports 0.
func (s *ControllerServer) GetCapacity(ctx context.Context, req *csi.GetCapacityRequest) (*csi.GetCapacityResponse, error) {
	if err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
		return &csi.GetCapacityResponse{}, nil
	}
	if len(req.GetParameters()) == 0 {
		return &csi.GetCapacityResponse{}, nil
	}
	cfg, err := params.Parse(req.GetParameters())
	if err != nil {
		return nil, toStatus(err, noLookup)
	}
	b, err := s.d.svc.Backend(cfg.Backend)
	if err != nil {
		return nil, toStatus(err, noLookup)
	}
	share, err := b.Share(ctx, b.Servers(cfg), cfg.Share)
	if err != nil {
		return nil, toStatus(err, noLookup)
	}
	u, err := share.Statfs(nil)
	if err != nil {
		return nil, toStatus(fmt.Errorf("%w: %w", backend.ErrUnavailable, err), noLookup)
	}
	return &csi.GetCapacityResponse{AvailableCapacity: u.AvailableBytes}, nil
}

// ControllerExpandVolume records the new size and, where the backend enforces
// sizes (backend.Limiter), raises the limit. Nothing changes on nodes.
func (s *ControllerServer) ControllerExpandVolume(ctx context.Context, req *csi.ControllerExpandVolumeRequest) (*csi.ControllerExpandVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, invalidArg("volume_id is required")
	}
	if req.GetCapacityRange() == nil {
		return nil, invalidArg("capacity_range is required")
	}
	size, err := requestedSize(req.GetCapacityRange())
	if err != nil {
		return nil, err
	}
	id, err := volid.Parse(req.GetVolumeId())
	if err != nil {
		return nil, toStatus(err, lookup)
	}
	if _, err := s.d.backendOf(id); err != nil {
		return nil, toStatus(err, lookup)
	}
	release, err := s.d.locks.tryAcquire("id:" + id.String())
	if err != nil {
		return nil, toStatus(err, lookup)
	}
	defer release()
	got, err := s.d.svc.Expand(ctx, id, size)
	if err != nil {
		return nil, toStatus(err, lookup)
	}
	if lim := req.GetCapacityRange().GetLimitBytes(); lim > 0 && got > lim {
		return nil, toStatus(fmt.Errorf("%w: volume already has %d bytes, more than limit_bytes %d", backend.ErrInvalid, got, lim), lookup)
	}
	return &csi.ControllerExpandVolumeResponse{CapacityBytes: got, NodeExpansionRequired: false}, nil
}
