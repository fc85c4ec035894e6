// Package volid encodes and decodes carve volume IDs.
//
// An ID carries everything needed to find, mount and delete a volume without
// any cluster state: version, backend, servers, share (NFS export or Gluster
// volume), the directory under it and the onDelete policy recorded at
// provisioning. Version 1:
//
//	1#<backend>#<server>[,<server>...]#<share>#<dir>#<onDelete>
//
// Fields escape "%" and "#" as %25 and %23. <dir> is empty for a Gluster
// volume-per-claim, where the whole volume is the claim.
package volid

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"strings"

	"github.com/carve-csi/carve/pkg/params"
)

// ErrMalformed marks an ID that does not decode; wrapped with the reason.
var ErrMalformed = errors.New("malformed volume ID")

const (
	version = "1"
	sep     = "#"
)

// ID identifies one carved volume.
type ID struct {
	Backend  string
	Servers  []string
	Share    string
	Dir      []string
	OnDelete params.OnDeletePolicy
}

// DirPath is the directory relative to the share, "" for a whole volume.
func (id ID) DirPath() string { return strings.Join(id.Dir, "/") }

// Location identifies the storage an ID points to, ignoring the policy, so two
// IDs that share a directory compare equal. Gluster servers are left out because
// any of a pool's servers reaches the same volume.
func (id ID) Location() string {
	server := ""
	if id.Backend == params.BackendNFS && len(id.Servers) > 0 {
		server = id.Servers[0]
	}
	return strings.Join([]string{id.Backend, server, id.Share, id.DirPath()}, sep)
}

var escaper = strings.NewReplacer("%", "%25", sep, "%23")

// String encodes the ID.
func (id ID) String() string {
	return strings.Join([]string{
		version,
		escaper.Replace(id.Backend),
		escaper.Replace(strings.Join(id.Servers, ",")),
		escaper.Replace(id.Share),
		escaper.Replace(id.DirPath()),
		escaper.Replace(string(id.OnDelete)),
	}, sep)
}

// Validate checks an ID as strictly as Parse does.
func (id ID) Validate() error {
	switch id.Backend {
	case params.BackendNFS, params.BackendGluster:
	default:
		return fmt.Errorf("%w: unknown backend %q", ErrMalformed, id.Backend)
	}
	if len(id.Servers) == 0 {
		return fmt.Errorf("%w: no server", ErrMalformed)
	}
	for _, s := range id.Servers {
		if err := params.CheckHost(s); err != nil {
			return fmt.Errorf("%w: %w", ErrMalformed, err)
		}
	}
	if id.Backend == params.BackendNFS {
		if !strings.HasPrefix(id.Share, "/") || path.Clean(id.Share) != id.Share {
			return fmt.Errorf("%w: NFS share %q is not a clean absolute path", ErrMalformed, id.Share)
		}
		if len(id.Dir) == 0 {
			return fmt.Errorf("%w: NFS volume without a directory", ErrMalformed)
		}
	} else if err := params.CheckGlusterVolumeName(id.Share); err != nil {
		return fmt.Errorf("%w: Gluster volume: %w", ErrMalformed, err)
	}
	for _, seg := range id.Dir {
		if err := params.CheckSegment(seg); err != nil {
			return fmt.Errorf("%w: directory: %w", ErrMalformed, err)
		}
	}
	if _, err := params.ParseOnDelete(string(id.OnDelete)); err != nil || id.OnDelete == "" {
		return fmt.Errorf("%w: onDelete %q", ErrMalformed, id.OnDelete)
	}
	return nil
}

// Parse decodes and validates an ID.
func Parse(s string) (ID, error) {
	f := strings.Split(s, sep)
	if len(f) == 0 || f[0] != version {
		return ID{}, fmt.Errorf("%w: unsupported version in %q (want %s%s...)", ErrMalformed, s, version, sep)
	}
	if len(f) != 6 {
		return ID{}, fmt.Errorf("%w: %q has %d fields, want 6", ErrMalformed, s, len(f))
	}
	for i := 1; i < len(f); i++ {
		u, err := url.PathUnescape(f[i])
		if err != nil {
			return ID{}, fmt.Errorf("%w: field %d: %v", ErrMalformed, i, err)
		}
		f[i] = u
	}
	id := ID{Backend: f[1], Share: f[3], OnDelete: params.OnDeletePolicy(f[5])}
	if f[2] != "" {
		id.Servers = strings.Split(f[2], ",")
	}
	if f[4] != "" {
		id.Dir = strings.Split(f[4], "/")
	}
	if err := id.Validate(); err != nil {
		return ID{}, err
	}
	if id.String() != s {
		// One ID, one spelling: otherwise two strings could name one directory
		// and slip past per-ID locks.
		return ID{}, fmt.Errorf("%w: %q is not in canonical form", ErrMalformed, s)
	}
	return id, nil
}
