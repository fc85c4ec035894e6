package dirvol

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// ErrShareUnverified: the local path is not (or no longer) the share carve
// first saw there: the mount is gone, another filesystem is mounted in its
// place, or a fresh path was never declared to be the share. Nothing is read
// from or written to such a path; the operation can be retried once the
// share is back.
var ErrShareUnverified = errors.New("share not verified")

// identityFile marks a share root as carve's. Its ID is compared before every
// operation, so carve never carves into the bare directory a lost mount leaves
// behind (which would bind claims to directories that are not on the server).
const identityFile = ".carve-share"

type identity struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
}

// seen is the filesystem object a Share verified last: while the root's
// device and inode stay the same, the identity file need not be read again.
type seen struct {
	id       string
	dev, ino uint64
}

// registry keeps one Share per local root, so every part of a process (the
// backends, readiness, start-up purges) shares one identity and one lock.
var registry = struct {
	sync.Mutex
	m map[string]*Share
}{m: map[string]*Share{}}

// Verify checks that the root is the share carve saw first (see
// ErrShareUnverified), initialising the identity of a share used for the
// first time when its root is a mount point or already holds an empty
// identity file an administrator created.
func (s *Share) Verify() error { return s.check(true) }

// VerifyReadOnly is Verify for a caller that never writes to the share (a
// node plugin): it initialises nothing.
func (s *Share) VerifyReadOnly() error { return s.check(false) }

func (s *Share) check(write bool) error {
	fd, err := s.openRoot(write)
	if err != nil {
		return err
	}
	unix.Close(fd)
	return nil
}

// verify is called on every freshly opened root descriptor; all later work
// is relative to that descriptor, so what was verified is what is changed.
// Only a caller about to write (write) initialises a share's identity: a node
// that only reads never writes to the share.
func (s *Share) verify(fd int, write bool) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("%w: stat share root %s: %w", ErrShareUnverified, s.root, err)
	}
	s.idMu.Lock()
	defer s.idMu.Unlock()
	if s.seen.id != "" && s.seen.dev == st.Dev && s.seen.ino == st.Ino {
		return nil
	}
	id, err := readIdentity(fd)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrShareUnverified, s.root, err)
	}
	switch {
	case id != nil && id.ID != "" && s.seen.id != "" && id.ID != s.seen.id:
		return fmt.Errorf("%w: %s now holds share %s, not share %s that carve used there: another filesystem is mounted in its place",
			ErrShareUnverified, s.root, id.ID, s.seen.id)
	case id != nil && id.ID != "":
		// First sight in this process, or the same share remounted.
	case s.seen.id != "":
		return fmt.Errorf("%w: %s no longer holds %s (share %s): the share's mount is gone; carve writes nothing there until it is back",
			ErrShareUnverified, s.root, identityFile, s.seen.id)
	default:
		// A share used for the first time: only a mount point (the pod
		// volume, a hostPath, a FUSE mount) or an explicit, administrator
		// created empty identity file says this directory is the share.
		if id == nil {
			mounted, err := mountinfo.Mounted(s.root)
			if err != nil {
				return fmt.Errorf("%w: %s: check mount point: %w", ErrShareUnverified, s.root, err)
			}
			if !mounted {
				return fmt.Errorf("%w: %s is not a mount point and holds no %s: if the share's mount is missing, mount it; "+
					"if this directory is the exported directory itself, create an empty %s/%s to declare it",
					ErrShareUnverified, s.root, identityFile, s.root, identityFile)
			}
			// A hostPath of the node's mount of the share is a bind mount
			// (a mount point in the container) even when the node's mount
			// is missing: then it is a directory of the node's own disk.
			if fsType, remote, err := shareFS(fd); err != nil || !remote {
				return fmt.Errorf("%w: %s is a mount of a local filesystem (%s), not of a network share, and holds no %s: "+
					"if the node's mount of the share is missing (a hostPath of it), mount it; "+
					"if this local filesystem is the share itself, create an empty %s/%s to declare it",
					ErrShareUnverified, s.root, fsTypeOrErr(fsType, err), identityFile, s.root, identityFile)
			}
		}
		if !write {
			return nil // a mount point: read, but remember nothing yet
		}
		if id, err = claimIdentity(fd, id == nil); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrShareUnverified, s.root, err)
		}
	}
	s.seen = seen{id: id.ID, dev: st.Dev, ino: st.Ino}
	return nil
}

// networkFS names the filesystems a share is served by (statfs f_type):
// network filesystems and FUSE (GlusterFS, and other FUSE clients of a
// server). A mount of anything else needs a declared identity.
var networkFS = map[int64]string{
	unix.NFS_SUPER_MAGIC:   "nfs",
	unix.FUSE_SUPER_MAGIC:  "fuse",
	unix.CIFS_SUPER_MAGIC:  "cifs",
	unix.SMB2_SUPER_MAGIC:  "smb2",
	unix.SMB_SUPER_MAGIC:   "smb",
	unix.CEPH_SUPER_MAGIC:  "ceph",
	unix.V9FS_MAGIC:        "9p",
	unix.AFS_FS_MAGIC:      "afs",
	unix.AFS_SUPER_MAGIC:   "afs",
	unix.OCFS2_SUPER_MAGIC: "ocfs2",
	0x01161970:             "gfs2",
	0x0bd00bd0:             "lustre",
	0x47504653:             "gpfs",
}

