// Package backend defines what a storage backend provides to carve's core and
// the errors every layer shares. It imports neither Kubernetes nor gRPC.
package backend

import (
	"context"
	"errors"

	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/volid"
)

// Sentinel errors. Wrap them with %w; pkg/csidriver/errors.go turns them into
// gRPC codes and the provisioner into PVC events.
var (
	ErrInvalid     = params.ErrInvalid         // bad parameters or request
	ErrConflict    = errors.New("conflict")    // the storage is held by another live volume
	ErrUnavailable = errors.New("unavailable") // the backend cannot be reached now; retry
	ErrNotFound    = errors.New("not found")   // no such volume
	ErrBusy        = errors.New("operation in progress")
	// ErrExists: the name is taken by something that differs from the
	// request (a snapshot of another volume, a volume with another source).
	ErrExists = errors.New("already exists with different arguments")
	// ErrTooSmall: the requested size cannot hold the data source.
	ErrTooSmall = errors.New("smaller than the data source")
)

// MountSpec is what a node needs to mount a volume with mount-utils.
type MountSpec struct {
	Source  string
	FSType  string
	Options []string
}

// Backend is one kind of storage (nfs, gluster).
type Backend interface {
	// Kind is the backend's name in StorageClasses and volume IDs.
	Kind() string
	// Servers returns the servers a config names, first the primary one.
	Servers(cfg *params.Config) []string
	// Share opens the directory engine on a share, mounting it on demand.
	// It fails with ErrUnavailable when the share cannot be reached.
	Share(ctx context.Context, servers []string, share string) (*dirvol.Share, error)
	// MountSpec tells a node how to mount the volume directly from the server.
	MountSpec(id volid.ID, mountOptions []string) MountSpec
}

// Limiter is implemented by backends that enforce a size per volume
// (Gluster directory quota). Without it, sizes are recorded, not enforced.
type Limiter interface {
	// SetLimit sets or raises the volume's size limit.
	SetLimit(ctx context.Context, id volid.ID, bytes int64) error
	// RemoveLimit drops the limit of a volume that is archived or deleted.
	RemoveLimit(ctx context.Context, id volid.ID) error
}

// ConfiguredLimiter is a Limiter whose policy depends on the StorageClass
// (Gluster's quota: auto|gluster|none). pkg/volume calls ApplyLimit instead
// of SetLimit when a claim's volume is carved or re-attached; warnings (e.g.
// "the size is not enforced") are meant for the claim's events.
type ConfiguredLimiter interface {
	Limiter
	ApplyLimit(ctx context.Context, id volid.ID, cfg *params.Config, bytes int64) (warnings []string, err error)
}

// VolumeRequest asks a VolumeCarver for a whole volume for one claim.
type VolumeRequest struct {
	Name      string // PV name (classic) or CSI volume name
	Namespace string // claim namespace
	Claim     string // claim name
	ClaimUID  string // claim UID; makes generated volume names unique
	Config    *params.Config
	SizeBytes int64
	// Owner of the volume's root directory; GID is -1 when none was allocated.
	Owner dirvol.Owner
}

// CarvedVolume is a volume made (or found again, on a retry) by a VolumeCarver.
type CarvedVolume struct {
	ID volid.ID
	// Existing: the volume was already there for the same PV (a retry).
	Existing bool
	// GID of the volume root's group, -1 when none.
	GID int64
	// CapacityBytes recorded for an existing volume.
	CapacityBytes int64
	// Warnings for the claim's events.
	Warnings []string
}

// Action is what a delete did with a volume's data.
type Action string

// The outcomes of deleting a volume.
const (
	ActionRetained Action = "retained" // onDelete retain: left in place
	ActionArchived Action = "archived" // moved to the archive; Where says where
	ActionDeleted  Action = "deleted"  // moved to the trash, purged in the background
	ActionAbsent   Action = "absent"   // nothing there any more
	// ActionKeptInUse: another live volume uses the data; Where names it.
	ActionKeptInUse Action = "kept-in-use"
	// ActionKeptHoldsVolumes: the directory holds other volumes' directories;
	// Where names one.
	ActionKeptHoldsVolumes Action = "kept-holds-volumes"
	// ActionKeptUnrecorded: carve has no record of having carved the
	// directory, so it is not carve's to remove.
	ActionKeptUnrecorded Action = "kept-unrecorded"
)

// Gone reports whether the volume's data is no longer in place (its GID may
// be reused).
func (a Action) Gone() bool {
	return a == ActionArchived || a == ActionDeleted || a == ActionAbsent
}

// VolumeOutcome says what DeleteVolume did; Where names the kept volume or
// leftovers.
type VolumeOutcome struct {
	Action Action
	Where  string
}

// VolumeCarver is implemented by backends that can give each claim its own
// volume (Gluster mode volume). Such volume IDs have an empty Dir.
type VolumeCarver interface {
	// CreateVolume creates and starts the claim's volume; idempotent per req.Name.
	CreateVolume(ctx context.Context, req VolumeRequest) (*CarvedVolume, error)
	// DeleteVolume applies id.OnDelete (archive or delete) to the volume of PV
	// name ("" when unknown). It never touches a volume recorded for another PV.
	DeleteVolume(ctx context.Context, name string, id volid.ID) (VolumeOutcome, error)
	// ExpandVolume raises the recorded size (and the limit, where enforced);
	// it never shrinks and returns the resulting size.
	ExpandVolume(ctx context.Context, id volid.ID, bytes int64) (int64, error)
}

// VolumeAdopter is implemented by backends whose volumes per claim can also
// be volumes carve did not create (Gluster volumes made by heketi): adopting
// one writes carve's record on it, so carve's rules for its own volumes
// apply from then on.
type VolumeAdopter interface {
	// AdoptVolume checks that the volume of id exists and can be served,
	// and unless dryRun records it for PV req.Name (idempotent). A volume
	// recorded for another PV is ErrConflict; a missing one ErrNotFound.
	AdoptVolume(ctx context.Context, req VolumeRequest, id volid.ID, dryRun bool) error
}

// ShareLister is implemented by backends configured with fixed shares
// (--mount-map): MappedShares opens the engine of each, so a scan of every
// share (CSI ListSnapshots without filters) also covers shares nothing has
// used since the process started. A share that cannot be reached is left
// out and reported in the error; the shares returned are still usable.
//
// Snapshots themselves need nothing more from a backend: they are copies
// made by the directory engine on the share (dirvol's snapshot area), with
// these outcomes, whatever the backend:
//   - taking one is idempotent per snapshot name: the same name and source
//     return the existing snapshot; the same name with another source is
//     ErrExists;
//   - a missing source volume or snapshot is ErrNotFound; deleting a
//     missing snapshot is success;
//   - a volume that is a whole backend volume (Gluster mode volume, an ID
//     without a directory) has no copy-based snapshot: ErrInvalid.
type ShareLister interface {
	MappedShares(ctx context.Context) ([]*dirvol.Share, error)
}
