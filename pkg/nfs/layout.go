package nfs

import (
	"context"
	"errors"
	"fmt"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/volid"
)

// The btrfs layout (params.LayoutBtrfs) enforces sizes: each claim is a
// subvolume with a qgroup limit (pkg/dirvol/btrfs.go). Plain directories
// have no limit, so for them these are no-ops.
var _ backend.ConfiguredLimiter = (*Backend)(nil)

// ApplyLimit implements backend.ConfiguredLimiter: in the btrfs layout it
// sets the claim's subvolume limit; a directory that is not a subvolume
// (re-attached data made before the class chose the layout) is kept, with a
// warning that its size is not enforced.
func (b *Backend) ApplyLimit(ctx context.Context, id volid.ID, cfg *params.Config, bytes int64) ([]string, error) {
	if cfg.Layout != params.LayoutBtrfs {
		return nil, nil
	}
	b.rememberBtrfs(cfg)
	enforced, err := b.setLimit(ctx, id, bytes)
	if err != nil {
		return nil, err
	}
	if !enforced {
		return []string{fmt.Sprintf("the size is not enforced: directory %s on %s is not a btrfs subvolume "+
			"(it was made before its StorageClass chose %s: %s)", id.DirPath(), id.Share, params.Layout, params.LayoutBtrfs)}, nil
	}
	return nil, nil
}

// SetLimit implements backend.Limiter (expansion): raises the limit of a
// volume that is a btrfs subvolume; a plain directory's size stays recorded
// only.
func (b *Backend) SetLimit(ctx context.Context, id volid.ID, bytes int64) error {
	_, err := b.setLimit(ctx, id, bytes)
	return err
}

// RemoveLimit implements backend.Limiter: a subvolume's qgroup goes with
// the subvolume (archived volumes keep their limit and their data).
func (b *Backend) RemoveLimit(context.Context, volid.ID) error { return nil }

func (b *Backend) setLimit(ctx context.Context, id volid.ID, bytes int64) (bool, error) {
	if bytes <= 0 || len(id.Dir) == 0 {
		return false, nil
	}
	share, err := b.Share(ctx, id.Servers, id.Share)
	if err != nil {
		return false, err
	}
	enforced, err := share.SetLimit(id.Dir, bytes)
	switch {
	case errors.Is(err, backend.ErrInvalid), errors.Is(err, backend.ErrUnavailable):
		return false, err
	case errors.Is(err, dirvol.ErrLayout), errors.Is(err, dirvol.ErrUnsafe):
		return false, fmt.Errorf("%w: %w", backend.ErrConflict, err)
	case errors.Is(err, dirvol.ErrNotFound):
		return false, fmt.Errorf("%w: %w", backend.ErrNotFound, err)
	case err != nil:
		return false, fmt.Errorf("%w: %w", backend.ErrUnavailable, err)
	}
	return enforced, nil
}
