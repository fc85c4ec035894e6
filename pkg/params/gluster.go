package params

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
)

// GlusterFS parameter names (backend gluster only).
const (
	GlusterServers          = "servers"
	GlusterVolume           = "volume"
	GlusterQuota            = "quota"
	GlusterReplica          = "replica"
	GlusterBrickRootPaths   = "brickRootPaths"
	GlusterVolumeOptions    = "volumeOptions"
	GlusterVolumeNamePrefix = "volumeNamePrefix"
	GlusterForceCreate      = "forceCreate"
	GlusterExecutor         = "executor"
	GlusterExecutorSecret   = "executorSecretName"
	GlusterExecutorSecretNS = "executorSecretNamespace"
)

var glusterKeys = []string{GlusterServers, GlusterVolume, GlusterQuota, GlusterReplica, GlusterBrickRootPaths,
	GlusterVolumeOptions, GlusterVolumeNamePrefix, GlusterForceCreate, GlusterExecutor, GlusterExecutorSecret,
	GlusterExecutorSecretNS}

// Gluster carving modes: the value of `mode` for backend gluster. `mode` is
// also the shared directory-permission parameter; the two never collide
// because a permission is octal digits and these are words.
const (
	GlusterModeSubdir = "subdir" // one directory per claim on an existing volume
	GlusterModeVolume = "volume" // one Gluster volume per claim
)

// Gluster quota policies.
const (
	QuotaAuto    = "auto"    // limit when the volume has quota enabled, else warn
	QuotaGluster = "gluster" // always limit; fail when quota is not enabled
	QuotaNone    = "none"    // never limit
)

// Gluster executors: how carve runs the gluster CLI.
const (
	ExecutorLocal = "local" // the glusterd socket on this host
	ExecutorSSH   = "ssh"   // ssh to a pool member with a key from a Secret
)

// Defaults for volume mode.
const (
	DefaultReplica          = 3
	DefaultVolumeNamePrefix = "pvc"
	maxReplica              = 16
	maxVolumeNamePrefix     = 32
)

// BrickRoot is one host:/path under which volume mode creates bricks.
type BrickRoot struct {
	Host string
	Path string
}

func (b BrickRoot) String() string { return b.Host + ":" + b.Path }

// VolumeOption is one `gluster volume set VOL KEY VALUE` (KEY "group" applies
// a predefined option group such as db-workload).
type VolumeOption struct {
	Key   string
	Value string
}

// GlusterConfig is the validated gluster part of a StorageClass.
type GlusterConfig struct {
	// Servers of the trusted pool; the first is the volfile server, the rest
	// are backup volfile servers.
	Servers []string
	// Volume is the existing volume holding the claims' directories (subdir mode).
	Volume string
	Mode   string // GlusterModeSubdir or GlusterModeVolume
	Quota  string // QuotaAuto, QuotaGluster or QuotaNone

	// Volume mode only.
	Replica          int
	BrickRootPaths   []BrickRoot
	VolumeOptions    []VolumeOption
	VolumeNamePrefix string
	ForceCreate      bool

	Executor                string // ExecutorLocal or ExecutorSSH
	ExecutorSecretName      string
	ExecutorSecretNamespace string
}

// isGlusterMode reports whether a `mode` value names a Gluster carving mode
// rather than a directory permission.
func isGlusterMode(v string) bool {
	switch strings.ToLower(v) {
	case GlusterModeSubdir, GlusterModeVolume:
		return true
	}
	return false
}

func isGlusterKey(k string) bool { return slices.Contains(glusterKeys, k) }

