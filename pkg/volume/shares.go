package volume

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"k8s.io/klog/v2"

	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/sharemount"
)

// CheckShares is the readiness check of the shares a deployment maps
// (--mount-map): each must verify as the share carve knows
// (dirvol.Share.Verify), so a replica whose share mount is gone reports not
// ready instead of carving on its own disk. readOnly is for node plugins,
// which never write to a share.
func CheckShares(m sharemount.Map, readOnly bool) error {
	var errs []error
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}) {
		sh, err := dirvol.Open(m[k])
		if err == nil {
			if readOnly {
				err = sh.VerifyReadOnly()
			} else {
				err = sh.Verify()
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("share %s: %w", k, err))
		}
	}
	return errors.Join(errs...)
}

// PurgeLeftovers finishes, in the background, the purges of deleted volumes
// that a crash interrupted on the mapped shares.
func PurgeLeftovers(ctx context.Context, m sharemount.Map) {
	logger := klog.FromContext(ctx)
	for k, p := range m {
		go func() {
			sh, err := dirvol.Open(p)
			if err == nil {
				err = sh.Purge(ctx)
			}
			if err != nil && ctx.Err() == nil {
				logger.Error(err, "Purging leftovers failed", "share", k)
			}
		}()
	}
}
