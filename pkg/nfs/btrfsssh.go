package nfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/sharemount"
	"github.com/carve-csi/carve/pkg/sshexec"
)

// btrfsExecutorTTL bounds how long an ssh key read from a Secret is
// reused, so a rotated Secret takes effect (as Gluster's executors).
const btrfsExecutorTTL = 5 * time.Minute

// btrfsCallTimeout bounds one helper call: each is a few ioctls.
const btrfsCallTimeout = 2 * time.Minute

// rememberBtrfs notes how a StorageClass reaches the btrfs filesystem of
// its share, for later calls that carry only a volume ID (expansion,
// snapshots, purges). One share, one executor: the last class seen wins.
func (b *Backend) rememberBtrfs(cfg *params.Config) {
	if cfg == nil || cfg.Btrfs == nil {
		return
	}
	key := sharemount.Key(cfg.Server, cfg.Share)
	b.mu.Lock()
	defer b.mu.Unlock()
	if cur, ok := b.btrfs[key]; ok && cur.cfg == *cfg.Btrfs {
		return
	}
	var r *helperRunner
	if cfg.Btrfs.Executor == params.ExecutorSSH {
		r = &helperRunner{b: b, host: cfg.Server, share: cfg.Share, cfg: *cfg.Btrfs}
	}
	b.btrfs[key] = btrfsSpec{cfg: *cfg.Btrfs, runner: r}
}

type btrfsSpec struct {
	cfg    params.BtrfsConfig
	runner *helperRunner // nil: executor local
}

// learnAgain bounds how often the StorageClasses are read for a share that
// none of them gives a btrfsExecutor: most shares have none.
const learnAgain = time.Minute

// learnBtrfs reads carve's StorageClasses for the one that says how the
// share key's btrfs layout is reached, when no class seen since the start
// has: without it, after a restart an expansion would raise no qgroup limit
// and a snapshot would be a copy, as the share seen through NFS is not
// btrfs. A class that does not parse is skipped (its claims get their own
// events); a failed list is logged and tried again with the next call.
func (b *Backend) learnBtrfs(ctx context.Context, key string) {
	if b.opts.Classes == nil {
		return
	}
	b.mu.Lock()
	_, known := b.btrfs[key]
	last, tried := b.learned[key]
	if known || (tried && time.Since(last) < learnAgain) {
		b.mu.Unlock()
		return
	}
	b.learned[key] = time.Now()
	b.mu.Unlock()
	classes, err := b.opts.Classes(ctx)
	if err != nil {
		klog.FromContext(ctx).Error(err, "Cannot learn how the share's btrfs layout is reached", "share", key)
		b.mu.Lock()
		delete(b.learned, key)
		b.mu.Unlock()
		return
	}
	for _, p := range classes {
		cfg, err := params.Parse(p)
		if err != nil || cfg.Backend != params.BackendNFS || cfg.Btrfs == nil || sharemount.Key(cfg.Server, cfg.Share) != key {
			continue
		}
		b.rememberBtrfs(cfg)
	}
}

// useBtrfs points the share's btrfs calls at the executor remembered for it.
func (b *Backend) useBtrfs(key string, s *dirvol.Share) {
	b.mu.Lock()
	spec, ok := b.btrfs[key]
	b.mu.Unlock()
	switch {
	case !ok:
	case spec.runner != nil:
		s.UseBtrfsHelper(spec.runner)
	default:
		s.UseBtrfsHelper(nil)
	}
}

// helperRunner runs carve-btrfs on the NFS server over ssh
// (dirvol.BtrfsRunner).
type helperRunner struct {
	b     *Backend
	host  string
	share string // the export path on the server
	cfg   params.BtrfsConfig

	mu    sync.Mutex
	exec  *sshexec.Executor
	built time.Time
}

func (r *helperRunner) String() string {
	return fmt.Sprintf("%s on %s over ssh, Secret %s/%s", r.cfg.Helper, r.host, r.cfg.ExecutorSecretNamespace, r.cfg.ExecutorSecretName)
}

// executor reads the Secret (again after btrfsExecutorTTL) and writes its
// key for ssh.
func (r *helperRunner) executor(ctx context.Context) (*sshexec.Executor, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.exec != nil && time.Since(r.built) < btrfsExecutorTTL {
		return r.exec, nil
	}
	ns, name := r.cfg.ExecutorSecretNamespace, r.cfg.ExecutorSecretName
	if r.b.opts.SecretData == nil {
		return nil, fmt.Errorf("%w: %s ssh needs carve to read Secrets, which this binary was not set up for", backend.ErrInvalid, params.BtrfsExecutor)
	}
	data, err := r.b.opts.SecretData(ctx, ns, name)
	if errors.Is(err, backend.ErrInvalid) {
		return nil, fmt.Errorf("read %s Secret %s/%s: %w", params.BtrfsExecutor, ns, name, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: read %s Secret %s/%s: %w", backend.ErrUnavailable, params.BtrfsExecutor, ns, name, err)
	}
	cred, err := sshexec.CredentialsFromSecret(data)
	if err != nil {
		return nil, fmt.Errorf("%s Secret %s/%s: %w", params.BtrfsExecutor, ns, name, err)
	}
	dir := r.b.opts.StateDir
	if dir == "" {
		dir = filepath.Join(os.TempDir(), fmt.Sprintf("carve-nfs-%d", os.Getpid()))
	}
	// One directory per Secret and server: known_hosts are per server.
	dir = filepath.Join(dir, sshexec.DirName(ns+"_"+name+"_"+r.host))
	e, err := sshexec.New([]string{r.host}, cred, dir)
	if err != nil {
		return nil, err
	}
	e.Options = r.b.opts.SSHOptions
	r.exec, r.built = e, time.Now()
	return e, nil
}

// RunBtrfs implements dirvol.BtrfsRunner.
func (r *helperRunner) RunBtrfs(ctx context.Context, args []string) ([]byte, error) {
	e, err := r.executor(ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, btrfsCallTimeout)
	defer cancel()
	out, err := e.RunOn(ctx, r.host, append([]string{r.cfg.Helper, "--share", r.share}, args...))
	var re *sshexec.RunError
	if errors.As(err, &re) && (re.Unreachable || re.ExitCode == 127 || re.ExitCode == 126) {
		// No answer will come: ssh failed, or the helper is not installed.
		return out, fmt.Errorf("%w: %w", backend.ErrUnavailable, err)
	}
	return out, err
}
