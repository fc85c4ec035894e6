// Package gluster is carve's GlusterFS backend.
//
// Mode subdir (the default) carves one directory per claim on an existing
// volume, through a FUSE mount of it, with the same directory engine as NFS,
// and enforces sizes with Gluster's directory quota. Mode volume creates a
// dedicated volume per claim. Management goes through the gluster CLI
// (`--mode=script --xml`, parsed strictly) run by an Executor on a pool
// member; Gluster itself is the only record: no database, and everything
// deletion needs is in the volume ID or in the volume's own options.
package gluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/sharemount"
	"github.com/carve-csi/carve/pkg/sshexec"
	"github.com/carve-csi/carve/pkg/volid"
)

// FSType is the mount type of Gluster's FUSE client.
const FSType = "glusterfs"

// fuseSuperMagic is statfs f_type of every FUSE mount (FUSE_SUPER_MAGIC).
const fuseSuperMagic = 0x65735546

// ExecutorSpec says how to reach a pool's glusterd: a StorageClass's
// executor, executorSecretName and executorSecretNamespace.
type ExecutorSpec struct {
	Kind            string // params.ExecutorLocal or params.ExecutorSSH
	SecretName      string
	SecretNamespace string
}

func (s ExecutorSpec) String() string {
	if s.Kind == params.ExecutorSSH {
		return "ssh:" + s.SecretNamespace + "/" + s.SecretName
	}
	return s.Kind
}

// Options configure the backend.
type Options struct {
	// Resolver gives local paths of volumes: --mount-map entries
	// (SERVER:VOLUME=LOCALPATH) or on-demand FUSE mounts under its MountsDir.
	Resolver *sharemount.Resolver
	// GlusterdSocket is the socket of executor local; "" is the CLI default.
	GlusterdSocket string
	// SecretData returns a Secret's data, for executor ssh. nil refuses ssh.
	SecretData func(ctx context.Context, namespace, name string) (map[string][]byte, error)
	// DefaultExecutor reaches pools no StorageClass has named since carve
	// started: volume IDs carry no executor, so a deletion or expansion
	// after a restart uses this. Zero value: local.
	DefaultExecutor ExecutorSpec
	// StateDir keeps ssh keys and known_hosts; "" is a private temp dir.
	StateDir string
	// NewExecutor replaces the executor construction (tests).
	NewExecutor func(ctx context.Context, servers []string, spec ExecutorSpec) (Executor, error)
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}

// Backend is the Gluster backend. It implements backend.Backend,
// backend.ConfiguredLimiter and backend.VolumeCarver.
type Backend struct {
	opts Options

	mu        sync.Mutex
	shares    map[string]*dirvol.Share // local path → engine, so its lock is shared
	specs     map[string]ExecutorSpec  // pool key → executor last named by a StorageClass
	poolLocks map[string]*sync.Mutex   // one management transaction per pool at a time
	execs     map[string]cachedExec
	quotas    map[string]quotaState // pool key + "/" + volume → quota settings seen
	// noQuotaCache asks glusterd every time (BenchmarkGlusterCreate's
	// "before").
	noQuotaCache bool
}

// quotaState is what carve last saw of a volume's quota settings. Only
// "enabled" is remembered: it proves itself on every use, since
// limit-usage fails once quota is switched off. "Disabled" is always asked
// again, so a claim made just after an administrator enables quota is
// enforced.
type quotaState struct {
	deemStatfs bool // features.quota-deem-statfs is on
	seen       time.Time
}

// quotaStateTTL bounds how long a remembered state is trusted: an
// administrator turning quota-deem-statfs off is noticed (and undone) after
// at most this long.
const quotaStateTTL = time.Minute

type cachedExec struct {
	exec    Executor
	created time.Time
}

// execTTL bounds how long an ssh executor (its key) is reused, so a rotated
// Secret takes effect.
const execTTL = 5 * time.Minute

var (
	_ backend.Backend           = (*Backend)(nil)
	_ backend.ConfiguredLimiter = (*Backend)(nil)
	_ backend.VolumeCarver      = (*Backend)(nil)
)

