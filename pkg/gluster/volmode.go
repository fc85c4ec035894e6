package gluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/volid"
)

// Volume options carve keeps on a volume per claim: Gluster is the record,
// so a retry, a deletion or an expansion needs nothing else.
const (
	OptPV       = "user.carve.pv"       // the PV (or CSI volume) the volume was made for
	OptClaim    = "user.carve.claim"    // namespace/name of the claim
	OptCapacity = "user.carve.capacity" // requested size in bytes
	OptArchived = "user.carve.archived" // set when onDelete=archive stopped it
)

// maxVolumeName keeps generated names well inside what glusterd, brick
// paths and volume IDs accept.
const maxVolumeName = 96

// VolumeName returns <prefix>_<namespace>_<claim>_<short-uid>, squeezed
// into Gluster's name rules (letters, digits, '-', '_'). Namespace and claim
// are truncated to fit; the UID part keeps names unique. Without a UID it
// comes from name (pvc-<uid>), or a hash of name.
func VolumeName(prefix, namespace, claim, uid, name string) string {
	if uid == "" {
		// PV and CSI volume names are pvc-<claim UID>: both binaries then
		// name a claim's volume alike.
		uid = strings.TrimPrefix(name, "pvc-")
	}
	short := strings.ToLower(strings.ReplaceAll(uid, "-", ""))
	if len(short) < 8 || strings.Trim(short, "0123456789abcdef") != "" {
		sum := sha256.Sum256([]byte(uid + "\x00" + name))
		short = hex.EncodeToString(sum[:])
	}
	short = short[:8]
	ns, cl := nameChars(namespace), nameChars(claim)
	budget := maxVolumeName - len(prefix) - len(short) - 3
	if len(ns)+len(cl) > budget {
		half := budget / 2
		if len(ns) > half && len(cl) > budget-half {
			ns, cl = ns[:half], cl[:budget-half]
		} else if len(ns) > half {
			ns = ns[:budget-len(cl)]
		} else {
			cl = cl[:budget-len(ns)]
		}
	}
	return prefix + "_" + ns + "_" + cl + "_" + short
}

// nameChars maps characters Gluster refuses in names ('.' of claim names)
// to '-'; '_' too, since it separates the parts.
func nameChars(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '-' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			return r
		}
		return '-'
	}, s)
}

