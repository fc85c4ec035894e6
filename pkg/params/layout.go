package params

import (
	"fmt"
	"strings"
)

// Layout selects how an NFS claim is laid out on its share (StorageClass
// parameter, default directory).
const Layout = "layout"

// Layouts.
const (
	// LayoutDirectory: a plain directory; the size is recorded, not
	// enforced; snapshots and clones are copies (reflinked where the
	// filesystem can).
	LayoutDirectory = "directory"
	// LayoutBtrfs: a btrfs subvolume with a qgroup limit of the claim's
	// size; snapshots and clones are subvolume snapshots. The share must be
	// btrfs with quota enabled, reached locally (--mount-map).
	LayoutBtrfs = "btrfs"
)

// parseLayout validates a layout value for backend.
func parseLayout(backend, v string) (string, error) {
	l := strings.ToLower(v)
	switch l {
	case LayoutDirectory, LayoutBtrfs:
	default:
		return "", fmt.Errorf("%w: %s=%q: must be %s or %s", ErrInvalid, Layout, v, LayoutDirectory, LayoutBtrfs)
	}
	if backend != BackendNFS && l != LayoutDirectory {
		return "", fmt.Errorf("%w: %s=%q applies to backend nfs only (Gluster sizes are enforced with Gluster quota)", ErrInvalid, Layout, v)
	}
	return l, nil
}
