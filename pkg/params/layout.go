package params

import (
	"fmt"
	"path"
	"strings"
)

// Layout selects how an NFS claim is laid out on its share (StorageClass
// parameter, default directory).
const Layout = "layout"

// Layouts.
const (
	// LayoutDirectory: a plain directory; the size is recorded, not
	// enforced; snapshots and clones are copies (reflinked where the
	// filesystem can).
	LayoutDirectory = "directory"
	// LayoutBtrfs: a btrfs subvolume with a qgroup limit of the claim's
	// size; snapshots and clones are subvolume snapshots. The share must be
	// btrfs with quota enabled, reached locally (--mount-map) or, with
	// btrfsExecutor ssh, through carve's helper on the NFS server.
	LayoutBtrfs = "btrfs"
)

// How the btrfs layout's calls reach the filesystem (backend nfs, layout
// btrfs): the same values and Secret as Gluster's executor.
const (
	BtrfsExecutor          = "btrfsExecutor"
	BtrfsExecutorSecret    = "btrfsExecutorSecretName"
	BtrfsExecutorSecretNS  = "btrfsExecutorSecretNamespace"
	BtrfsHelper            = "btrfsHelper"
	DefaultBtrfsHelperPath = "carve-btrfs"
)

var btrfsKeys = []string{BtrfsExecutor, BtrfsExecutorSecret, BtrfsExecutorSecretNS, BtrfsHelper}

// BtrfsConfig is how a btrfs-layout class reaches its filesystem.
type BtrfsConfig struct {
	// Executor: ExecutorLocal (ioctls on carve's own mount of the share,
	// which must be the btrfs filesystem) or ExecutorSSH (the helper
	// carve-btrfs on the NFS server, over ssh with the Secret's key).
	Executor                string
	ExecutorSecretName      string
	ExecutorSecretNamespace string
	// Helper is the helper's command on the server (executor ssh).
	Helper string
}

// parseLayout validates a layout value for backend.
func parseLayout(backend, v string) (string, error) {
	l := strings.ToLower(v)
	switch l {
	case LayoutDirectory, LayoutBtrfs:
	default:
		return "", fmt.Errorf("%w: %s=%q: must be %s or %s", ErrInvalid, Layout, v, LayoutDirectory, LayoutBtrfs)
	}
	if backend != BackendNFS && l != LayoutDirectory {
		return "", fmt.Errorf("%w: %s=%q applies to backend nfs only (Gluster sizes are enforced with Gluster quota)", ErrInvalid, Layout, v)
	}
	return l, nil
}

// parseBtrfs validates the btrfs executor parameters of c (its Layout set).
func parseBtrfs(c *Config, raw map[string]string, bad func(error)) {
	var given []string
	for _, k := range btrfsKeys {
		if _, ok := raw[k]; ok {
			given = append(given, k)
		}
	}
	if c.Layout != LayoutBtrfs {
		for _, k := range given {
			bad(fmt.Errorf("%w: %s applies to backend nfs with %s %s only", ErrInvalid, k, Layout, LayoutBtrfs))
		}
		return
	}
	b := &BtrfsConfig{Executor: ExecutorLocal, ExecutorSecretName: raw[BtrfsExecutorSecret],
		ExecutorSecretNamespace: raw[BtrfsExecutorSecretNS], Helper: DefaultBtrfsHelperPath}
	c.Btrfs = b
	if v, ok := raw[BtrfsExecutor]; ok {
		switch e := strings.ToLower(v); e {
		case ExecutorLocal, ExecutorSSH:
			b.Executor = e
		default:
			bad(fmt.Errorf("%w: %s=%q: must be local (carve's own mount of the share is the btrfs filesystem) "+
				"or ssh (carve's helper %s on the NFS server)", ErrInvalid, BtrfsExecutor, v, DefaultBtrfsHelperPath))
		}
	}
	ssh := b.Executor == ExecutorSSH
	switch {
	case ssh && (b.ExecutorSecretName == "" || b.ExecutorSecretNamespace == ""):
		bad(fmt.Errorf("%w: %s ssh needs %s and %s (a Secret with keys username and ssh-privatekey)",
			ErrInvalid, BtrfsExecutor, BtrfsExecutorSecret, BtrfsExecutorSecretNS))
	case !ssh && (b.ExecutorSecretName != "" || b.ExecutorSecretNamespace != ""):
		bad(fmt.Errorf("%w: %s/%s are used only with %s ssh", ErrInvalid, BtrfsExecutorSecret, BtrfsExecutorSecretNS, BtrfsExecutor))
	}
	if v, ok := raw[BtrfsHelper]; ok {
		if !ssh {
			bad(fmt.Errorf("%w: %s is used only with %s ssh", ErrInvalid, BtrfsHelper, BtrfsExecutor))
		}
		if err := checkHelper(v); err != nil {
			bad(fmt.Errorf("%w: %s=%q: %w", ErrInvalid, BtrfsHelper, v, err))
		}
		b.Helper = v
	}
}

// checkHelper accepts a command name found on the server's PATH or a
// clean absolute path, of characters a shell leaves alone.
func checkHelper(v string) error {
	if v == "" {
		return fmt.Errorf("must be the helper's path on the server, e.g. /usr/local/bin/%s", DefaultBtrfsHelperPath)
	}
	if strings.Trim(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./") != "" {
		return fmt.Errorf("may hold only letters, digits and - _ . /")
	}
	if strings.Contains(v, "/") && (!strings.HasPrefix(v, "/") || path.Clean(v) != v) {
		return fmt.Errorf("must be a command name or a clean absolute path")
	}
	return nil
}
