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
