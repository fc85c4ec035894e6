package params

import (
	"fmt"
	"strconv"
	"strings"
)

// Users arrive with StorageClasses written for other provisioners (issue 15).
// normalise rewrites their parameter names and values into carve's, once,
// before Parse: the rest of carve only ever sees canonical keys and a Config.

// The anchors: provisioners whose parameter names carve accepts.
const (
	AnchorNFSSubdir = "nfs-subdir-external-provisioner"
	AnchorCSINFS    = "csi-driver-nfs"
	AnchorHeketi    = "kubernetes.io/glusterfs" // the in-tree plugin, talking to heketi
)

// setting is one canonical parameter an alias stands for.
type setting struct{ key, value string }

// Alias is a parameter another provisioner names differently from carve.
type Alias struct {
	Key       string // as the anchor spells it; matched case-insensitively like every key
	Anchor    string
	Canonical string // carve's key(s) it sets, for docs and messages
	// applies reports whether a value is the anchor's (volumetype is also
	// carve's volumeType, told apart by the value); nil means always.
	applies func(v string) bool
	// translate gives carve's settings for the anchor's value. No settings
	// means "carve's default". Errors name the alias.
	translate func(key, v string) ([]setting, error)
}

// Aliases is the one table of other provisioners' parameter names. A name that
// differs from carve's only in case (volumeoptions, gidmin) needs no entry:
// every key is matched case-insensitively, as the in-tree glusterfs plugin did.
var Aliases = []Alias{
	{Key: "subDir", Anchor: AnchorCSINFS, Canonical: PathPattern, translate: same(PathPattern)},
	{Key: "mountPermissions", Anchor: AnchorCSINFS, Canonical: Mode, translate: mountPermissions},
	{Key: "archiveOnDelete", Anchor: AnchorNFSSubdir, Canonical: OnDelete, translate: archiveOnDelete},
	{Key: "volumetype", Anchor: AnchorHeketi, Canonical: Mode + ", " + GlusterReplica, applies: isHeketiVolumeType, translate: heketiVolumeType},
}

// Refused names another provisioner uses for something carve does differently.
type Refused struct {
	Key     string
	Anchor  string
	Instead string // what carve uses instead
}

const heketiREST = "carve talks to glusterd through the gluster CLI (executor local or ssh), not heketi's REST API: " +
	"set servers and, for ssh, executor: ssh with executorSecretName/executorSecretNamespace"

// RefusedKeys are the heketi-only parameters of the in-tree glusterfs plugin.
var RefusedKeys = []Refused{
	{"resturl", AnchorHeketi, heketiREST},
	{"restuser", AnchorHeketi, heketiREST},
	{"restuserkey", AnchorHeketi, heketiREST},
	{"restauthenabled", AnchorHeketi, heketiREST},
	{"secretName", AnchorHeketi, "heketi's admin key is not needed: " +
		"for executor ssh, carve reads an ssh key from executorSecretName/executorSecretNamespace"},
	{"secretNamespace", AnchorHeketi, "heketi's admin key is not needed: " +
		"for executor ssh, carve reads an ssh key from executorSecretName/executorSecretNamespace"},
	{"clusterid", AnchorHeketi, "carve uses the trusted pool of servers and the bricks listed in brickRootPaths, not a heketi cluster"},
	{"snapfactor", AnchorHeketi, "carve does not size thin pools: bricks are directories under brickRootPaths"},
	{"customepnameprefix", AnchorHeketi, "carve creates no Endpoints or Service: its node plugin mounts from servers (spec.csi PVs)"},
}

// canonicalKeys maps every lowercased carve key to its spelling.
var canonicalKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range known {
		m[strings.ToLower(k)] = k
	}
	return m
}()

func same(key string) func(string, string) ([]setting, error) {
	return func(_, v string) ([]setting, error) { return []setting{{key, v}}, nil }
}

// mountPermissions is octal, as carve's mode. csi-driver-nfs's 0 means
// "do not chmod, keep what mkdir made": carve always sets a mode on a new
// directory, and a literal 0000 would lock out every non-root pod, so 0 is carve's
// default mode (2770 with a per-volume GID or fsGroup).
func mountPermissions(k, v string) ([]setting, error) {
	m, err := strconv.ParseUint(v, 8, 32)
	if err != nil || m > 0o7777 {
		return nil, fmt.Errorf("%w: %s=%q (%s): must be an octal permission such as 0777", ErrInvalid, k, v, AnchorCSINFS)
	}
	if m == 0 {
		return nil, nil
	}
	return []setting{{Mode, fmt.Sprintf("%04o", m)}}, nil
}

// archiveOnDelete: nfs-subdir deletes the directory when it is false and
// archives it otherwise; it parses the value with strconv.ParseBool.
func archiveOnDelete(k, v string) ([]setting, error) {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return nil, fmt.Errorf("%w: %s=%q (%s): must be true (archive) or false (delete)", ErrInvalid, k, v, AnchorNFSSubdir)
	}
	if b {
		return []setting{{OnDelete, string(OnDeleteArchive)}}, nil
	}
	return []setting{{OnDelete, string(OnDeleteDelete)}}, nil
}

