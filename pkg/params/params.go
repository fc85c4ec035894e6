// Package params turns StorageClass parameters into a typed, validated Config.
//
// It is the only place that knows parameter names; both binaries call Parse, so a
// StorageClass means the same thing to the classic provisioner and the CSI driver.
package params

import (
	"errors"
	"fmt"
	"math"
	"path"
	"sort"
	"strconv"
	"strings"
)

// ErrInvalid marks every validation failure; callers map it to a PVC event or
// gRPC InvalidArgument.
var ErrInvalid = errors.New("invalid StorageClass parameter")

// Parameter names: a contract with users, documented in README.md.
const (
	Backend     = "backend"
	Server      = "server"
	Share       = "share"
	PathPattern = "pathPattern"
	OnDelete    = "onDelete"
	UID         = "uid"
	GID         = "gid"
	Mode        = "mode"
	GIDMin      = "gidMin"
	GIDMax      = "gidMax"
	VolumeType  = "volumeType"
)

// csiPrefix marks keys the CSI external-provisioner adds itself
// (--extra-create-metadata, secrets); they are not user parameters.
const csiPrefix = "csi.storage.k8s.io/"

// Backend kinds.
const (
	BackendNFS     = "nfs"
	BackendGluster = "gluster"
)

// OnDeletePolicy says what happens to the data when a PV with reclaim policy
// Delete is deleted.
type OnDeletePolicy string

const (
	OnDeleteRetain  OnDeletePolicy = "retain"
	OnDeleteArchive OnDeletePolicy = "archive"
	OnDeleteDelete  OnDeletePolicy = "delete"
)

// ParseOnDelete validates an onDelete value.
func ParseOnDelete(s string) (OnDeletePolicy, error) {
	switch p := OnDeletePolicy(strings.ToLower(s)); p {
	case OnDeleteRetain, OnDeleteArchive, OnDeleteDelete:
		return p, nil
	}
	return "", fmt.Errorf("%w: %s=%q: must be one of retain, archive, delete", ErrInvalid, OnDelete, s)
}

// Volume types of a classic PV.
const (
	VolumeTypeNFS = "nfs"
	VolumeTypeCSI = "csi"
)

// GID range defaults, the same as the provisioner lib's gidallocator.
const (
	DefaultGIDMin = 2000
	DefaultGIDMax = math.MaxInt32
)

// Config is a validated StorageClass.
type Config struct {
	Backend     string
	Server      string
	Share       string
	PathPattern *Pattern
	OnDelete    OnDeletePolicy
	VolumeType  string
	// Layout of an NFS claim: LayoutDirectory (default) or LayoutBtrfs.
	Layout string

	// Ownership. When GID is nil a GID is allocated per volume from
	// [GIDMin, GIDMax]; UID defaults to 0 and Mode to 02770 (setgid, so files
	// created later inherit the group).
	UID    *int64
	GID    *int64
	Mode   *uint32
	GIDMin int64
	GIDMax int64

	// RestoreAcrossNamespaces: claims may be filled from snapshots and
	// volumes of other namespaces (CheckDataSource).
	RestoreAcrossNamespaces bool

	// Gluster is the gluster part (backend gluster only, else nil).
	Gluster *GlusterConfig
	// Btrfs says how the btrfs layout reaches its filesystem (layout
	// btrfs only, else nil).
	Btrfs *BtrfsConfig
}

// AllocateGID reports whether a GID must be allocated per volume.
func (c *Config) AllocateGID() bool { return c.GID == nil }

// DirMode is the mode of a newly carved directory.
func (c *Config) DirMode() uint32 {
	if c.Mode != nil {
		return *c.Mode
	}
	return 0o2770
}