// parseGluster validates the gluster parameters in raw (all StorageClass parameters)
// and fills c.Gluster. mode is the carving mode given through `mode`, or "".
func parseGluster(c *Config, raw map[string]string, mode string, bad func(error)) {
	g := &GlusterConfig{
		Mode:             GlusterModeSubdir,
		Quota:            QuotaAuto,
		Replica:          DefaultReplica,
		VolumeNamePrefix: DefaultVolumeNamePrefix,
		Executor:         ExecutorLocal,
	}
	c.Gluster = g
	if mode != "" {
		g.Mode = strings.ToLower(mode)
	}
	volumeMode := g.Mode == GlusterModeVolume
	modeOnly := func(k string) {
		if _, ok := raw[k]; !ok {
			return
		}
		if volumeMode {
			bad(fmt.Errorf("%w: %s applies to mode subdir only: in mode volume carve names each volume itself (see %s)",
				ErrInvalid, k, GlusterVolumeNamePrefix))
		}
	}
	volumeOnly := func(k string) bool {
		if _, ok := raw[k]; !ok {
			return false
		}
		if !volumeMode {
			bad(fmt.Errorf("%w: %s applies to mode volume only (a volume per claim); add mode: volume or remove %s",
				ErrInvalid, k, k))
			return false
		}
		return true
	}

	if v := raw[GlusterServers]; v == "" {
		bad(fmt.Errorf("%w: %s is required for backend gluster (comma-separated pool members; the first serves the volfile)",
			ErrInvalid, GlusterServers))
	} else {
		for _, s := range strings.Split(v, ",") {
			s = strings.TrimSpace(s)
			if err := CheckHost(s); err != nil {
				bad(fmt.Errorf("%w: %s=%q: %w", ErrInvalid, GlusterServers, v, err))
				continue
			}
			if slices.Contains(g.Servers, s) {
				bad(fmt.Errorf("%w: %s=%q lists %s twice", ErrInvalid, GlusterServers, v, s))
				continue
			}
			g.Servers = append(g.Servers, s)
		}
	}

	modeOnly(GlusterVolume)
	if !volumeMode {
		g.Volume = raw[GlusterVolume]
		if g.Volume == "" {
			bad(fmt.Errorf("%w: %s is required for backend gluster in mode subdir (the existing volume holding the claims' directories)",
				ErrInvalid, GlusterVolume))
		} else if err := CheckGlusterVolumeName(g.Volume); err != nil {
			bad(fmt.Errorf("%w: %s=%q: %w", ErrInvalid, GlusterVolume, g.Volume, err))
		}
		// The directory engine and the volume ID call the volume the share.
		c.Share = g.Volume
	}

	if v, ok := raw[GlusterQuota]; ok {
		switch q := strings.ToLower(v); q {
		case QuotaAuto, QuotaGluster, QuotaNone:
			g.Quota = q
		default:
			bad(fmt.Errorf("%w: %s=%q: must be auto (limit when the volume has quota enabled), gluster or none",
				ErrInvalid, GlusterQuota, v))
		}
	}

	if volumeOnly(GlusterReplica) {
		v := raw[GlusterReplica]
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxReplica {
			bad(fmt.Errorf("%w: %s=%q: must be an integer between 1 and %d", ErrInvalid, GlusterReplica, v, maxReplica))
		} else {
			g.Replica = n
		}
	}
	if volumeOnly(GlusterBrickRootPaths) {
		g.BrickRootPaths = parseBrickRoots(raw[GlusterBrickRootPaths], bad)
	}
	if volumeMode {
		switch n := len(g.BrickRootPaths); {
		case raw[GlusterBrickRootPaths] == "":
			bad(fmt.Errorf("%w: %s is required in mode volume (e.g. h1:/bricks,h2:/bricks,h3:/bricks: one brick per entry)",
				ErrInvalid, GlusterBrickRootPaths))
		case n > 0 && n%g.Replica != 0:
			bad(fmt.Errorf("%w: %s has %d entries, not a multiple of %s=%d: each replica set needs %d bricks",
				ErrInvalid, GlusterBrickRootPaths, n, GlusterReplica, g.Replica, g.Replica))
		}
		if _, ok := raw[PathPattern]; ok {
			bad(fmt.Errorf("%w: %s does not apply in mode volume: the whole volume is the claim", ErrInvalid, PathPattern))
		}
	}
	if volumeOnly(GlusterVolumeOptions) {
		g.VolumeOptions = parseVolumeOptions(raw[GlusterVolumeOptions], bad)
	}
	if volumeOnly(GlusterVolumeNamePrefix) {
		v := raw[GlusterVolumeNamePrefix]
		if err := checkVolumePrefix(v); err != nil {
			bad(fmt.Errorf("%w: %s=%q: %w", ErrInvalid, GlusterVolumeNamePrefix, v, err))
		} else {
			g.VolumeNamePrefix = v
		}
	}
	if volumeOnly(GlusterForceCreate) {
		v := raw[GlusterForceCreate]
		b, err := strconv.ParseBool(v)
		if err != nil {
			bad(fmt.Errorf("%w: %s=%q: must be true or false", ErrInvalid, GlusterForceCreate, v))
		}
		g.ForceCreate = b
	}

	if v, ok := raw[GlusterExecutor]; ok {
		switch e := strings.ToLower(v); e {
		case ExecutorLocal, ExecutorSSH:
			g.Executor = e
		default:
			bad(fmt.Errorf("%w: %s=%q: must be local (the glusterd socket on carve's host) or ssh", ErrInvalid, GlusterExecutor, v))
		}
	}
	g.ExecutorSecretName = raw[GlusterExecutorSecret]
	g.ExecutorSecretNamespace = raw[GlusterExecutorSecretNS]
	switch {
	case g.Executor == ExecutorSSH && (g.ExecutorSecretName == "" || g.ExecutorSecretNamespace == ""):
		bad(fmt.Errorf("%w: executor ssh needs %s and %s (a Secret with keys username and ssh-privatekey)",
			ErrInvalid, GlusterExecutorSecret, GlusterExecutorSecretNS))
	case g.Executor == ExecutorLocal && (g.ExecutorSecretName != "" || g.ExecutorSecretNamespace != ""):
		bad(fmt.Errorf("%w: %s/%s are used only with executor ssh", ErrInvalid, GlusterExecutorSecret, GlusterExecutorSecretNS))
	}

	switch c.VolumeType {
	case "":
		c.VolumeType = VolumeTypeCSI
	case VolumeTypeNFS:
		bad(fmt.Errorf("%w: %s=nfs cannot carry a GlusterFS volume (Kubernetes removed the in-tree glusterfs plugin in 1.26): "+
			"remove %s or set it to csi", ErrInvalid, VolumeType, VolumeType))
	}
}

