// Package sharemount gives the controller a local path for a share: either
// one the deployment mounted already (--mount-map SERVER:SHARE=LOCALPATH) or
// one it mounts itself under a mounts directory with k8s.io/mount-utils.
package sharemount

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"k8s.io/klog/v2"
	mount "k8s.io/mount-utils"
)

// ErrNoMount: the share is neither mapped nor mountable here.
var ErrNoMount = errors.New("share is not mapped and no mounts directory is configured")

// Key names a share: SERVER:SHARE (an NFS export path, or a Gluster volume).
func Key(server, share string) string { return server + ":" + share }

// Map is a parsed set of --mount-map entries.
type Map map[string]string

// Set parses one SERVER:SHARE=LOCALPATH entry; Map implements flag.Value.
func (m Map) Set(v string) error {
	k, local, ok := strings.Cut(v, "=")
	if !ok || local == "" {
		return fmt.Errorf("mount map %q: want SERVER:SHARE=LOCALPATH", v)
	}
	server, share, ok := splitServer(k)
	if !ok || server == "" || share == "" {
		return fmt.Errorf("mount map %q: want SERVER:SHARE=LOCALPATH (e.g. 10.0.0.5:/export=/shares/nfs)", v)
	}
	if !filepath.IsAbs(local) {
		return fmt.Errorf("mount map %q: local path %q must be absolute", v, local)
	}
	if _, dup := m[Key(server, share)]; dup {
		return fmt.Errorf("mount map %q: %s is mapped twice", v, Key(server, share))
	}
	m[Key(server, share)] = filepath.Clean(local)
	return nil
}

// Lookup returns the local path mapped for the share on any of servers (the
// first one mapped wins).
func (m Map) Lookup(servers []string, share string) (string, bool) {
	for _, s := range servers {
		if p, ok := m[Key(s, share)]; ok {
			return p, true
		}
	}
	return "", false
}

// String implements flag.Value.
func (m Map) String() string {
	parts := make([]string, 0, len(m))
	for k, v := range m {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ",")
}

// Open calls open for each mapped share of one kind, exports (a path:
// NFS) or volumes (a name: Gluster), and returns what it opened, with the
// errors of the others joined.
func Open[T any](m Map, exports bool, open func(server, share string) (T, error)) ([]T, error) {
	var out []T
	var errs []error
	for k := range m {
		server, share, ok := splitServer(k)
		if !ok || strings.HasPrefix(share, "/") != exports {
			continue
		}
		v, err := open(server, share)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, v)
	}
	return out, errors.Join(errs...)
}

// SplitKey splits a Key back into server and share.
func SplitKey(k string) (server, share string, ok bool) { return splitServer(k) }

// splitServer splits "host:share", "[v6]:share".
func splitServer(s string) (string, string, bool) {
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]:")
		if end < 0 {
			return "", "", false
		}
		return s[:end+1], s[end+2:], true
	}
	return strings.Cut(s, ":")
}

// Resolver returns local paths for shares.
type Resolver struct {
	Map       Map
	MountsDir string          // where to mount unmapped shares; "" disables mounting
	Mounter   mount.Interface // used only for unmapped shares

	mu sync.Mutex
}

// LocalPath returns a local directory holding the share's content. Any of
// servers may be mapped; otherwise the share is mounted from servers[0] with
// fstype and options.
func (r *Resolver) LocalPath(ctx context.Context, servers []string, share, source, fstype string, options []string) (string, error) {
	if p, ok := r.Map.Lookup(servers, share); ok {
		return p, nil
	}
	if r.MountsDir == "" || r.Mounter == nil {
		// Callers name the share first.
		return "", fmt.Errorf("%w (add --mount-map %s=LOCALPATH with the share mounted at LOCALPATH, as deploy/examples do, or --mounts-dir)",
			ErrNoMount, Key(servers[0], share))
	}
	sum := sha256.Sum256([]byte(fstype + "\x00" + source))
	target := filepath.Join(r.MountsDir, fstype+"-"+hex.EncodeToString(sum[:8]))

	r.mu.Lock()
	defer r.mu.Unlock()
	if err := os.MkdirAll(target, 0o700); err != nil {
		return "", fmt.Errorf("create mount point: %w", err)
	}
	notMnt, err := r.Mounter.IsLikelyNotMountPoint(target)
	if err != nil && !mount.IsCorruptedMnt(err) {
		return "", fmt.Errorf("check mount point %s: %w", target, err)
	}
	if err != nil {
		// A dead mount (server restarted): drop it and mount again.
		klog.FromContext(ctx).Info("Remounting corrupted share mount", "target", target, "err", err)
		if uerr := r.Mounter.Unmount(target); uerr != nil {
			return "", fmt.Errorf("unmount corrupted %s: %w", target, uerr)
		}
		notMnt = true
	}
	if !notMnt {
		return target, nil
	}
	klog.FromContext(ctx).Info("Mounting share", "source", source, "fstype", fstype, "target", target)
	if err := r.Mounter.MountSensitiveWithoutSystemd(source, target, fstype, options, nil); err != nil {
		return "", fmt.Errorf("mount %s: %w", source, err)
	}
	return target, nil
}
