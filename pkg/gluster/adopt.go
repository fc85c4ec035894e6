package gluster

import (
	"context"
	"fmt"
	"strconv"

	"k8s.io/klog/v2"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/volid"
)

var _ backend.VolumeAdopter = (*Backend)(nil)

// AdoptVolume implements backend.VolumeAdopter: an existing, started volume
// gets carve's record (claim, capacity, and the PV last, as CreateVolume
// does), so a retry finishes an interrupted adoption and no other PV can
// take the volume over. Its options, bricks and data are left as they are.
func (b *Backend) AdoptVolume(ctx context.Context, req backend.VolumeRequest, id volid.ID, dryRun bool) error {
	logger := klog.FromContext(ctx).WithValues("glusterVolume", id.Share)
	cli, err := b.CLI(ctx, id.Servers)
	if err != nil {
		return err
	}
	vol, err := cli.VolumeInfo(ctx, id.Share)
	if err != nil {
		return err
	}
	if vol.Status != StatusStarted {
		return fmt.Errorf("%w: Gluster volume %s is %s, not started: nothing could mount it; run `gluster volume start %s` first",
			backend.ErrUnavailable, id.Share, vol.StatusStr, id.Share)
	}
	owner, _ := vol.Option(OptPV)
	switch {
	case owner != "" && owner != req.Name:
		return fmt.Errorf("%w: Gluster volume %s is recorded (%s) for PersistentVolume %s", backend.ErrConflict, id.Share, OptPV, owner)
	case owner == req.Name, dryRun:
		return nil
	}
	set := []string{"volume", "set", id.Share, OptClaim, req.Namespace + "/" + req.Claim}
	if _, ok := vol.Option(OptCapacity); !ok && req.SizeBytes > 0 {
		set = append(set, OptCapacity, strconv.FormatInt(req.SizeBytes, 10))
	}
	if _, err := cli.Run(ctx, set...); err != nil {
		return fmt.Errorf("record claim of Gluster volume %s: %w", id.Share, err)
	}
	if _, err := cli.Run(ctx, "volume", "set", id.Share, OptPV, req.Name); err != nil {
		return fmt.Errorf("record owner of Gluster volume %s: %w", id.Share, err)
	}
	logger.V(2).Info("Recorded adopted Gluster volume", "volume", req.Name)
	return nil
}
