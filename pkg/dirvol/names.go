package dirvol

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// ErrPermanent marks storage errors that no retry can fix: the filesystem
// refuses a name (too long, an encoding it does not store). Callers must
// report them as final, not as "unavailable, retrying".
var ErrPermanent = errors.New("the filesystem refuses this path")

// permanent wraps err with ErrPermanent when its errno says the request
// itself can never succeed on this filesystem.
func permanent(err error) error {
	if err == nil || errors.Is(err, ErrPermanent) {
		return err
	}
	if errors.Is(err, unix.ENAMETOOLONG) || errors.Is(err, unix.EILSEQ) {
		return fmt.Errorf("%w: %w", ErrPermanent, err)
	}
	return err
}

const (
	// newPrefix names a directory being created, next to its final name
	// (params.ReservedPrefix, so it never collides with a volume). It is
	// renamed within its parent: Gluster's quota translator refuses
	// (EINVAL, "size key not present in dict") to move a directory whose
	// quota size xattr the marker translator has not written yet across
	// parents, but skips that check for renames within one directory.
	newPrefix = ".carve-new-"
	// nameBudget bounds the names carve makes from a volume's path (archive
	// and trash entries): a collision counter ("-NN") and a record suffix
	// (".json") still fit NAME_MAX (255 bytes).
	nameBudget = 200
	// digestLen is the length of the hex digest that replaces a cut tail.
	digestLen = 12
)

// fitName returns base+suffix when it fits nameBudget; otherwise base is cut
// at a UTF-8 boundary and "~" and a digest of the whole base are put before
// the suffix, so different long bases stay different names.
func fitName(base, suffix string) string {
	if len(base)+len(suffix) <= nameBudget {
		return base + suffix
	}
	sum := sha256.Sum256([]byte(base))
	tail := "~" + hex.EncodeToString(sum[:])[:digestLen]
	keep := max(nameBudget-len(suffix)-len(tail), 0)
	for keep > 0 && !utf8.RuneStart(base[keep]) {
		keep--
	}
	return base[:keep] + tail + suffix
}

// creation is the marker of a directory being created: written to
// .carve-tmp before the directory is made in the volume's parent, removed
// once it has its final name. A marker left by a crash lets Purge remove the
// half-made directory, which is nowhere else recorded.
type creation struct {
	Dir     string    `json:"dir"` // the volume directory being created
	Tmp     string    `json:"tmp"` // its temporary name in Dir's parent
	Started time.Time `json:"started"`
	// Fill: the directory was being filled (a clone or a restore), so what
	// a crash leaves may hold files; otherwise it is empty.
	Fill bool `json:"fill,omitempty"`
}

func markerName(id string) string { return id + ".json" }

// writeMarker records a creation in .carve-tmp.
func writeMarker(tmpfd int, id string, c creation) error {
	data, _ := json.Marshal(c)
	fd, err := unix.Openat(tmpfd, markerName(id), unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("write creation marker: %w", err)
	}
	f := os.NewFile(uintptr(fd), markerName(id))
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = unix.Unlinkat(tmpfd, markerName(id), 0)
		return fmt.Errorf("write creation marker: %w", err)
	}
	return nil
}

// readMarker reads a creation marker; ok is false for anything else.
func readMarker(tmpfd int, name string) (c creation, ok bool) {
	if !strings.HasSuffix(name, ".json") {
		return c, false
	}
	fd, err := unix.Openat(tmpfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return c, false
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size > 64<<10 {
		return c, false
	}
	if json.NewDecoder(f).Decode(&c) != nil || c.Dir == "" || !strings.HasPrefix(c.Tmp, newPrefix) || strings.Contains(c.Tmp, "/") {
		return creation{}, false
	}
	return c, true
}

// finishMarker removes what a creation that never completed left in the
// volume's parent (only an empty directory under carve's temporary name:
// nothing was ever handed out from it), then the marker itself.
func (s *Share) finishMarker(ctx context.Context, root, tmpfd int, name string, c creation) error {
	dir := strings.Split(c.Dir, "/")
	if checkDir(dir) == nil {
		parent, err := resolve(root, dir[:len(dir)-1])
		if err == nil {
			if c.Fill || s.helper.Load() != nil {
				// Filled, or (btrfs helper) perhaps a subvolume, which
				// over NFS only the server can remove.
				err = s.removeAt(ctx, parent, dir[:len(dir)-1], c.Tmp)
			} else {
				err = unix.Unlinkat(parent, c.Tmp, unix.AT_REMOVEDIR)
			}
			unix.Close(parent)
			if err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("remove unfinished %s/%s: %w", strings.Join(dir[:len(dir)-1], "/"), c.Tmp, err)
			}
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	if err := unix.Unlinkat(tmpfd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove creation marker: %w", err)
	}
	return nil
}

// ArchiveRecord is written beside an archived directory, as <entry>.json,
// so an operator can tell which claim an archive held (entry names of long
// paths are cut and carry a digest).
type ArchiveRecord struct {
	Dir      string    `json:"dir"`   // where the volume lived, relative to the share
	Entry    string    `json:"entry"` // the archive, relative to the share
	Archived time.Time `json:"archived"`
	// Record is carve's record of the volume when it was archived (nil: none).
	Record *Meta `json:"record,omitempty"`
}

func writeArchiveRecord(dest int, target string, r ArchiveRecord) error {
	data, _ := json.MarshalIndent(r, "", "  ")
	name := target + ".json"
	fd, err := unix.Openat(dest, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("write archive record %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	_, err = f.Write(append(data, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write archive record %s: %w", name, err)
	}
	return nil
}

// renameRetry is renameNoReplace that waits out Gluster's transient EINVAL
// for a directory moved across parents right after it was made (the quota
// translator needs the size xattr the marker translator writes shortly
// after mkdir). rename(2) has no other EINVAL for carve's moves: the target
// is never below the source.
func renameRetry(oldDir int, oldName string, newDir int, newName string) error {
	delay := 20 * time.Millisecond
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := renameNoReplace(oldDir, oldName, newDir, newName)
		if !errors.Is(err, unix.EINVAL) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(delay)
		delay = min(2*delay, 500*time.Millisecond)
	}
}
