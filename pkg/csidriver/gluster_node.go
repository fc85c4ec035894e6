package csidriver

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/carve-csi/carve/internal/mountinfo"

	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/volid"
)

// The node's own Gluster mounts (a volume whose share is not in --mount-map):
// mount -t glusterfs SERVER:/VOLUME/DIR TARGET -o
// backup-volfile-servers=...,auto_unmount,<mount flags>,log-file=<per volume>.
// mount.glusterfs exits 0 when the FUSE client gives up after forking (a
// missing subdirectory, a volume that is not started), so the mount table
// decides whether anything was mounted.

// glusterFUSEType is the mount table's type of a Gluster FUSE mount.
const glusterFUSEType = "fuse.glusterfs"

// glusterLogTail is how many lines of the client's log a failed mount shows.
const glusterLogTail = 20

// glusterLogFile is the FUSE client's log of one volume on this node: a
// readable name (volume and directory) plus a hash of the volume's location,
// so two volumes never share a log however their names are shortened.
func glusterLogFile(dir string, id volid.ID) string {
	name := strings.Join(append([]string{id.Share}, id.Dir...), "_")
	name = strings.Map(func(r rune) rune {
		if r == '-' || r == '_' || r == '.' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			return r
		}
		return '-'
	}, name)
	name = strings.TrimLeft(name, ".")
	if len(name) > 120 {
		name = name[:120]
	}
	sum := sha256.Sum256([]byte(id.Location()))
	return filepath.Join(dir, name+"-"+hex.EncodeToString(sum[:4])+".log")
}

// glusterOptions adds the node's log file to the backend's mount options,
// unless the PV's mountOptions name one, and ro for a read-only publish.
func glusterOptions(opts []string, logFile string, readonly bool) []string {
	out := slices.Clone(opts)
	if !slices.ContainsFunc(out, func(o string) bool { return strings.HasPrefix(o, "log-file=") }) {
		out = append(out, "log-file="+logFile)
	}
	if readonly && !slices.Contains(out, "ro") {
		out = append(out, "ro")
	}
	return out
}

// verifyGlusterMount is checkFUSE on a real system: the mount table must show
// a Gluster FUSE mount at target (the last mount there is the visible one).
func verifyGlusterMount(target string) error {
	real, err := filepath.EvalSymlinks(target)
	if err != nil {
		return fmt.Errorf("resolve %s: %w", target, err)
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("read the mount table: %w", err)
	}
	return checkGlusterMountinfo(data, real)
}

// checkGlusterMountinfo checks the mount at target in a mountinfo table.
func checkGlusterMountinfo(mountinfo []byte, target string) error {
	fstype, source, ok := mountAt(mountinfo, target)
	switch {
	case !ok:
		return errors.New("mount.glusterfs exited 0 but nothing is mounted at the target (does the volume's directory exist and is the volume started?)")
	case fstype != glusterFUSEType:
		return fmt.Errorf("the target shows a %s mount of %s, not a %s mount", fstype, source, glusterFUSEType)
	}
	return nil
}

// mountAt returns the type and source of the topmost mount at target in a
// /proc/self/mountinfo table.
func mountAt(table []byte, target string) (fstype, source string, ok bool) {
	for line := range strings.Lines(string(table)) {
		// ID parent major:minor root mountpoint opts [optional...] - fstype source superopts
		fields := strings.Fields(line)
		sep := slices.Index(fields, "-")
		if len(fields) < 5 || sep < 5 || sep+2 >= len(fields) || mountinfo.Unescape(fields[4]) != target {
			continue
		}
		fstype, source, ok = fields[sep+1], mountinfo.Unescape(fields[sep+2]), true
	}
	return fstype, source, ok
}

// logTail returns the last n lines of a file, or a note why it cannot.
func logTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no client log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// isGluster: a volume the node mounts with Gluster's FUSE client.
func isGluster(id volid.ID) bool { return id.Backend == params.BackendGluster }
