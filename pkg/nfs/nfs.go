// Package nfs is carve's NFS backend: one directory per claim on an export.
package nfs

import (
	"context"
	"fmt"
	"path"
	"sync"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/sharemount"
	"github.com/carve-csi/carve/pkg/volid"
)

// Backend carves directories on NFS exports.
type Backend struct {
	resolver *sharemount.Resolver

	mu     sync.Mutex
	shares map[string]*dirvol.Share // one engine per share, so its lock is shared
}

// New returns the NFS backend reaching shares through resolver.
func New(resolver *sharemount.Resolver) *Backend {
	return &Backend{resolver: resolver, shares: map[string]*dirvol.Share{}}
}

var _ backend.Backend = (*Backend)(nil)

// Kind implements backend.Backend.
func (b *Backend) Kind() string { return params.BackendNFS }

// Servers implements backend.Backend.
func (b *Backend) Servers(cfg *params.Config) []string { return []string{cfg.Server} }

// Share implements backend.Backend.
func (b *Backend) Share(ctx context.Context, servers []string, share string) (*dirvol.Share, error) {
	key := sharemount.Key(servers[0], share)
	b.mu.Lock()
	s, ok := b.shares[key]
	b.mu.Unlock()
	if ok {
		return s, nil
	}
	local, err := b.resolver.LocalPath(ctx, servers, share, source(servers[0], share), "nfs", nil)
	if err != nil {
		return nil, fmt.Errorf("%w: NFS share %s: %w", backend.ErrUnavailable, key, err)
	}
	s, err = dirvol.Open(local)
	if err != nil {
		return nil, fmt.Errorf("%w: NFS share %s at %s: %w", backend.ErrUnavailable, key, local, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if old, ok := b.shares[key]; ok {
		return old, nil
	}
	b.shares[key] = s
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
