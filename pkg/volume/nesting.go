package volume

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/volid"
)

// Volume directories never nest: deleting an outer one would take an inner
// live volume's data with it, and a volume carved inside another is pod data
// of that other volume. These checks run under the share lock, against the
// share's records (volumes whether or not a PV still exists) and the
// cluster's PVs (including volumes handed out but not yet visible).

// errNested marks a refusal because of nesting; it wraps backend.ErrConflict.
var errNested = fmt.Errorf("%w: volume directories never nest", backend.ErrConflict)

// checkAncestors refuses a directory inside another volume's directory.
func (s *Service) checkAncestors(ctx context.Context, share *dirvol.Share, id volid.ID, self string) error {
	for i := 1; i < len(id.Dir); i++ {
		up := id
		up.Dir = id.Dir[:i]
		info, err := share.Lookup(up.Dir)
		if errors.Is(err, dirvol.ErrNotFound) {
			break // nothing deeper exists either
		}
		if err != nil {
			return wrapStorage(err)
		}
		if info.Meta != nil {
			return fmt.Errorf("%w: %s would be inside the directory %s of volume %s", errNested, id.DirPath(), up.DirPath(), holder(info.Meta))
		}
		refs, err := s.refs(ctx, up.Location(), self)
		if err != nil {
			return err
		}
		if len(refs) > 0 {
			return fmt.Errorf("%w: %s would be inside the directory %s of PersistentVolume %s", errNested, id.DirPath(), up.DirPath(), refs[0].PV)
		}
	}
	return nil
}

// nestedVolume names a volume whose directory lies inside id's directory, or
// returns "" when there is none. scanShare reads the share's records; it is
// needed only when the directory exists.
func (s *Service) nestedVolume(ctx context.Context, share *dirvol.Share, id volid.ID, self string, scanShare bool) (string, error) {
	if s.referrers != nil {
		refs, err := s.referrers.Nested(ctx, id.Location())
		if err != nil {
			return "", fmt.Errorf("%w: list PersistentVolumes: %w", backend.ErrUnavailable, err)
		}
		for _, r := range refs {
			if r.PV != self {
				return "PersistentVolume " + r.PV, nil
			}
		}
	}
	prefix := id.Location() + "/"
	s.mu.Lock()
	for loc, p := range s.pending {
		if strings.HasPrefix(loc, prefix) && p.name != self && s.now().Sub(p.at) < pendingTTL {
			s.mu.Unlock()
			return "volume " + p.name, nil
		}
	}
	s.mu.Unlock()
	if !scanShare {
		return "", nil
	}
	records, err := share.Records(ctx)
	if err != nil {
		return "", wrapStorage(err)
	}
	dirPrefix := id.DirPath() + "/"
	for _, m := range records {
		if strings.HasPrefix(m.Dir, dirPrefix) {
			return fmt.Sprintf("volume %s at %s", holder(&m), m.Dir), nil
		}
	}
	return "", nil
}

func holder(m *dirvol.Meta) string {
	if m.PV == "" {
		return "(unnamed)"
	}
	return m.PV
}