// isHeketiVolumeType: nfs and csi (and empty) are carve's volumeType, the PV
// type; anything else is the in-tree plugin's durability.
func isHeketiVolumeType(v string) bool {
	switch strings.ToLower(v) {
	case "", VolumeTypeNFS, VolumeTypeCSI:
		return false
	}
	return true
}

// heketiVolumeType: replicate[:N] and none were heketi volumes per claim, which
// is carve's mode volume; heketi's default count was 3, as carve's replica.
func heketiVolumeType(k, v string) ([]setting, error) {
	f := strings.Split(strings.ToLower(strings.TrimSpace(v)), ":")
	switch f[0] {
	case "replicate":
		n := DefaultReplica
		if len(f) > 1 {
			var err error
			if n, err = strconv.Atoi(f[1]); err != nil || n < 1 || n > maxReplica || len(f) > 2 {
				return nil, fmt.Errorf("%w: %s=%q (%s): want replicate:N with N between 1 and %d",
					ErrInvalid, k, v, AnchorHeketi, maxReplica)
			}
		}
		return []setting{{Mode, GlusterModeVolume}, {GlusterReplica, strconv.Itoa(n)}}, nil
	case "none":
		return []setting{{Mode, GlusterModeVolume}, {GlusterReplica, "1"}}, nil
	case "disperse":
		return nil, fmt.Errorf("%w: %s=%q (%s): carve does not create dispersed (erasure-coded) volumes; "+
			"use replicate:N or none (mode volume with replica N or 1)", ErrInvalid, k, v, AnchorHeketi)
	}
	return nil, fmt.Errorf("%w: %s=%q: carve's %s is nfs or csi (the PV type); as %s's volumetype it must be replicate:N or none",
		ErrInvalid, k, v, VolumeType, AnchorHeketi)
}

// subdirPatternVars are nfs-subdir-external-provisioner's pathPattern variables.
var subdirPatternVars = map[string]string{
	"namespace": "${pvc.metadata.namespace}",
	"name":      "${pvc.metadata.name}",
}

// translateSubdirPattern rewrites nfs-subdir's ${.PVC.namespace}, ${.PVC.name},
// ${.PVC.labels.KEY} and ${.PVC.annotations.KEY} into carve's variables.
// nfs-subdir joins the pattern onto the share, so a leading or trailing "/"
// means nothing there and is dropped. Unlike nfs-subdir, which renders an
// unknown variable or a missing label as "", carve refuses both.
func translateSubdirPattern(k, v string) (string, error) {
	var b strings.Builder
	rest := v
	for {
		i := strings.Index(rest, "${.PVC.")
		if i < 0 {
			b.WriteString(rest)
			break
		}
		b.WriteString(rest[:i])
		end := strings.Index(rest[i:], "}")
		if end < 0 {
			return "", fmt.Errorf("%w: %s=%q (%s syntax): unterminated variable %q", ErrInvalid, k, v, AnchorNFSSubdir, rest[i:])
		}
		name := rest[i+len("${.PVC.") : i+end]
		rest = rest[i+end+1:]
		if s, ok := subdirPatternVars[name]; ok {
			b.WriteString(s)
			continue
		}
		kind, key, ok := strings.Cut(name, ".")
		if (kind != "labels" && kind != "annotations") || !ok || key == "" || strings.Contains(key, "'") && strings.Contains(key, `"`) {
			return "", fmt.Errorf("%w: %s=%q (%s syntax): unknown variable ${.PVC.%s} (known: ${.PVC.namespace}, ${.PVC.name}, "+
				"${.PVC.labels.KEY}, ${.PVC.annotations.KEY})", ErrInvalid, k, v, AnchorNFSSubdir, name)
		}
		q := "'"
		if strings.Contains(key, q) {
			q = `"`
		}
		fmt.Fprintf(&b, "${pvc.metadata.%s[%s%s%s]}", kind, q, key, q)
	}
	return strings.Trim(b.String(), "/"), nil
}

// source is where a canonical setting came from, for messages.
type source struct {
	key, value, anchor string
}

func (s source) describe(canonical, value string) string {
	if s.anchor == "" && s.value == value {
		return fmt.Sprintf("%s=%q", s.key, s.value)
	}
	if s.anchor == "" {
		return fmt.Sprintf("%s=%q means %s=%q", s.key, s.value, canonical, value)
	}
	return fmt.Sprintf("%s=%q (%s) means %s=%q", s.key, s.value, s.anchor, canonical, value)
}

// sameMeaning compares two values of one canonical key as Parse reads them.
func sameMeaning(key, a, b string) bool {
	switch key {
	case Mode:
		x, errA := strconv.ParseUint(a, 8, 32)
		y, errB := strconv.ParseUint(b, 8, 32)
		if errA == nil && errB == nil {
			return x == y
		}
		return strings.EqualFold(a, b)
	case GlusterReplica:
		x, errA := strconv.Atoi(a)
		y, errB := strconv.Atoi(b)
		return errA == nil && errB == nil && x == y
	case Backend, OnDelete, VolumeType, GlusterQuota, GlusterExecutor, BtrfsExecutor:
		return strings.EqualFold(a, b)
	}
	return a == b
}