// CreateVolume implements backend.VolumeCarver: creates (brick directories
// under brickRootPaths, created by glusterd), records the owner, applies
// volumeOptions, starts, sets the root's owner and mode, and enforces the
// size with quota on "/" when asked. Every step is idempotent, so a retry
// after any failure finishes the job.
func (b *Backend) CreateVolume(ctx context.Context, req backend.VolumeRequest) (*backend.CarvedVolume, error) {
	cfg := req.Config
	if cfg == nil || !cfg.VolumePerClaim() {
		return nil, fmt.Errorf("%w: CreateVolume needs a StorageClass with backend gluster and mode volume", backend.ErrInvalid)
	}
	g := cfg.Gluster
	b.remember(cfg)
	name := VolumeName(g.VolumeNamePrefix, req.Namespace, req.Claim, req.ClaimUID, req.Name)
	id := volid.ID{Backend: params.BackendGluster, Servers: g.Servers, Share: name, OnDelete: cfg.OnDelete}
	if err := id.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", backend.ErrInvalid, err)
	}
	logger := klog.FromContext(ctx).WithValues("glusterVolume", name)
	ctx = klog.NewContext(ctx, logger)
	cli, err := b.CLI(ctx, g.Servers)
	if err != nil {
		return nil, err
	}

	res := &backend.CarvedVolume{ID: id, GID: req.Owner.GID}
	vol, err := cli.VolumeInfo(ctx, name)
	switch {
	case errors.Is(err, backend.ErrNotFound):
		if vol, err = b.createVolume(ctx, cli, name, g); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	}
	owner, _ := vol.Option(OptPV)
	switch {
	case owner != "" && owner != req.Name:
		return nil, fmt.Errorf("%w: Gluster volume %s already exists for PersistentVolume %s", backend.ErrConflict, name, owner)
	case owner == req.Name:
		res.Existing = true
		if v, ok := vol.Option("storage.owner-gid"); ok {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				res.GID = n
			}
		}
		if v, ok := vol.Option(OptCapacity); ok {
			res.CapacityBytes, _ = strconv.ParseInt(v, 10, 64)
		}
	default:
		// New, or left unfinished by an earlier try (the owner is recorded
		// last): the name carries the claim's UID, so nobody else made it.
		if err := b.initVolume(ctx, cli, vol, req); err != nil {
			return nil, err
		}
	}

	if vol.Status != StatusStarted {
		if _, err := cli.Run(ctx, "volume", "start", name); err != nil && !contains(err, "already started") {
			return nil, fmt.Errorf("start Gluster volume %s: %w", name, err)
		}
	}
	if !res.Existing {
		if w := b.initRoot(ctx, g.Servers, name, req); w != "" {
			res.Warnings = append(res.Warnings, w)
		}
	}
	// A retry after an expansion keeps the larger recorded size.
	w, err := b.volumeQuota(ctx, cli, id, vol, g.Quota, max(req.SizeBytes, res.CapacityBytes))
	if err != nil {
		return nil, err
	}
	res.Warnings = append(res.Warnings, w...)
	if !res.Existing {
		if _, err := cli.Run(ctx, "volume", "set", name, OptPV, req.Name); err != nil {
			return nil, fmt.Errorf("record owner of Gluster volume %s: %w", name, err)
		}
	}
	logger.V(2).Info("Gluster volume per claim ready", "volume", req.Name, "existing", res.Existing)
	return res, nil
}

func (b *Backend) createVolume(ctx context.Context, cli *CLI, name string, g *params.GlusterConfig) (*Volume, error) {
	args := []string{"volume", "create", name}
	if g.Replica > 1 {
		args = append(args, "replica", strconv.Itoa(g.Replica))
	}
	for _, r := range g.BrickRootPaths {
		args = append(args, r.Host+":"+path.Join(r.Path, name))
	}
	if g.ForceCreate {
		args = append(args, "force")
	}
	start := time.Now()
	_, err := cli.Run(ctx, args...)
	switch {
	case err == nil:
		klog.FromContext(ctx).Info("Created Gluster volume", "bricks", args[3:], "duration", time.Since(start))
		// Just created: no options, not started. Asking glusterd would
		// only cost a round trip.
		return &Volume{Name: name, Status: StatusCreated, StatusStr: "Created"}, nil
	case contains(err, "already exists"):
		// Another attempt won the race; carry on with its volume.
	case contains(err, "'force'"):
		return nil, fmt.Errorf("%w: create Gluster volume %s: %v; set forceCreate: \"true\" in the StorageClass to override Gluster's placement checks",
			backend.ErrInvalid, name, err)
	case contains(err, "failed to create brick directory"):
		return nil, fmt.Errorf("%w: create Gluster volume %s: %v; every brickRootPaths directory must exist on its host",
			backend.ErrInvalid, name, err)
	case contains(err, "already part of a volume"):
		return nil, fmt.Errorf("%w: create Gluster volume %s: %v", backend.ErrConflict, name, err)
	default:
		return nil, fmt.Errorf("create Gluster volume %s: %w", name, err)
	}
	return cli.VolumeInfo(ctx, name)
}

