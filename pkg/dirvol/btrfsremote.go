package dirvol

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The btrfs helper (cmd/carve-btrfs) runs on the NFS server, as root, when
// carve reaches a btrfs-layout share over NFS: carve's descriptors are NFS
// ones, on which no btrfs ioctl works. carve sends each call with paths
// below the share; the helper opens the share's export path, checks it is
// the share carve verified (its identity file), resolves every path with
// openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS as carve does, and issues the
// same ioctls on those descriptors. It answers one JSON object on stdout.
//
// Calls (paths "/"-joined below the share, "" for the share itself):
//
//	check                             btrfs with quota enabled
//	create PARENT NAME                an empty subvolume
//	snapshot SRC PARENT NAME ro|rw    a snapshot of the subvolume SRC
//	limit DIR BYTES                   {"enforced": false} for a plain directory
//	subvolume DIR                     {"subvolume": true|false}
//	quota DIR                         {"quota": {...}} or {} for a plain directory
//	remove PARENT NAME                one of carve's temporary or trashed entries

// Error kinds of the helper's answers, each one of dirvol's errors.
const (
	helperLayout     = "layout"     // ErrLayout
	helperUnsafe     = "unsafe"     // ErrUnsafe
	helperNotFound   = "not-found"  // ErrNotFound
	helperPermanent  = "permanent"  // ErrPermanent
	helperUnverified = "unverified" // ErrShareUnverified
	helperInvalid    = "invalid"    // a request the helper refuses
	helperFailed     = "failed"     // anything else
)

// errHelperRequest: the helper refused the request itself (a bad path, an
// entry that is not carve's to remove, a version mismatch).
var errHelperRequest = errors.New("request refused by the btrfs helper")

// BtrfsAnswer is the helper's reply.
type BtrfsAnswer struct {
	Error     *BtrfsError `json:"error,omitempty"`
	Enforced  bool        `json:"enforced,omitempty"`
	Subvolume bool        `json:"subvolume,omitempty"`
	Quota     *Quota      `json:"quota,omitempty"`
}

// BtrfsError is a failed call: Kind is stable, Message for people.
type BtrfsError struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

func (e *BtrfsError) Error() string { return e.Message }

func (e *BtrfsError) Unwrap() error {
	switch e.Kind {
	case helperLayout:
		return ErrLayout
	case helperUnsafe:
		return ErrUnsafe
	case helperNotFound:
		return ErrNotFound
	case helperPermanent:
		return ErrPermanent
	case helperUnverified:
		return ErrShareUnverified
	case helperInvalid:
		return errHelperRequest
	}
	return nil
}

func helperKind(err error) string {
	switch {
	case errors.Is(err, ErrLayout):
		return helperLayout
	case errors.Is(err, ErrUnsafe):
		return helperUnsafe
	case errors.Is(err, ErrNotFound):
		return helperNotFound
	case errors.Is(err, ErrPermanent):
		return helperPermanent
	case errors.Is(err, ErrShareUnverified):
		return helperUnverified
	case errors.Is(err, errHelperRequest):
		return helperInvalid
	}
	return helperFailed
}

// ServeBtrfs runs one helper call on the share whose path on this host is
// share; shareID, when not empty, is the identity carve verified on its
// view of the share. The answer's Error is set when the call failed.
func ServeBtrfs(share, shareID string, args []string) BtrfsAnswer {
	a, err := serveBtrfs(share, shareID, args)
	if err != nil {
		return BtrfsAnswer{Error: &BtrfsError{Kind: helperKind(err), Message: err.Error()}}
	}
	return a
}