// normalise maps in onto carve's canonical keys. Unknown keys are passed
// through under their own name for Parse to refuse. notes say how aliases
// were read, for error messages that otherwise name only carve's keys.
func normalise(in map[string]string) (out map[string]string, notes []string, errs []error) {
	out = make(map[string]string, len(in))
	from := map[string]source{}     // canonical key -> who set it
	byLower := map[string]string{}  // lowercased key -> key as written
	aliases := map[string]Alias{}   // lowercased alias -> alias
	refused := map[string]Refused{} // lowercased key -> refusal
	for _, a := range Aliases {
		aliases[strings.ToLower(a.Key)] = a
	}
	for _, r := range RefusedKeys {
		refused[strings.ToLower(r.Key)] = r
	}
	bad := func(err error) { errs = append(errs, err) }
	var heketiVolume *source // volumetype given as the in-tree plugin's

	for _, k := range sortedKeys(in) {
		v := in[k]
		if strings.HasPrefix(k, csiPrefix) {
			out[k] = v
			continue
		}
		lk := strings.ToLower(k)
		if prev, ok := byLower[lk]; ok {
			bad(fmt.Errorf("%w: %s and %s differ only in case: carve matches parameter names case-insensitively, "+
				"so they are one parameter given twice; keep one", ErrInvalid, prev, k))
			continue
		}
		byLower[lk] = k
		if r, ok := refused[lk]; ok {
			bad(fmt.Errorf("%w: %s (%s) is not supported: %s", ErrInvalid, k, r.Anchor, r.Instead))
			continue
		}
		src := source{key: k, value: v}
		var sets []setting
		if a, ok := aliases[lk]; ok && (a.applies == nil || a.applies(v)) {
			s, err := a.translate(k, v)
			if err != nil {
				bad(err)
				continue
			}
			sets, src.anchor = s, a.Anchor
			if a.Anchor == AnchorHeketi && len(s) > 0 && s[0].key == Mode {
				heketiVolume = &src
			}
			notes = append(notes, fmt.Sprintf("%s (%s) as %s", k, a.Anchor, describeSettings(s)))
		} else if c, ok := canonicalKeys[lk]; ok {
			if c == PathPattern && strings.Contains(v, "${.PVC.") {
				t, err := translateSubdirPattern(k, v)
				if err != nil {
					bad(err)
					continue
				}
				src.anchor = AnchorNFSSubdir + " syntax"
				notes = append(notes, fmt.Sprintf("%s=%q (%s syntax) as %s=%q", k, v, AnchorNFSSubdir, PathPattern, t))
				v = t
			}
			sets = []setting{{c, v}}
		} else {
			out[k] = v // unknown: Parse refuses it by name
			continue
		}
		for _, s := range sets {
			prev, ok := from[s.key]
			if !ok {
				out[s.key], from[s.key] = s.value, src
				continue
			}
			if !sameMeaning(s.key, out[s.key], s.value) {
				bad(fmt.Errorf("%w: %s, but %s: keep one of %s and %s", ErrInvalid,
					src.describe(s.key, s.value), prev.describe(s.key, out[s.key]), prev.key, k))
			}
		}
	}

	// heketi chose bricks from its own device inventory; carve needs to be told.
	if src := heketiVolume; src != nil && out[GlusterBrickRootPaths] == "" {
		bad(fmt.Errorf("%w: %s=%q (%s) makes a Gluster volume per claim, and %s is required for that: "+
			"heketi chose bricks from its own devices, carve creates each brick under a directory you list "+
			"(e.g. g1:/bricks,g2:/bricks,g3:/bricks)", ErrInvalid, src.key, src.value, AnchorHeketi, GlusterBrickRootPaths))
	}
	return out, notes, errs
}

func describeSettings(s []setting) string {
	if len(s) == 0 {
		return "carve's default"
	}
	parts := make([]string, len(s))
	for i, x := range s {
		parts[i] = x.key + ": " + x.value
	}
	return strings.Join(parts, ", ")
}

// aliasNames lists the accepted alias keys, for the unknown-key message.
func aliasNames() string {
	names := make([]string, len(Aliases))
	for i, a := range Aliases {
		names[i] = a.Key
	}
	return strings.Join(names, ", ")
}

// ParseAnyPattern parses a pathPattern written in carve's syntax or in
// nfs-subdir's (${.PVC.namespace}, ...), which it translates as a
// StorageClass's pathPattern is: for tools that read another provisioner's
// layout (carve-adopt).
func ParseAnyPattern(s string) (*Pattern, error) {
	if strings.Contains(s, "${.PVC.") {
		t, err := translateSubdirPattern(PathPattern, s)
		if err != nil {
			return nil, err
		}
		s = t
	}
	return ParsePattern(s)
}
