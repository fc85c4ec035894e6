// Package nfs is carve's NFS backend: one directory per claim on an export.
package nfs

import (
	"context"
	"fmt"
	"path"
	"sync"
	"time"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/sharemount"
	"github.com/carve-csi/carve/pkg/volid"
)

// Backend carves directories on NFS exports.
type Backend struct {
	resolver *sharemount.Resolver
	opts     Options

	mu    sync.Mutex
	btrfs map[string]btrfsSpec // share key → how its btrfs layout is reached (btrfsssh.go)
	// learned: when the StorageClasses were last read for a share key
	// with no btrfsSpec (btrfsssh.go learnBtrfs).
	learned map[string]time.Time
}

// Options configure what only some StorageClasses need.
type Options struct {
	// SecretData returns a Secret's data, for btrfsExecutor ssh. nil
	// refuses ssh.
	SecretData func(ctx context.Context, namespace, name string) (map[string][]byte, error)
	// StateDir keeps ssh keys and known_hosts; "" is a private temp dir.
	StateDir string
	// SSHOptions are extra ssh options ("-o" values, e.g. "Port=2222").
	SSHOptions []string
	// Classes lists the parameters of carve's StorageClasses. After a
	// restart the backend learns from them how a share's btrfs layout is
	// reached before a call that carries only a volume ID (expansion,
	// snapshots, purges) uses the share. nil: only from classes seen in
	// provisioning.
	Classes func(ctx context.Context) ([]map[string]string, error)
}

// New returns the NFS backend reaching shares through resolver.
func New(resolver *sharemount.Resolver) *Backend { return NewWithOptions(resolver, Options{}) }

// NewWithOptions is New with options.
func NewWithOptions(resolver *sharemount.Resolver, opts Options) *Backend {
	return &Backend{resolver: resolver, opts: opts, btrfs: map[string]btrfsSpec{}, learned: map[string]time.Time{}}
}

var _ backend.Backend = (*Backend)(nil)

// Kind implements backend.Backend.
func (b *Backend) Kind() string { return params.BackendNFS }

// Servers implements backend.Backend. It also remembers how the class
// reaches its share's btrfs filesystem (btrfsExecutor).
func (b *Backend) Servers(cfg *params.Config) []string {
	b.rememberBtrfs(cfg)
	return []string{cfg.Server}
}

// Share implements backend.Backend. The share is resolved on every call, as
// the Gluster backend does, so an on-demand mount (--mounts-dir) that died is
// mounted again; dirvol keeps one engine per local path, so its lock and its
// verified identity are shared all the same.
func (b *Backend) Share(ctx context.Context, servers []string, share string) (*dirvol.Share, error) {
	key := sharemount.Key(servers[0], share)
	local, err := b.resolver.LocalPath(ctx, servers, share, source(servers[0], share), "nfs", nil)
	if err != nil {
		return nil, fmt.Errorf("%w: NFS share %s: %w", backend.ErrUnavailable, key, err)
	}
	s, err := dirvol.Open(local)
	if err != nil {
		return nil, fmt.Errorf("%w: NFS share %s at %s: %w", backend.ErrUnavailable, key, local, err)
	}
	b.learnBtrfs(ctx, key)
	b.useBtrfs(key, s)
	return s, nil
}

// MountSpec implements backend.Backend.
func (b *Backend) MountSpec(id volid.ID, mountOptions []string) backend.MountSpec {
	return backend.MountSpec{
		Source:  source(id.Servers[0], path.Join(id.Share, id.DirPath())),
		FSType:  "nfs",
		Options: mountOptions,
	}
}

// ExportPath is the path a client mounts for a volume: share/dir.
func ExportPath(id volid.ID) string { return path.Join(id.Share, id.DirPath()) }

func source(server, p string) string { return server + ":" + p }