// shareFS reports the filesystem type of the open directory fd and whether
// a share may be served by it (networkFS). A variable for the identity
// tests, which have no network filesystem to mount.
var shareFS = func(fd int) (string, bool, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return "", false, fmt.Errorf("statfs: %w", err)
	}
	if name, ok := networkFS[int64(st.Type)]; ok {
		return name, true, nil
	}
	if name, ok := localFS[int64(st.Type)]; ok {
		return name, false, nil
	}
	return fmt.Sprintf("type %#x", st.Type), false, nil
}

// localFS names common local filesystems, for the message only.
var localFS = map[int64]string{
	unix.EXT4_SUPER_MAGIC:      "ext4",
	unix.XFS_SUPER_MAGIC:       "xfs",
	unix.BTRFS_SUPER_MAGIC:     "btrfs",
	unix.OVERLAYFS_SUPER_MAGIC: "overlay",
	unix.TMPFS_MAGIC:           "tmpfs",
	0x2fc12fc1:                 "zfs",
}

func fsTypeOrErr(fsType string, err error) string {
	if err != nil {
		return err.Error()
	}
	return fsType
}

// readIdentity returns nil when there is no identity file, and an identity
// with an empty ID when the file is empty and no identity was given to the
// share since (declaredIDFile).
func readIdentity(root int) (*identity, error) {
	id, err := readIdentityFile(root, identityFile)
	if err != nil || id == nil || id.ID != "" {
		return id, err
	}
	declared, err := readIdentityFile(root, declaredIDFile)
	switch {
	case err != nil:
		return nil, err
	case declared == nil:
		return id, nil
	case declared.ID == "":
		return nil, fmt.Errorf("%s is empty; move it away", declaredIDFile)
	}
	return declared, nil
}

// readIdentityFile reads one identity file: nil when it does not exist.
func readIdentityFile(root int, name string) (*identity, error) {
	fd, err := unix.Openat(root, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 4<<10))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	var id identity
	if len(data) == 0 {
		return &id, nil
	}
	if err := json.Unmarshal(data, &id); err != nil || id.ID == "" {
		return nil, fmt.Errorf("%s is not carve's share identity (%d bytes); move it away if it is not", name, len(data))
	}
	return &id, nil
}

// declaredIDFile holds the identity of a share whose identity file an
// administrator created empty (Declare): the empty file stays as it was, so
// the identity is only ever created, never replaced.
const declaredIDFile = identityFile + ".id"

// claimIdentity gives a share its first identity and returns the identity
// the share holds afterwards. Two processes may do this at once (two
// controller replicas, a provisioner and a CSI controller, hosts mounting
// one export): each must end up with the ID the share holds, or the loser
// would refuse the share as "another filesystem" after its next remount.
// Only link(2), which fails when the name exists on every filesystem carve
// serves (local, NFS, FUSE), decides the winner; a rename would silently
// replace the other's identity. absent: the share held no identity file;
// otherwise it holds an empty one.
func claimIdentity(root int, absent bool) (*identity, error) {
	name := declaredIDFile
	if absent {
		name = identityFile
	}
	if mine, err := linkIdentity(root, name); mine != nil || err != nil {
		return mine, err
	}
	// Another process linked first: its identity is the share's.
	id, err := readIdentity(root)
	switch {
	case err != nil:
		return nil, err
	case id == nil || id.ID == "":
		return nil, fmt.Errorf("%s changed while carve initialised it; retrying", identityFile)
	}
	return id, nil
}

// linkIdentity writes a new identity to a temporary file and links it as
// name: nil (and no error) when name already exists.
func linkIdentity(root int, name string) (*identity, error) {
	id := &identity{ID: randomSuffix() + randomSuffix(), Created: time.Now().UTC()}
	data, _ := json.Marshal(id)
	tmp := identityFile + "." + randomSuffix()
	fd, err := unix.Openat(root, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", name, err)
	}
	defer func() { _ = unix.Unlinkat(root, tmp, 0) }()
	f := os.NewFile(uintptr(fd), tmp)
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Linkat(root, tmp, root, name, 0)
	}
	switch {
	case errors.Is(err, unix.EEXIST):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("write %s: %w", name, err)
	}
	return id, nil
}

func cleanRoot(root string) string { return filepath.Clean(root) }

// Declare marks root as a share (an empty identity file, filled on first
// use), as an administrator does for an exported directory that carve reaches
// without a mount of its own (carve running on the file server itself).
func Declare(root string) error {
	f, err := os.OpenFile(filepath.Join(root, identityFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("declare share %s: %w", root, err)
	}
	return f.Close()
}