// New returns the Gluster backend.
func New(opts Options) *Backend {
	if opts.Resolver == nil {
		opts.Resolver = &sharemount.Resolver{}
	}
	if opts.DefaultExecutor.Kind == "" {
		opts.DefaultExecutor.Kind = params.ExecutorLocal
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Backend{opts: opts, shares: map[string]*dirvol.Share{}, specs: map[string]ExecutorSpec{},
		poolLocks: map[string]*sync.Mutex{}, execs: map[string]cachedExec{}, quotas: map[string]quotaState{}}
}

// Close ends the CLI sessions of the backend's executors (they would end
// by themselves after a while without commands).
func (b *Backend) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ce := range b.execs {
		if c, ok := ce.exec.(interface{ Close() }); ok {
			c.Close()
		}
	}
}

// Kind implements backend.Backend.
func (b *Backend) Kind() string { return params.BackendGluster }

// Servers implements backend.Backend. It is the first call the volume
// service makes with a StorageClass, so the backend also remembers here
// which executor reaches this pool: later calls (Share, SetLimit,
// RemoveLimit, DeleteVolume) carry only a volume ID.
func (b *Backend) Servers(cfg *params.Config) []string {
	if cfg.Gluster == nil {
		return nil
	}
	b.remember(cfg)
	return slices.Clone(cfg.Gluster.Servers)
}

func (b *Backend) remember(cfg *params.Config) {
	g := cfg.Gluster
	if g == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.specs[poolKey(g.Servers)] = ExecutorSpec{Kind: g.Executor, SecretName: g.ExecutorSecretName, SecretNamespace: g.ExecutorSecretNamespace}
}

// poolKey names a trusted pool by its servers, in any order.
func poolKey(servers []string) string {
	s := slices.Clone(servers)
	slices.Sort(s)
	return strings.Join(s, ",")
}

// CLI returns the CLI for a pool, with the executor a StorageClass named
// for it (or the default).
func (b *Backend) CLI(ctx context.Context, servers []string) (*CLI, error) {
	key := poolKey(servers)
	b.mu.Lock()
	spec, ok := b.specs[key]
	if !ok {
		spec = b.opts.DefaultExecutor
	}
	lockKey := key
	if spec.Kind == params.ExecutorLocal {
		lockKey = "local" // one glusterd behind the socket, whatever the servers
	}
	mu, ok := b.poolLocks[lockKey]
	if !ok {
		mu = &sync.Mutex{}
		b.poolLocks[lockKey] = mu
	}
	ce, cached := b.execs[key+"|"+spec.String()]
	b.mu.Unlock()

	if !cached || b.opts.Now().Sub(ce.created) > execTTL {
		exec, err := b.newExecutor(ctx, servers, spec)
		if err != nil {
			return nil, err
		}
		ce = cachedExec{exec: exec, created: b.opts.Now()}
		b.mu.Lock()
		b.execs[key+"|"+spec.String()] = ce
		b.mu.Unlock()
	}
	return NewCLI(ce.exec, mu), nil
}

func (b *Backend) newExecutor(ctx context.Context, servers []string, spec ExecutorSpec) (Executor, error) {
	if b.opts.NewExecutor != nil {
		return b.opts.NewExecutor(ctx, servers, spec)
	}
	switch spec.Kind {
	case params.ExecutorLocal:
		return &LocalExecutor{Socket: b.opts.GlusterdSocket}, nil
	case params.ExecutorSSH:
		if b.opts.SecretData == nil {
			return nil, fmt.Errorf("%w: executor ssh needs carve to read Secrets, which this binary was not set up for", backend.ErrInvalid)
		}
		data, err := b.opts.SecretData(ctx, spec.SecretNamespace, spec.SecretName)
		if errors.Is(err, backend.ErrInvalid) {
			return nil, fmt.Errorf("read executor Secret %s/%s: %w", spec.SecretNamespace, spec.SecretName, err)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: read executor Secret %s/%s: %w", backend.ErrUnavailable, spec.SecretNamespace, spec.SecretName, err)
		}
		cred, err := SSHCredentialsFromSecret(data)
		if err != nil {
			return nil, fmt.Errorf("executor Secret %s/%s: %w", spec.SecretNamespace, spec.SecretName, err)
		}
		dir := b.opts.StateDir
		if dir == "" {
			dir = filepath.Join(os.TempDir(), fmt.Sprintf("carve-gluster-%d", os.Getpid()))
		}
		// One directory per Secret and pool: known_hosts are per pool.
		dir = filepath.Join(dir, sshexec.DirName(spec.SecretNamespace+"_"+spec.SecretName+"_"+poolKey(servers)))
		return NewSSHExecutor(servers, cred, dir)
	}
	return nil, fmt.Errorf("%w: unknown executor %q", backend.ErrInvalid, spec.Kind)
}

