package volid

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/carve-csi/carve/pkg/params"
)

// Snapshot IDs follow volume IDs: everything needed to find the snapshot
// without cluster state, versioned, escaped the same way. Version 1:
//
//	snap1#<backend>#<server>[,<server>...]#<share>#<entry>
//
// <entry> is the snapshot's name in the share's snapshot area
// (dirvol.SnapshotEntry); the prefix keeps a snapshot ID from ever parsing
// as a volume ID and the other way round.
const snapVersion = "snap1"

// SnapshotID identifies one snapshot.
type SnapshotID struct {
	Backend string
	Servers []string
	Share   string
	Entry   string
}

// Volume is the ID of a volume on the same share (with a directory and a
// policy), for checks shared with volume IDs.
func (id SnapshotID) volume() ID {
	return ID{Backend: id.Backend, Servers: id.Servers, Share: id.Share, Dir: []string{"x"}, OnDelete: "delete"}
}

// ShareLocation names the share the snapshot is on, comparable with
// ID.ShareLocation.
func (id SnapshotID) ShareLocation() string { return id.volume().ShareLocation() }

// ShareLocation names the share of a volume (its Location without the
// directory): a snapshot restores, and a volume clones, onto its own share.
func (id ID) ShareLocation() string {
	server := ""
	if id.Backend == params.BackendNFS && len(id.Servers) > 0 {
		server = id.Servers[0]
	}
	return strings.Join([]string{id.Backend, server, id.Share}, sep)
}

// String encodes the ID.
func (id SnapshotID) String() string {
	return strings.Join([]string{
		snapVersion,
		escaper.Replace(id.Backend),
		escaper.Replace(strings.Join(id.Servers, ",")),
		escaper.Replace(id.Share),
		escaper.Replace(id.Entry),
	}, sep)
}

// Validate checks a snapshot ID as strictly as ParseSnapshot does.
func (id SnapshotID) Validate() error {
	if err := id.volume().Validate(); err != nil {
		return err
	}
	if err := params.CheckSnapshotEntry(id.Entry); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return nil
}

// ParseSnapshot decodes and validates a snapshot ID.
func ParseSnapshot(s string) (SnapshotID, error) {
	f := strings.Split(s, sep)
	if len(f) == 0 || f[0] != snapVersion {
		return SnapshotID{}, fmt.Errorf("%w: unsupported snapshot ID version in %q (want %s%s...)", ErrMalformed, s, snapVersion, sep)
	}
	if len(f) != 5 {
		return SnapshotID{}, fmt.Errorf("%w: snapshot ID %q has %d fields, want 5", ErrMalformed, s, len(f))
	}
	for i := 1; i < len(f); i++ {
		u, err := url.PathUnescape(f[i])
		if err != nil {
			return SnapshotID{}, fmt.Errorf("%w: field %d: %v", ErrMalformed, i, err)
		}
		f[i] = u
	}
	id := SnapshotID{Backend: f[1], Share: f[3], Entry: f[4]}
	if f[2] != "" {
		id.Servers = strings.Split(f[2], ",")
	}
	if err := id.Validate(); err != nil {
		return SnapshotID{}, err
	}
	if id.String() != s {
		return SnapshotID{}, fmt.Errorf("%w: %q is not in canonical form", ErrMalformed, s)
	}
	return id, nil
}