func parseBrickRoots(v string, bad func(error)) []BrickRoot {
	var roots []BrickRoot
	for _, e := range strings.Split(v, ",") {
		e = strings.TrimSpace(e)
		host, p, ok := splitHostPath(e)
		if !ok {
			bad(fmt.Errorf("%w: %s entry %q: want HOST:/ABSOLUTE/PATH", ErrInvalid, GlusterBrickRootPaths, e))
			continue
		}
		if err := CheckHost(host); err != nil {
			bad(fmt.Errorf("%w: %s entry %q: %w", ErrInvalid, GlusterBrickRootPaths, e, err))
			continue
		}
		if !strings.HasPrefix(p, "/") || path.Clean(p) != p || p == "/" {
			bad(fmt.Errorf("%w: %s entry %q: the path must be a clean absolute directory other than /", ErrInvalid, GlusterBrickRootPaths, e))
			continue
		}
		if strings.ContainsAny(p, ", \t\n") || checkChars(p) != nil {
			bad(fmt.Errorf("%w: %s entry %q: the path must not contain blanks, commas or control characters", ErrInvalid, GlusterBrickRootPaths, e))
			continue
		}
		r := BrickRoot{Host: host, Path: p}
		if slices.Contains(roots, r) {
			bad(fmt.Errorf("%w: %s lists %s twice", ErrInvalid, GlusterBrickRootPaths, r))
			continue
		}
		roots = append(roots, r)
	}
	return roots
}

// splitHostPath splits "host:/path" and "[v6]:/path".
func splitHostPath(s string) (string, string, bool) {
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]:")
		if end < 0 {
			return "", "", false
		}
		return s[:end+1], s[end+2:], true
	}
	i := strings.Index(s, ":/")
	if i <= 0 {
		return "", "", false
	}
	return s[:i], s[i+1:], true
}

// Options carve sets itself on a volume-mode volume; users may not override them.
var reservedOptions = []string{"storage.owner-uid", "storage.owner-gid", "features.quota", "features.quota-deem-statfs"}

func parseVolumeOptions(v string, bad func(error)) []VolumeOption {
	var opts []VolumeOption
	for _, e := range strings.Split(v, ",") {
		f := strings.Fields(e)
		if len(f) != 2 {
			bad(fmt.Errorf("%w: %s entry %q: want \"KEY VALUE\" or \"group NAME\" (entries separated by commas)",
				ErrInvalid, GlusterVolumeOptions, strings.TrimSpace(e)))
			continue
		}
		key, val := f[0], f[1]
		if !optionChars(key, false) || !optionChars(val, true) {
			bad(fmt.Errorf("%w: %s entry %q: keys are letters, digits, '.', '-', '_'; values must be printable",
				ErrInvalid, GlusterVolumeOptions, strings.TrimSpace(e)))
			continue
		}
		if strings.HasPrefix(strings.ToLower(key), "user.carve.") || slices.Contains(reservedOptions, strings.ToLower(key)) {
			bad(fmt.Errorf("%w: %s entry %q: carve sets %s itself", ErrInvalid, GlusterVolumeOptions, strings.TrimSpace(e), key))
			continue
		}
		opts = append(opts, VolumeOption{Key: key, Value: val})
	}
	return opts
}

func optionChars(s string, value bool) bool {
	for _, r := range s {
		ok := r == '.' || r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')
		if value {
			ok = r > ' ' && r < 0x7f && r != ','
		}
		if !ok {
			return false
		}
	}
	return s != ""
}

// CheckGlusterVolumeName applies Gluster's volume name rules (letters,
// digits, '-' and '_'; no leading '-') within the length a volume ID allows.
func CheckGlusterVolumeName(v string) error {
	switch {
	case v == "":
		return fmt.Errorf("empty volume name")
	case len(v) > 200:
		return fmt.Errorf("volume name of %d bytes is longer than 200", len(v))
	case strings.HasPrefix(v, "-"):
		return fmt.Errorf("volume name %q: %w", v, ErrOptionLike)
	}
	for _, r := range v {
		ok := r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')
		if !ok {
			return fmt.Errorf("volume name contains %q: Gluster allows only letters, digits, '-' and '_'", r)
		}
	}
	return nil
}

// checkVolumePrefix: the prefix must not contain '_', which separates the
// parts of a generated name <prefix>_<namespace>_<claim>_<uid>.
func checkVolumePrefix(v string) error {
	if len(v) > maxVolumeNamePrefix {
		return fmt.Errorf("longer than %d characters", maxVolumeNamePrefix)
	}
	if strings.Contains(v, "_") {
		return fmt.Errorf("must not contain '_', which separates the parts of a volume name")
	}
	return CheckGlusterVolumeName(v)
}

// VolumePerClaim reports whether each claim gets its own Gluster volume
// (backend gluster, mode volume) instead of a directory.
func (c *Config) VolumePerClaim() bool {
	return c.Gluster != nil && c.Gluster.Mode == GlusterModeVolume
}
