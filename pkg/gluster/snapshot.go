package gluster

import (
	"context"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/sharemount"
)

// Snapshots on Gluster (docs/snapshots.md):
//   - mode subdir: the directory engine copies the claim's directory into the
//     volume's snapshot area through the FUSE mount, as on NFS; Gluster's
//     own bookkeeping xattrs are not copied.
//   - mode volume: refused. Gluster's own snapshots (gluster snapshot
//     create) need every brick on a thinly provisioned LVM volume, which
//     carve's bricks (directories under brickRootPaths) are not; see the
//     docs for what it would take.

var _ backend.ShareLister = (*Backend)(nil)

// MappedShares implements backend.ShareLister: the Gluster volumes in
// --mount-map (keys whose share is a volume name, not a path).
func (b *Backend) MappedShares(ctx context.Context) ([]*dirvol.Share, error) {
	return sharemount.Open(b.opts.Resolver.Map, false, func(server, volume string) (*dirvol.Share, error) {
		return b.Share(ctx, []string{server}, volume)
	})
}