func serveBtrfs(share, shareID string, args []string) (BtrfsAnswer, error) {
	var a BtrfsAnswer
	if len(args) == 0 {
		return a, fmt.Errorf("%w: no call given", errHelperRequest)
	}
	want := map[string]int{"check": 0, "create": 2, "snapshot": 4, "limit": 2, "subvolume": 1, "quota": 1, "remove": 2}
	n, ok := want[args[0]]
	if !ok || len(args)-1 != n {
		return a, fmt.Errorf("%w: %q with %d arguments", errHelperRequest, args[0], len(args)-1)
	}
	root, err := openHelperRoot(share, shareID)
	if err != nil {
		return a, err
	}
	defer unix.Close(root)
	s := &Share{root: share}
	l := localBtrfs{s}
	switch args[0] {
	case "check":
		return a, l.check(context.Background(), root)
	case "create":
		parent, name, err := helperEntry(root, args[1], args[2])
		if err != nil {
			return a, err
		}
		defer unix.Close(parent)
		return a, permanent(createSubvolume(parent, name))
	case "snapshot":
		src, err := helperOpen(root, args[1])
		if err != nil {
			return a, err
		}
		defer unix.Close(src)
		parent, name, err := helperEntry(root, args[2], args[3])
		if err != nil {
			return a, err
		}
		defer unix.Close(parent)
		if args[4] != "ro" && args[4] != "rw" {
			return a, fmt.Errorf("%w: snapshot mode %q: want ro or rw", errHelperRequest, args[4])
		}
		return a, snapshotSubvolume(src, parent, name, args[4] == "ro")
	case "limit":
		bytes, err := strconv.ParseInt(args[2], 10, 64)
		if err != nil || bytes < 0 {
			return a, fmt.Errorf("%w: limit %q: want a number of bytes", errHelperRequest, args[2])
		}
		fd, err := helperOpen(root, args[1])
		if err != nil {
			return a, err
		}
		defer unix.Close(fd)
		a.Enforced, err = l.setLimit(context.Background(), fd, nil, bytes)
		if err != nil {
			return a, fmt.Errorf("%s on %s: %w", args[1], share, err)
		}
		return a, nil
	case "subvolume", "quota":
		fd, err := helperOpen(root, args[1])
		if err != nil {
			return a, err
		}
		defer unix.Close(fd)
		if args[0] == "quota" {
			a.Quota, err = SubvolumeQuota(fd)
		} else {
			a.Subvolume, err = isSubvolume(fd)
		}
		return a, err
	default: // remove
		if !removable(args[1], args[2]) {
			return a, fmt.Errorf("%w: %s/%s is not one of carve's temporary or trashed entries", errHelperRequest, args[1], args[2])
		}
		parent, name, err := helperEntry(root, args[1], args[2])
		if errors.Is(err, ErrNotFound) {
			return a, nil
		}
		if err != nil {
			return a, err
		}
		defer unix.Close(parent)
		return a, removeAllAt(parent, name)
	}
}

// removable: the helper deletes only what carve itself deletes wholesale
// (a volume being made, the trash, leftovers of a snapshot), never a
// volume or a snapshot in place, whoever holds the ssh key.
func removable(parent, name string) bool {
	switch {
	case strings.HasPrefix(name, newPrefix):
		return true
	case parent == trashDir, parent == tmpDir:
		return true
	case parent == snapDir && strings.HasPrefix(name, snapNewPrefix):
		return true
	}
	return false
}

// openHelperRoot opens the share's path on the server and checks that it
// is a carve share, the one carve verified when it says which.
func openHelperRoot(share, shareID string) (int, error) {
	if !strings.HasPrefix(share, "/") {
		return -1, fmt.Errorf("%w: share %q is not an absolute path", errHelperRequest, share)
	}
	root, err := unix.Open(share, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("%w: open share %s: %w", ErrShareUnverified, share, err)
	}
	id, err := readIdentity(root)
	if err == nil && (id == nil || id.ID == "") {
		err = fmt.Errorf("it holds no %s with an ID: it is not a share carve has used", identityFile)
	}
	if err == nil && shareID != "" && id.ID != shareID {
		err = fmt.Errorf("it is share %s, and carve's view of the share is share %s: the StorageClass's share is not this export", id.ID, shareID)
	}
	if err != nil {
		unix.Close(root)
		return -1, fmt.Errorf("%w: %s: %w", ErrShareUnverified, share, err)
	}
	return root, nil
}