// Parse validates StorageClass parameters. Keys are matched case-insensitively
// and other provisioners' names are translated first (aliases.go); any unknown
// key is an error that names it, because a misspelt parameter silently ignored
// is how data lands in the wrong place.
func Parse(raw map[string]string) (*Config, error) {
	in, notes, nerrs := normalise(raw)
	if len(nerrs) > 0 {
		// Names first: checking values of a class whose keys are wrong only adds noise.
		return nil, withNotes(nerrs, notes)
	}
	c := &Config{
		OnDelete: OnDeleteRetain,
		GIDMin:   DefaultGIDMin,
		GIDMax:   DefaultGIDMax,
	}
	var errs []error
	bad := func(err error) { errs = append(errs, err) }

	pattern := DefaultPathPattern
	var glusterMode string // `mode` given as subdir|volume
	var glusterGiven []string
	layout := LayoutDirectory
	for _, k := range sortedKeys(in) {
		v := in[k]
		switch k {
		case Backend:
			c.Backend = strings.ToLower(v)
		case Server:
			c.Server = v
		case Share:
			c.Share = v
		case PathPattern:
			pattern = v
		case OnDelete:
			p, err := ParseOnDelete(v)
			if err != nil {
				bad(err)
			}
			c.OnDelete = p
		case VolumeType:
			c.VolumeType = strings.ToLower(v)
		case Layout:
			layout = v
		case RestoreAcrossNamespaces:
			b, err := strconv.ParseBool(v)
			if err != nil {
				bad(fmt.Errorf("%w: %s=%q: must be true or false", ErrInvalid, k, v))
			}
			c.RestoreAcrossNamespaces = b
		case UID:
			n, err := parseID(k, v)
			if err != nil {
				bad(err)
			}
			c.UID = &n
		case GID:
			n, err := parseID(k, v)
			if err != nil {
				bad(err)
			}
			c.GID = &n
		case Mode:
			if isGlusterMode(v) {
				glusterMode = v
				continue
			}
			m, err := strconv.ParseUint(v, 8, 32)
			if err != nil || m > 0o7777 {
				bad(fmt.Errorf("%w: %s=%q: must be an octal permission such as 2770", ErrInvalid, k, v))
			}
			mm := uint32(m)
			c.Mode = &mm
		case GIDMin, GIDMax:
			n, err := parseID(k, v)
			if err == nil && n < DefaultGIDMin {
				err = fmt.Errorf("%w: %s=%q: must be at least %d", ErrInvalid, k, v, DefaultGIDMin)
			}
			if err != nil {
				bad(err)
			}
			if k == GIDMin {
				c.GIDMin = n
			} else {
				c.GIDMax = n
			}
		case BtrfsExecutor, BtrfsExecutorSecret, BtrfsExecutorSecretNS, BtrfsHelper:
			// Checked once the layout is known (parseBtrfs).
		default:
			if isGlusterKey(k) {
				glusterGiven = append(glusterGiven, k)
				continue
			}
			if strings.HasPrefix(k, csiPrefix) {
				continue
			}
			bad(fmt.Errorf("%w: unknown parameter %q (known: %s; from other provisioners: %s)",
				ErrInvalid, k, strings.Join(known, ", "), aliasNames()))
		}
	}

	p, err := ParsePattern(pattern)
	if err != nil {
		bad(err)
	}
	c.PathPattern = p

	switch c.Backend {
	case BackendNFS:
		if c.Server == "" {
			bad(fmt.Errorf("%w: %s is required for backend nfs (the NFS server's host name or IP)", ErrInvalid, Server))
		} else if err := CheckHost(c.Server); err != nil {
			bad(fmt.Errorf("%w: %s=%q: %w", ErrInvalid, Server, c.Server, err))
		}
		if err := validateShare(c.Share); err != nil {
			bad(err)
		}
		if c.VolumeType == "" {
			c.VolumeType = VolumeTypeNFS
		}
		for _, k := range glusterGiven {
			bad(fmt.Errorf("%w: %s applies to backend gluster only", ErrInvalid, k))
		}
		if glusterMode != "" {
			bad(fmt.Errorf("%w: %s=%q applies to backend gluster only; for nfs, %s is the directory permission in octal (e.g. 2770)",
				ErrInvalid, Mode, glusterMode, Mode))
		}
	case BackendGluster:
		for _, k := range []string{Server, Share} {
			if _, ok := in[k]; ok {
				bad(fmt.Errorf("%w: %s does not apply to backend gluster: use %s (pool members) and %s (the volume)",
					ErrInvalid, k, GlusterServers, GlusterVolume))
			}
		}
		c.Share = ""
		parseGluster(c, in, glusterMode, bad)
	case "":
		bad(fmt.Errorf("%w: %s is required (nfs or gluster)", ErrInvalid, Backend))
	default:
		bad(fmt.Errorf("%w: %s=%q: must be nfs or gluster", ErrInvalid, Backend, c.Backend))
	}
	if l, err := parseLayout(c.Backend, layout); err != nil {
		bad(err)
	} else {
		c.Layout = l
		parseBtrfs(c, in, bad)
	}
	switch c.VolumeType {
	case VolumeTypeNFS, VolumeTypeCSI:
	default:
		bad(fmt.Errorf("%w: %s=%q: must be nfs or csi", ErrInvalid, VolumeType, c.VolumeType))
	}
	if c.GIDMin > c.GIDMax {
		bad(fmt.Errorf("%w: %s (%d) is greater than %s (%d)", ErrInvalid, GIDMin, c.GIDMin, GIDMax, c.GIDMax))
	}
	if c.GID != nil && (in[GIDMin] != "" || in[GIDMax] != "") {
		bad(fmt.Errorf("%w: %s and %s/%s exclude each other: a fixed gid is not allocated", ErrInvalid, GID, GIDMin, GIDMax))
	}
	if len(errs) > 0 {
		return nil, withNotes(errs, notes)
	}
	return c, nil
}

// withNotes joins errs and, when aliases were translated, says how: the
// messages above name carve's keys, which the class may not spell.
func withNotes(errs []error, notes []string) error {
	if len(notes) > 0 {
		errs = append(errs, fmt.Errorf("(carve read %s)", strings.Join(notes, "; ")))
	}
	return errors.Join(errs...)
}

var known = append(append([]string{Backend, Server, Share, PathPattern, OnDelete, VolumeType, Layout, UID, GID, Mode, GIDMin, GIDMax,
	RestoreAcrossNamespaces}, glusterKeys...), btrfsKeys...)

func parseID(k, v string) (int64, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt32 {
		return 0, fmt.Errorf("%w: %s=%q: must be an integer between 0 and %d", ErrInvalid, k, v, math.MaxInt32)
	}
	return n, nil
}

// validateShare accepts an absolute, clean export path.
func validateShare(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: %s is required (the exported path, e.g. /export)", ErrInvalid, Share)
	case !strings.HasPrefix(s, "/") || path.Clean(s) != s:
		return fmt.Errorf("%w: %s=%q: must be a clean absolute path such as /export", ErrInvalid, Share, s)
	}
	if err := checkChars(s); err != nil {
		return fmt.Errorf("%w: %s=%q: %w", ErrInvalid, Share, s, err)
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
