package csidriver

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/klog/v2"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/volid"
	"github.com/carve-csi/carve/pkg/volume"
)

// contentSource turns a CreateVolume's data source into the core's. A
// source ID that cannot be carve's names no existing source: NotFound, as
// the spec asks for a missing source.
func contentSource(cs *csi.VolumeContentSource) (*volume.Source, error) {
	switch {
	case cs == nil:
		return nil, nil
	case cs.GetSnapshot() != nil:
		id, err := volid.ParseSnapshot(cs.GetSnapshot().GetSnapshotId())
		if err != nil {
			return nil, toStatus(fmt.Errorf("source snapshot: %w", err), lookup)
		}
		return &volume.Source{Snapshot: &id}, nil
	case cs.GetVolume() != nil:
		id, err := volid.Parse(cs.GetVolume().GetVolumeId())
		if err != nil {
			return nil, toStatus(fmt.Errorf("source volume: %w", err), lookup)
		}
		return &volume.Source{Volume: &id}, nil
	}
	return nil, invalidArg("volume_content_source names neither a snapshot nor a volume")
}

// checkSnapshotParameters accepts only the keys csi-snapshotter adds itself
// (--extra-create-metadata): carve's snapshots take no class parameters, and
// one silently ignored would mislead.
func checkSnapshotParameters(p map[string]string) error {
	var bad []string
	for k := range p {
		if !strings.HasPrefix(k, "csi.storage.k8s.io/") {
			bad = append(bad, k)
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return invalidArg("carve's snapshots take no VolumeSnapshotClass parameters, got %s", strings.Join(bad, ", "))
	}
	return nil
}

func snapshotOf(s *volume.Snapshot) *csi.Snapshot {
	return &csi.Snapshot{
		SnapshotId:     s.ID.String(),
		SourceVolumeId: s.SourceID,
		SizeBytes:      s.SizeBytes,
		CreationTime:   timestamppb.New(s.Created),
		// A snapshot entry exists only once its copy is complete.
		ReadyToUse: true,
	}
}

// CreateSnapshot copies the source volume into its share's snapshot area.
// The name is the snapshot's identity: a retry returns the same snapshot, the
// same name for another volume is AlreadyExists. The copy runs within the
// call (csi-snapshotter retries on its timeout, and the name lock turns a
// retry during the copy into Aborted).
func (s *ControllerServer) CreateSnapshot(ctx context.Context, req *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	if req.GetName() == "" {
		return nil, invalidArg("name is required")
	}
	if req.GetSourceVolumeId() == "" {
		return nil, invalidArg("source_volume_id is required")
	}
	if err := checkSnapshotParameters(req.GetParameters()); err != nil {
		return nil, err
	}
	src, err := volid.Parse(req.GetSourceVolumeId())
	if err != nil {
		return nil, toStatus(fmt.Errorf("source volume: %w", err), lookup)
	}
	if _, err := s.d.backendOf(src); err != nil {
		return nil, toStatus(err, lookup)
	}
	logger := klog.FromContext(ctx).WithValues("snapshot", req.GetName(), "sourceVolumeID", req.GetSourceVolumeId())
	ctx = klog.NewContext(ctx, logger)
	release, err := s.d.locks.tryAcquire("snapshot:" + req.GetName())
	if err != nil {
		return nil, toStatus(err, noLookup)
	}
	defer release()
	snap, err := s.d.svc.CreateSnapshot(ctx, req.GetName(), src)
	if err != nil {
		return nil, toStatus(err, lookup)
	}
	return &csi.CreateSnapshotResponse{Snapshot: snapshotOf(snap)}, nil
}

// DeleteSnapshot removes the snapshot's copy. An ID that is not carve's, or
// a snapshot already gone, is success (CSI: idempotent).
func (s *ControllerServer) DeleteSnapshot(ctx context.Context, req *csi.DeleteSnapshotRequest) (*csi.DeleteSnapshotResponse, error) {
	if req.GetSnapshotId() == "" {
		return nil, invalidArg("snapshot_id is required")
	}
	logger := klog.FromContext(ctx).WithValues("snapshotID", req.GetSnapshotId())
	ctx = klog.NewContext(ctx, logger)
	id, err := volid.ParseSnapshot(req.GetSnapshotId())
	if err != nil {
		logger.Info("Nothing to delete: not a carve snapshot ID", "err", err)
		return &csi.DeleteSnapshotResponse{}, nil
	}
	if _, err := s.d.svc.Backend(id.Backend); err != nil {
		logger.Info("Nothing to delete: backend not enabled here", "backend", id.Backend)
		return &csi.DeleteSnapshotResponse{}, nil
	}
	release, err := s.d.locks.tryAcquire("snapid:" + id.String())
	if err != nil {
		return nil, toStatus(err, lookup)
	}
	defer release()
	if err := s.d.svc.DeleteSnapshot(ctx, id); err != nil {
		if id.Backend == params.BackendGluster && errors.Is(err, backend.ErrNotFound) {
			logger.Info("Nothing to delete: the snapshot's Gluster volume does not exist", "err", err)
			return &csi.DeleteSnapshotResponse{}, nil
		}
		return nil, toStatus(err, lookup)
	}
	logger.V(2).Info("Deleted snapshot")
	return &csi.DeleteSnapshotResponse{}, nil
}

// ListSnapshots lists carve's snapshots without cluster state: by ID (one
// share), by source volume (its share), or all on every share this
// controller knows. Pages are in snapshot ID order; a next_token is the
// last ID returned, so a page never repeats or skips an entry when
// snapshots come and go between calls.
func (s *ControllerServer) ListSnapshots(ctx context.Context, req *csi.ListSnapshotsRequest) (*csi.ListSnapshotsResponse, error) {
	if req.GetMaxEntries() < 0 {
		return nil, invalidArg("max_entries must not be negative")
	}
	after := req.GetStartingToken()
	if after != "" {
		if _, err := volid.ParseSnapshot(after); err != nil {
			return nil, status.Errorf(codes.Aborted, "starting_token %q is not one carve handed out", after)
		}
	}
	var (
		snaps []volume.Snapshot
		err   error
	)
	switch {
	case req.GetSnapshotId() != "":
		id, perr := volid.ParseSnapshot(req.GetSnapshotId())
		if perr != nil {
			return &csi.ListSnapshotsResponse{}, nil
		}
		if _, berr := s.d.svc.Backend(id.Backend); berr != nil {
			return &csi.ListSnapshotsResponse{}, nil
		}
		snap, gerr := s.d.svc.GetSnapshot(ctx, id)
		if errors.Is(gerr, backend.ErrNotFound) {
			return &csi.ListSnapshotsResponse{}, nil
		}
		if gerr != nil {
			return nil, toStatus(gerr, lookup)
		}
		if src := req.GetSourceVolumeId(); src != "" && src != snap.SourceID {
			return &csi.ListSnapshotsResponse{}, nil
		}
		snaps = []volume.Snapshot{*snap}
	case req.GetSourceVolumeId() != "":
		src, perr := volid.Parse(req.GetSourceVolumeId())
		if perr != nil {
			return &csi.ListSnapshotsResponse{}, nil
		}
		snaps, err = s.d.svc.Snapshots(ctx, &src)
	default:
		snaps, err = s.d.svc.Snapshots(ctx, nil)
	}
	if err != nil {
		return nil, toStatus(err, noLookup)
	}
	resp := &csi.ListSnapshotsResponse{}
	for _, snap := range snaps {
		if after != "" && snap.ID.String() <= after {
			continue
		}
		if max := int(req.GetMaxEntries()); max > 0 && len(resp.Entries) == max {
			resp.NextToken = resp.Entries[len(resp.Entries)-1].Snapshot.SnapshotId
			break
		}
		resp.Entries = append(resp.Entries, &csi.ListSnapshotsResponse_Entry{Snapshot: snapshotOf(&snap)})
	}
	return resp, nil
}