// initVolume applies carve's and the user's options to a new volume.
func (b *Backend) initVolume(ctx context.Context, cli *CLI, vol *Volume, req backend.VolumeRequest) error {
	set := []string{"volume", "set", vol.Name,
		OptClaim, req.Namespace + "/" + req.Claim, OptCapacity, strconv.FormatInt(req.SizeBytes, 10)}
	if req.Owner.GID >= 0 {
		// glusterd applies these to every brick root at brick start, so a
		// replaced brick gets them too.
		set = append(set, "storage.owner-uid", strconv.FormatInt(req.Owner.UID, 10), "storage.owner-gid", strconv.FormatInt(req.Owner.GID, 10))
	}
	if _, err := cli.Run(ctx, set...); err != nil {
		return fmt.Errorf("set up Gluster volume %s: %w", vol.Name, err)
	}
	for _, o := range req.Config.Gluster.VolumeOptions {
		if _, err := cli.Run(ctx, "volume", "set", vol.Name, o.Key, o.Value); err != nil {
			return fmt.Errorf("%w: volumeOptions %q on Gluster volume %s: %v", backend.ErrInvalid, o.Key+" "+o.Value, vol.Name, err)
		}
	}
	return nil
}

// initRoot gives the volume's root the claim's owner and mode (setgid 2770
// by default) through a short-lived FUSE mount; Gluster has no option for
// the mode. Without a mounts directory it returns a warning instead.
func (b *Backend) initRoot(ctx context.Context, servers []string, name string, req backend.VolumeRequest) string {
	r := b.opts.Resolver
	mode := req.Owner.Mode
	if r.Mounter == nil || r.MountsDir == "" {
		return fmt.Sprintf("the root of Gluster volume %s keeps Gluster's mode 0755 (carve has no mounts directory to set %#o)", name, mode)
	}
	logger := klog.FromContext(ctx)
	dir, err := os.MkdirTemp(r.MountsDir, "init-")
	if err == nil {
		defer os.Remove(dir)
		err = r.Mounter.MountSensitiveWithoutSystemd(Source(servers[0], name, nil), dir, FSType, mountOptions(servers, nil), nil)
	}
	if err == nil {
		err = checkFUSE(dir)
		if err == nil {
			gid := -1
			if req.Owner.GID >= 0 {
				gid = int(req.Owner.GID)
			}
			// Chown before chmod: chown clears the setgid bit.
			if err = os.Lchown(dir, int(req.Owner.UID), gid); err == nil {
				err = os.Chmod(dir, os.FileMode(mode&0o777)|modeBits(mode))
			}
		}
		if uerr := r.Mounter.Unmount(dir); uerr != nil {
			logger.Error(uerr, "Unmounting a volume's set-up mount failed", "path", dir)
		}
	}
	if err != nil {
		logger.Error(err, "Setting the owner and mode of a new Gluster volume's root failed")
		return fmt.Sprintf("the root of Gluster volume %s keeps Gluster's mode 0755: setting %#o failed: %v", name, mode, err)
	}
	return ""
}

func modeBits(m uint32) os.FileMode {
	var fm os.FileMode
	if m&0o4000 != 0 {
		fm |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		fm |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		fm |= os.ModeSticky
	}
	return fm
}

// volumeQuota enforces a volume per claim's size with quota on "/" when the
// StorageClass says quota: gluster. A new volume has quota off, so auto
// means no limit here. vol is the volume as CreateVolume found or made it:
// its quota settings are not asked again.
func (b *Backend) volumeQuota(ctx context.Context, cli *CLI, id volid.ID, vol *Volume, policy string, bytes int64) ([]string, error) {
	if bytes <= 0 {
		return nil, nil
	}
	if policy != params.QuotaGluster {
		return []string{fmt.Sprintf("the claim's size (%s) is not enforced: Gluster volume %s has no quota (set quota: gluster in the StorageClass to enforce it)",
			humanBytes(bytes), id.Share)}, nil
	}
	var st quotaState
	if vol.QuotaEnabled() {
		deem, _ := vol.Option("features.quota-deem-statfs")
		st.deemStatfs = isOn(deem)
	} else {
		_, err := cli.Run(ctx, "volume", "quota", id.Share, "enable")
		switch {
		case err == nil:
			// glusterd turns quota-deem-statfs on with quota itself.
			st.deemStatfs = true
		case contains(err, "already enabled"):
			// Enabled by an earlier attempt or someone else: deem-statfs
			// unknown, so limit sets it.
		default:
			return nil, fmt.Errorf("enable quota on Gluster volume %s: %w", id.Share, err)
		}
	}
	return nil, b.limit(ctx, cli, id, st, "/", bytes)
}

