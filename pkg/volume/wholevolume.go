package volume

import (
	"context"
	"fmt"

	"k8s.io/klog/v2"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/volid"
)

// applyClaimLimit enforces a claim's size when its volume is carved or
// re-attached. Backends whose policy depends on the StorageClass decide with
// it and may add warnings for the claim's events.
func (s *Service) applyClaimLimit(ctx context.Context, b backend.Backend, id volid.ID, req Request, res *Result) error {
	cl, ok := b.(backend.ConfiguredLimiter)
	if !ok {
		return s.applyLimit(ctx, b, id, req.SizeBytes)
	}
	// A retry after an expansion must not lower the limit.
	size := max(req.SizeBytes, res.CapacityBytes)
	if size <= 0 {
		return nil
	}
	warnings, err := cl.ApplyLimit(ctx, id, req.Config, size)
	res.Warnings = append(res.Warnings, warnings...)
	if err != nil {
		return fmt.Errorf("set size limit of %s: %w", id.DirPath(), err)
	}
	return nil
}

func (s *Service) carver(kind string) (backend.VolumeCarver, error) {
	b, err := s.Backend(kind)
	if err != nil {
		return nil, err
	}
	c, ok := b.(backend.VolumeCarver)
	if !ok {
		return nil, fmt.Errorf("%w: backend %q cannot create a volume per claim", backend.ErrInvalid, kind)
	}
	return c, nil
}

// createVolume gives the claim a whole volume of its own.
func (s *Service) createVolume(ctx context.Context, req Request) (*Result, error) {
	cfg := req.Config
	c, err := s.carver(cfg.Backend)
	if err != nil {
		return nil, err
	}
	own := dirvol.Owner{Mode: cfg.DirMode(), GID: -1}
	if cfg.UID != nil {
		own.UID = *cfg.UID
	}
	allocated := false
	switch {
	case cfg.GID != nil:
		own.GID = *cfg.GID
	case s.gids != nil:
		g, err := s.gids.Allocate(ctx, cfg.GIDMin, cfg.GIDMax)
		if err != nil {
			return nil, fmt.Errorf("allocate a GID in %d..%d: %w", cfg.GIDMin, cfg.GIDMax, err)
		}
		own.GID, allocated = g, true
	}
	cv, err := c.CreateVolume(ctx, backend.VolumeRequest{
		Name: req.Name, Namespace: req.Namespace, Claim: req.Claim, ClaimUID: req.ClaimUID,
		Config: cfg, SizeBytes: req.SizeBytes, Owner: own,
	})
	if err != nil {
		if allocated {
			s.gids.Release(own.GID)
		}
		return nil, err
	}
	if cv.Existing && allocated && cv.GID != own.GID {
		// A retry: the volume keeps the group it was created with.
		s.gids.Release(own.GID)
		if cv.GID >= 0 {
			s.gids.Reserve(cv.GID)
		}
	}
	klog.FromContext(ctx).V(2).Info("Volume per claim ready", "volume", req.Name, "glusterVolume", cv.ID.Share,
		"existing", cv.Existing, "gid", cv.GID)
	return &Result{ID: cv.ID, GID: cv.GID, CapacityBytes: cv.CapacityBytes, Warnings: cv.Warnings}, nil
}

// deleteVolume applies the onDelete policy to a volume per claim, unless a
// live PV still points at it.
func (s *Service) deleteVolume(ctx context.Context, b backend.Backend, name string, id volid.ID) (Outcome, error) {
	c, ok := b.(backend.VolumeCarver)
	if !ok {
		return Outcome{}, fmt.Errorf("%w: backend %q has no volume per claim", backend.ErrInvalid, id.Backend)
	}
	refs, err := s.refs(ctx, id.Location(), name)
	if err != nil {
		return Outcome{}, err
	}
	for _, r := range refs {
		if r.Live {
			klog.FromContext(ctx).Info("Keeping volume: another live PersistentVolume uses it", "glusterVolume", id.Share, "user", r.PV)
			return Outcome{Action: backend.ActionKeptInUse, Where: r.PV}, nil
		}
	}
	out, err := c.DeleteVolume(ctx, name, id)
	if err != nil {
		return Outcome{}, err
	}
	return Outcome{Action: out.Action, Where: out.Where}, nil
}

func (s *Service) expandVolume(ctx context.Context, b backend.Backend, id volid.ID, bytes int64) (int64, error) {
	c, ok := b.(backend.VolumeCarver)
	if !ok {
		return 0, fmt.Errorf("%w: backend %q has no volume per claim", backend.ErrInvalid, id.Backend)
	}
	return c.ExpandVolume(ctx, id, bytes)
}
