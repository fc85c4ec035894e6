package nfs

import (
	"context"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/sharemount"
)

var _ backend.ShareLister = (*Backend)(nil)

// MappedShares implements backend.ShareLister: the exports in --mount-map
// (keys whose share is a path; Gluster volumes are names).
func (b *Backend) MappedShares(ctx context.Context) ([]*dirvol.Share, error) {
	return sharemount.Open(b.resolver.Map, true, func(server, share string) (*dirvol.Share, error) {
		return b.Share(ctx, []string{server}, share)
	})
}