// DeleteVolume implements backend.VolumeCarver. archive stops the volume and
// keeps it; delete stops it, removes its brick directories and deletes it.
func (b *Backend) DeleteVolume(ctx context.Context, name string, id volid.ID) (backend.VolumeOutcome, error) {
	logger := klog.FromContext(ctx).WithValues("glusterVolume", id.Share)
	ctx = klog.NewContext(ctx, logger)
	cli, err := b.CLI(ctx, id.Servers)
	if err != nil {
		return backend.VolumeOutcome{}, err
	}
	vol, err := cli.VolumeInfo(ctx, id.Share)
	if errors.Is(err, backend.ErrNotFound) {
		return backend.VolumeOutcome{Action: backend.ActionAbsent}, nil
	}
	if err != nil {
		return backend.VolumeOutcome{}, err
	}
	owner, _ := vol.Option(OptPV)
	switch {
	case owner == "":
		return backend.VolumeOutcome{}, fmt.Errorf("%w: Gluster volume %s has no %s option, so carve did not create it and will not delete it; "+
			"delete it by hand if it is no longer needed", backend.ErrConflict, id.Share, OptPV)
	case name != "" && owner != name:
		logger.Info("Keeping Gluster volume: it belongs to another PersistentVolume", "owner", owner)
		return backend.VolumeOutcome{Action: backend.ActionKeptInUse, Where: owner}, nil
	}

	switch id.OnDelete {
	case params.OnDeleteArchive:
		if vol.Status == StatusStarted {
			if _, err := cli.Run(ctx, "volume", "stop", id.Share); err != nil && !contains(err, "not in the started state") {
				return backend.VolumeOutcome{}, fmt.Errorf("stop Gluster volume %s: %w", id.Share, err)
			}
		}
		if _, ok := vol.Option(OptArchived); !ok {
			stamp := b.opts.Now().UTC().Format(time.RFC3339)
			if _, err := cli.Run(ctx, "volume", "set", id.Share, OptArchived, stamp); err != nil {
				return backend.VolumeOutcome{}, fmt.Errorf("mark Gluster volume %s archived: %w", id.Share, err)
			}
		}
		logger.Info("Archived Gluster volume: stopped and kept")
		return backend.VolumeOutcome{Action: backend.ActionArchived, Where: id.Share}, nil
	case params.OnDeleteDelete:
	default:
		return backend.VolumeOutcome{}, fmt.Errorf("%w: onDelete %q", backend.ErrInvalid, id.OnDelete)
	}

	// Stop, remove the bricks, then delete: a failure at any step leaves
	// the volume, so a retry finds it and finishes (deleting first would
	// lose the brick list).
	if _, err := cli.Run(ctx, "volume", "stop", id.Share, "force"); err != nil && !contains(err, "not in the started state") {
		return backend.VolumeOutcome{}, fmt.Errorf("stop Gluster volume %s: %w", id.Share, err)
	}
	leftovers, err := b.removeBricks(ctx, cli, vol)
	if err != nil {
		return backend.VolumeOutcome{}, err
	}
	if _, err := cli.Run(ctx, "volume", "delete", id.Share); err != nil && !errors.Is(err, backend.ErrNotFound) {
		return backend.VolumeOutcome{}, fmt.Errorf("delete Gluster volume %s: %w", id.Share, err)
	}
	out := backend.VolumeOutcome{Action: backend.ActionDeleted}
	if len(leftovers) > 0 {
		out.Where = "brick directories left for an administrator to remove: " + strings.Join(leftovers, ", ")
		logger.Info("Deleted Gluster volume; some brick directories are out of carve's reach", "leftovers", leftovers)
	} else {
		logger.Info("Deleted Gluster volume and its bricks")
	}
	return out, nil
}