// helperPath splits a "/"-joined path below the share; "" is the share.
// Each segment is one plain name; openat2 refuses the rest.
func helperPath(p string) ([]string, error) {
	if p == "" {
		return nil, nil
	}
	segs := strings.Split(p, "/")
	for _, s := range segs {
		if s == "" || s == "." || s == ".." || strings.ContainsRune(s, 0) {
			return nil, fmt.Errorf("%w: path %q below the share", errHelperRequest, p)
		}
	}
	return segs, nil
}

func helperOpen(root int, p string) (int, error) {
	dir, err := helperPath(p)
	if err != nil {
		return -1, err
	}
	return resolve(root, dir)
}

// helperEntry opens the directory parent and checks name is one entry name.
func helperEntry(root int, parent, name string) (int, string, error) {
	if seg, err := helperPath(name); err != nil || len(seg) != 1 {
		return -1, "", fmt.Errorf("%w: entry name %q", errHelperRequest, name)
	}
	fd, err := helperOpen(root, parent)
	if err != nil {
		return -1, "", err
	}
	return fd, name, nil
}

// remoteBtrfs sends the share's btrfs calls to the helper.
type remoteBtrfs struct {
	s *Share
	r BtrfsRunner
}

func (b remoteBtrfs) call(ctx context.Context, args ...string) (BtrfsAnswer, error) {
	full := append([]string{"--id", b.s.identityID(), "--"}, args...)
	out, err := b.r.RunBtrfs(ctx, full)
	var a BtrfsAnswer
	if jerr := json.Unmarshal(out, &a); jerr != nil {
		if err == nil {
			err = fmt.Errorf("undecodable answer %q: %w", firstLine(string(out)), jerr)
		}
		return a, fmt.Errorf("btrfs helper (%s) %s: %w", b.r, args[0], err)
	}
	if a.Error != nil {
		return a, fmt.Errorf("btrfs helper (%s): %w", b.r, a.Error)
	}
	if err != nil {
		return a, fmt.Errorf("btrfs helper (%s) %s: %w", b.r, args[0], err)
	}
	return a, nil
}

func (b remoteBtrfs) check(ctx context.Context, _ int) error {
	_, err := b.call(ctx, "check")
	return err
}

func (b remoteBtrfs) createSubvolume(ctx context.Context, _ int, parentDir []string, name string) error {
	_, err := b.call(ctx, "create", joinDir(parentDir, ""), name)
	return err
}

func (b remoteBtrfs) snapshot(ctx context.Context, _ int, srcDir []string, _ int, parentDir []string, name string, readonly bool) error {
	mode := "rw"
	if readonly {
		mode = "ro"
	}
	_, err := b.call(ctx, "snapshot", joinDir(srcDir, ""), joinDir(parentDir, ""), name, mode)
	return err
}

func (b remoteBtrfs) setLimit(ctx context.Context, _ int, dir []string, bytes int64) (bool, error) {
	a, err := b.call(ctx, "limit", joinDir(dir, ""), strconv.FormatInt(bytes, 10))
	return a.Enforced, err
}

func (b remoteBtrfs) isSubvolume(ctx context.Context, _ int, dir []string) (bool, error) {
	a, err := b.call(ctx, "subvolume", joinDir(dir, ""))
	return a.Subvolume, err
}

func (b remoteBtrfs) quota(ctx context.Context, _ int, dir []string) (*Quota, error) {
	a, err := b.call(ctx, "quota", joinDir(dir, ""))
	return a.Quota, err
}

func (b remoteBtrfs) remove(ctx context.Context, _ int, parentDir []string, name string) error {
	_, err := b.call(ctx, "remove", joinDir(parentDir, ""), name)
	return err
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
