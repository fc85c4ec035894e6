package nfs

import (
	"context"
	"errors"
	"strings"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/sharemount"
)

var _ backend.ShareLister = (*Backend)(nil)

// MappedShares implements backend.ShareLister: the exports in --mount-map
// (keys whose share is a path; Gluster volumes are names).
func (b *Backend) MappedShares(ctx context.Context) ([]*dirvol.Share, error) {
	var out []*dirvol.Share
	var errs []error
	for k := range b.resolver.Map {
		server, share, ok := sharemount.SplitKey(k)
		if !ok || !strings.HasPrefix(share, "/") {
			continue
		}
		s, err := b.Share(ctx, []string{server}, share)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, s)
	}
	return out, errors.Join(errs...)
}
