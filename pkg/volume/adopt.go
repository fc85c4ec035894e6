package volume

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/klog/v2"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/sharemount"
	"github.com/carve-csi/carve/pkg/volid"
)

// AdoptRequest asks carve to take over existing data that another
// provisioner made: a directory on a share, or (empty ID.Dir) a whole
// Gluster volume.
type AdoptRequest struct {
	ID        volid.ID
	Name      string // the PV that will hold it
	Namespace string // its claim
	Claim     string
	SizeBytes int64
	GID       int64 // the PV's supplemental group; 0: none
	// DryRun checks everything and writes nothing, not even the share's
	// identity file.
	DryRun bool
}

// Adopt records carve's ownership of existing data for a PV, after the same
// checks carve makes before re-attaching a directory: it exists and is a
// plain directory under the share, no other live PV uses it, it neither sits
// inside nor holds another volume's directory, and it is not recorded for
// another volume. It is idempotent for the same req.Name. The data itself is
// never touched: not its owner, its mode nor its content.
func (s *Service) Adopt(ctx context.Context, req AdoptRequest) error {
	if err := req.ID.Validate(); err != nil {
		return fmt.Errorf("%w: %w", backend.ErrInvalid, err)
	}
	b, err := s.Backend(req.ID.Backend)
	if err != nil {
		return err
	}
	if len(req.ID.Dir) == 0 {
		return s.adoptVolume(ctx, b, req)
	}
	id := req.ID
	share, err := b.Share(ctx, id.Servers, id.Share)
	if err != nil {
		return err
	}
	verify := share.Verify
	if req.DryRun {
		verify = share.VerifyReadOnly
	}
	if err := verify(); err != nil {
		return fmt.Errorf("%w: %s share %s: %w", backend.ErrUnavailable, id.Backend, sharemount.Key(id.Servers[0], id.Share), err)
	}
	unlock := s.lockLocation(share)
	defer unlock()

	info, err := share.Lookup(id.Dir)
	switch {
	case errors.Is(err, dirvol.ErrNotFound):
		return fmt.Errorf("%w: directory %s does not exist on %s", backend.ErrNotFound, id.DirPath(), sharemount.Key(id.Servers[0], id.Share))
	case err != nil:
		return wrapStorage(err)
	case info.Meta != nil && info.Meta.PV != "" && info.Meta.PV != req.Name:
		return fmt.Errorf("%w: directory %s is recorded for volume %s (claim %s/%s)", backend.ErrConflict,
			id.DirPath(), info.Meta.PV, info.Meta.Namespace, info.Meta.Claim)
	}
	refs, err := s.refs(ctx, id.Location(), req.Name)
	if err != nil {
		return err
	}
	for _, r := range refs {
		if r.Live {
			return fmt.Errorf("%w: directory %s is in use by PersistentVolume %s", backend.ErrConflict, id.DirPath(), r.PV)
		}
	}
	if err := s.checkAncestors(ctx, share, id, req.Name); err != nil {
		return err
	}
	if other, err := s.nestedVolume(ctx, share, id, req.Name, true); err != nil {
		return err
	} else if other != "" {
		return fmt.Errorf("%w: directory %s holds the directory of %s", errNested, id.DirPath(), other)
	}
	if req.DryRun {
		return nil
	}
	meta := dirvol.Meta{PV: req.Name, Namespace: req.Namespace, Claim: req.Claim, CapacityBytes: req.SizeBytes,
		GID: max(req.GID, 0), Updated: s.now().UTC()}
	if info.Meta != nil && info.Meta.CapacityBytes > meta.CapacityBytes {
		meta.CapacityBytes = info.Meta.CapacityBytes
	}
	if err := share.SetMeta(id.Dir, meta); err != nil {
		return wrapStorage(err)
	}
	if s.gids != nil && req.GID > 0 {
		s.gids.Reserve(req.GID)
	}
	klog.FromContext(ctx).V(2).Info("Recorded adopted volume directory", "volume", req.Name, "dir", id.DirPath(), "share", id.Share)
	return nil
}

// adoptVolume takes over a whole volume through the backend's record.
func (s *Service) adoptVolume(ctx context.Context, b backend.Backend, req AdoptRequest) error {
	a, ok := b.(backend.VolumeAdopter)
	if !ok {
		return fmt.Errorf("%w: backend %q cannot adopt a whole volume", backend.ErrInvalid, req.ID.Backend)
	}
	refs, err := s.refs(ctx, req.ID.Location(), req.Name)
	if err != nil {
		return err
	}
	for _, r := range refs {
		if r.Live {
			return fmt.Errorf("%w: %s volume %s is in use by PersistentVolume %s", backend.ErrConflict, req.ID.Backend, req.ID.Share, r.PV)
		}
	}
	return a.AdoptVolume(ctx, backend.VolumeRequest{Name: req.Name, Namespace: req.Namespace, Claim: req.Claim,
		SizeBytes: req.SizeBytes}, req.ID, req.DryRun)
}