// mountOptions are the FUSE options for a volume reached through servers:
// the first serves the volfile, the rest are fallbacks; auto_unmount makes a
// dead client unmount itself instead of leaving "Transport endpoint is not
// connected" behind.
func mountOptions(servers []string, extra []string) []string {
	var opts []string
	has := func(prefix string) bool {
		return slices.ContainsFunc(extra, func(o string) bool { return o == prefix || strings.HasPrefix(o, prefix+"=") })
	}
	if len(servers) > 1 && !has("backup-volfile-servers") {
		opts = append(opts, "backup-volfile-servers="+strings.Join(servers[1:], ":"))
	}
	if !has("auto_unmount") {
		opts = append(opts, "auto_unmount")
	}
	return append(opts, extra...)
}

// Source is the FUSE mount source of a volume or a directory in it.
func Source(server, volume string, dir []string) string {
	return server + ":/" + strings.Join(append([]string{volume}, dir...), "/")
}

// Share implements backend.Backend: the directory engine on a FUSE mount of
// the volume (a --mount-map entry, or mounted on demand).
func (b *Backend) Share(ctx context.Context, servers []string, volume string) (*dirvol.Share, error) {
	if len(servers) == 0 {
		return nil, fmt.Errorf("%w: no Gluster server for volume %s", backend.ErrInvalid, volume)
	}
	local, mapped := b.opts.Resolver.Map.Lookup(servers, volume)
	if !mapped {
		p, err := b.opts.Resolver.LocalPath(ctx, servers, volume, Source(servers[0], volume, nil), FSType, mountOptions(servers, nil))
		if err != nil {
			return nil, b.diagnose(ctx, servers, volume, err)
		}
		local = p
	}
	// Never carve into a directory that is not the volume: a mount that
	// failed quietly (mount.glusterfs can exit 0) or died would otherwise
	// put claims on carve's own disk.
	if err := checkFUSE(local); err != nil {
		if mapped {
			return nil, fmt.Errorf("%w: Gluster volume %s: --mount-map path %s: %v", backend.ErrUnavailable, volume, local, err)
		}
		return nil, b.diagnose(ctx, servers, volume, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if s, ok := b.shares[local]; ok {
		return s, nil
	}
	s, err := dirvol.Open(local)
	if err != nil {
		return nil, fmt.Errorf("%w: Gluster volume %s at %s: %w", backend.ErrUnavailable, volume, local, err)
	}
	b.shares[local] = s
	return s, nil
}

func checkFUSE(p string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		return fmt.Errorf("statfs: %w", err)
	}
	if uint32(st.Type) != fuseSuperMagic {
		return fmt.Errorf("%s is not a FUSE (glusterfs) mount", p)
	}
	return nil
}

// diagnose turns a failed mount into a precise error: asks glusterd whether
// the volume exists and is started.
func (b *Backend) diagnose(ctx context.Context, servers []string, volume string, mountErr error) error {
	cli, err := b.CLI(ctx, servers)
	if err != nil {
		return fmt.Errorf("%w: mount Gluster volume %s: %w", backend.ErrUnavailable, volume, mountErr)
	}
	vol, err := cli.VolumeInfo(ctx, volume)
	switch {
	case errors.Is(err, backend.ErrNotFound):
		return fmt.Errorf("%w: Gluster volume %q does not exist on %s: create it, or fix the StorageClass's volume parameter",
			backend.ErrNotFound, volume, strings.Join(servers, ","))
	case err != nil:
		return fmt.Errorf("%w: mount Gluster volume %s: %v; and asking glusterd failed too: %v", backend.ErrUnavailable, volume, mountErr, err)
	case vol.Status != StatusStarted:
		return fmt.Errorf("%w: Gluster volume %s is %s, not started: run `gluster volume start %s`",
			backend.ErrUnavailable, volume, vol.StatusStr, volume)
	}
	return fmt.Errorf("%w: mount Gluster volume %s: %w (client logs in /var/log/glusterfs)", backend.ErrUnavailable, volume, mountErr)
}

// MountSpec implements backend.Backend: mount -t glusterfs
// SERVER:/VOLUME[/DIR] with the other servers as backup volfile servers.
// The node adds log-file (per volume and node) itself.
func (b *Backend) MountSpec(id volid.ID, options []string) backend.MountSpec {
	return backend.MountSpec{
		Source:  Source(id.Servers[0], id.Share, id.Dir),
		FSType:  FSType,
		Options: mountOptions(id.Servers, options),
	}
}

// quotaPath is the directory's path as Gluster's quota names it.
func quotaPath(id volid.ID) string { return "/" + id.DirPath() }

// ApplyLimit implements backend.ConfiguredLimiter: the StorageClass's quota
// policy for a newly carved or re-attached claim.
func (b *Backend) ApplyLimit(ctx context.Context, id volid.ID, cfg *params.Config, bytes int64) ([]string, error) {
	b.remember(cfg)
	policy := params.QuotaAuto
	if cfg.Gluster != nil {
		policy = cfg.Gluster.Quota
	}
	if policy == params.QuotaNone {
		return []string{fmt.Sprintf("the claim's size (%s) is not enforced and df shows the size of the whole Gluster volume %s: "+
			"the StorageClass sets quota: none", humanBytes(bytes), id.Share)}, nil
	}
	cli, err := b.CLI(ctx, id.Servers)
	if err != nil {
		return nil, err
	}
	enabled, err := b.withQuota(ctx, cli, id, func(st quotaState) error { return b.limit(ctx, cli, id, st, quotaPath(id), bytes) })
	if err != nil || enabled {
		return nil, err
	}
	if policy == params.QuotaGluster {
		return nil, fmt.Errorf("%w: the StorageClass sets quota: gluster but quota is not enabled on Gluster volume %s: "+
			"run `gluster volume quota %s enable` or set quota: auto", backend.ErrInvalid, id.Share, id.Share)
	}
	return []string{fmt.Sprintf("the claim's size (%s) is not enforced and df shows the size of the whole Gluster volume %s: "+
		"quota is not enabled on it (an administrator can run `gluster volume quota %s enable`)", humanBytes(bytes), id.Share, id.Share)}, nil
}

// withQuota runs do when quota is enabled on id's volume and reports
// whether it was. A remembered "enabled" saves the `volume info` round trip;
// if do then finds quota switched off (or the volume gone), the memory is
// dropped and the state asked again once.
func (b *Backend) withQuota(ctx context.Context, cli *CLI, id volid.ID, do func(quotaState) error) (bool, error) {
	key := poolKey(id.Servers) + "/" + id.Share
	b.mu.Lock()
	st, cached := b.quotas[key]
	b.mu.Unlock()
	if cached && !b.noQuotaCache && b.opts.Now().Sub(st.seen) < quotaStateTTL {
		err := do(st)
		if err == nil {
			return true, nil
		}
		b.forgetQuota(key)
		if !quotaOff(err) {
			return true, err
		}
		klog.FromContext(ctx).V(2).Info("Quota was switched off on the Gluster volume since carve last looked", "glusterVolume", id.Share)
	}
	vol, err := cli.VolumeInfo(ctx, id.Share)
	if err != nil {
		return false, err
	}
	if !vol.QuotaEnabled() {
		return false, nil
	}
	deem, _ := vol.Option("features.quota-deem-statfs")
	st = quotaState{deemStatfs: isOn(deem), seen: b.opts.Now()}
	b.mu.Lock()
	b.quotas[key] = st
	b.mu.Unlock()
	if err := do(st); err != nil {
		b.forgetQuota(key)
		return true, err
	}
	return true, nil
}

func (b *Backend) forgetQuota(key string) {
	b.mu.Lock()
	delete(b.quotas, key)
	b.mu.Unlock()
}

// quotaOff recognizes a quota command refused because quota is disabled.
func quotaOff(err error) bool {
	return contains(err, "quota is disabled") || contains(err, "quota is not enabled")
}

// SetLimit implements backend.Limiter (expansion, with only the ID): sets
// the limit when the volume has quota enabled, else does nothing (the size
// is recorded, not enforced).
func (b *Backend) SetLimit(ctx context.Context, id volid.ID, bytes int64) error {
	cli, err := b.CLI(ctx, id.Servers)
	if err != nil {
		return err
	}
	enabled, err := b.withQuota(ctx, cli, id, func(st quotaState) error { return b.limit(ctx, cli, id, st, quotaPath(id), bytes) })
	if err == nil && !enabled {
		klog.FromContext(ctx).V(2).Info("Quota not enabled on the Gluster volume; size not enforced", "glusterVolume", id.Share, "bytes", bytes)
	}
	return err
}

// limit sets (or raises, or lowers) the hard limit of a directory. It first
// turns on quota-deem-statfs, so df inside the pod shows the limit.
func (b *Backend) limit(ctx context.Context, cli *CLI, id volid.ID, st quotaState, path string, bytes int64) error {
	if !st.deemStatfs {
		if _, err := cli.Run(ctx, "volume", "set", id.Share, "quota-deem-statfs", "on"); err != nil {
			return fmt.Errorf("turn on quota-deem-statfs on %s: %w", id.Share, err)
		}
		key := poolKey(id.Servers) + "/" + id.Share
		b.mu.Lock()
		if cur, ok := b.quotas[key]; ok {
			cur.deemStatfs = true
			b.quotas[key] = cur
		}
		b.mu.Unlock()
	}
	if _, err := cli.Run(ctx, "volume", "quota", id.Share, "limit-usage", path, strconv.FormatInt(bytes, 10)); err != nil {
		return fmt.Errorf("set quota of %s on Gluster volume %s to %d bytes: %w", path, id.Share, bytes, err)
	}
	klog.FromContext(ctx).V(2).Info("Set Gluster quota", "glusterVolume", id.Share, "path", path, "bytes", bytes)
	return nil
}

// RemoveLimit implements backend.Limiter: drops the quota entry of a
// directory that is archived or deleted. A whole volume's limit goes with
// the volume.
func (b *Backend) RemoveLimit(ctx context.Context, id volid.ID) error {
	if len(id.Dir) == 0 {
		return nil
	}
	cli, err := b.CLI(ctx, id.Servers)
	if err != nil {
		return err
	}
	_, err = b.withQuota(ctx, cli, id, func(quotaState) error {
		_, err := cli.Run(ctx, "volume", "quota", id.Share, "remove", quotaPath(id))
		var ce *CommandError
		if errors.As(err, &ce) && noLimit(ce.Message) && !quotaOff(err) {
			return nil // nothing to remove: no limit, or no directory
		}
		if err != nil {
			return fmt.Errorf("remove quota of %s on Gluster volume %s: %w", quotaPath(id), id.Share, err)
		}
		klog.FromContext(ctx).V(2).Info("Removed Gluster quota", "glusterVolume", id.Share, "path", quotaPath(id))
		return nil
	})
	if quotaOff(err) {
		return nil // switched off between `volume info` and the removal: no limits left
	}
	return err
}

// noLimit recognizes `quota remove` failures that mean there is nothing to
// remove: removexattr ENODATA (no limit set), a missing directory, or quota
// switched off meanwhile.
func noLimit(msg string) bool {
	m := strings.ToLower(msg)
	return strings.Contains(m, "no data available") || strings.Contains(m, "no such file or directory") ||
		strings.Contains(m, "quota is disabled") || strings.Contains(m, "no quota configured")
}

func humanBytes(n int64) string {
	const gi, mi = 1 << 30, 1 << 20
	switch {
	case n >= gi && n%gi == 0:
		return fmt.Sprintf("%dGi", n/gi)
	case n >= mi && n%mi == 0:
		return fmt.Sprintf("%dMi", n/mi)
	}
	return fmt.Sprintf("%d bytes", n)
}