// removeBricks removes the brick directories of a stopped volume: local
// ones directly (executor local, bricks on glusterd's own host), others
// through the executor (ssh). Bricks it cannot reach are returned.
func (b *Backend) removeBricks(ctx context.Context, cli *CLI, vol *Volume) ([]string, error) {
	var leftovers []string
	localUUID := ""
	if _, ok := cli.Executor().(*LocalExecutor); ok {
		u, err := cli.LocalUUID(ctx)
		if err != nil {
			return nil, err
		}
		localUUID = u
	}
	runner, _ := cli.Executor().(HostRunner)
	for _, br := range vol.Bricks {
		if err := checkBrickPath(br.Path, vol.Name); err != nil {
			klog.FromContext(ctx).Info("Not removing an unexpected brick path", "brick", br.String(), "reason", err)
			leftovers = append(leftovers, br.String())
			continue
		}
		switch {
		case localUUID != "" && br.HostUUID == localUUID:
			if err := removeLocalBrick(br.Path); err != nil {
				return nil, fmt.Errorf("%w: remove brick %s: %v", backend.ErrUnavailable, br, err)
			}
		case runner != nil:
			if _, err := runner.RunOn(ctx, br.Host, []string{"rm", "-rf", "--one-file-system", "--", br.Path}); err != nil {
				return nil, fmt.Errorf("%w: remove brick %s: %v", backend.ErrUnavailable, br, err)
			}
		default:
			leftovers = append(leftovers, br.String())
		}
	}
	return leftovers, nil
}

// checkBrickPath: carve only removes bricks it named, <root>/<volume>.
func checkBrickPath(p, volume string) error {
	switch {
	case !strings.HasPrefix(p, "/") || path.Clean(p) != p:
		return fmt.Errorf("not a clean absolute path")
	case path.Base(p) != volume || path.Dir(p) == "/":
		return fmt.Errorf("not <brickRoot>/%s", volume)
	}
	return nil
}

func removeLocalBrick(p string) error {
	fi, err := os.Lstat(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", p)
	}
	return os.RemoveAll(filepath.Clean(p))
}

// ExpandVolume implements backend.VolumeCarver: records the new size and
// raises the quota on "/" when the volume has quota enabled.
func (b *Backend) ExpandVolume(ctx context.Context, id volid.ID, bytes int64) (int64, error) {
	cli, err := b.CLI(ctx, id.Servers)
	if err != nil {
		return 0, err
	}
	vol, err := cli.VolumeInfo(ctx, id.Share)
	if err != nil {
		return 0, err
	}
	if v, ok := vol.Option(OptCapacity); ok {
		if cur, err := strconv.ParseInt(v, 10, 64); err == nil && cur >= bytes {
			return cur, nil
		}
	}
	if vol.QuotaEnabled() {
		deem, _ := vol.Option("features.quota-deem-statfs")
		if err := b.limit(ctx, cli, id, quotaState{deemStatfs: isOn(deem)}, "/", bytes); err != nil {
			return 0, err
		}
	}
	if _, err := cli.Run(ctx, "volume", "set", id.Share, OptCapacity, strconv.FormatInt(bytes, 10)); err != nil {
		return 0, fmt.Errorf("record size of Gluster volume %s: %w", id.Share, err)
	}
	return bytes, nil
}

// contains reports whether a command error's Gluster message contains s.
func contains(err error, s string) bool {
	var ce *CommandError
	if errors.As(err, &ce) {
		return strings.Contains(strings.ToLower(ce.Message), strings.ToLower(s))
	}
	return false
}
