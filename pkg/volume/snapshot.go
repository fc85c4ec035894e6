package volume

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"k8s.io/klog/v2"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/volid"
)

// errWholeVolume explains why a Gluster volume per claim has no snapshots.
var errWholeVolume = fmt.Errorf("%w: snapshots and clones of a Gluster volume per claim (mode volume) are not supported: "+
	"carve copies directories, and Gluster's own snapshots need every brick on thinly provisioned LVM, "+
	"which carve's bricks are not; use mode subdir for claims that need snapshots", backend.ErrInvalid)

// Source is the data a new volume is filled from: a snapshot or another
// volume (a clone). Exactly one is set.
type Source struct {
	Snapshot *volid.SnapshotID
	Volume   *volid.ID
}

// String is what the volume's record keeps, so a retry can be compared.
func (src *Source) String() string {
	switch {
	case src == nil:
		return ""
	case src.Snapshot != nil:
		return src.Snapshot.String()
	case src.Volume != nil:
		return src.Volume.String()
	}
	return ""
}

func (src *Source) shareLocation() string {
	if src.Snapshot != nil {
		return src.Snapshot.ShareLocation()
	}
	return src.Volume.ShareLocation()
}

// Snapshot is a snapshot as the front doors report it.
type Snapshot struct {
	ID        volid.SnapshotID
	SourceID  string // the source volume's ID
	SizeBytes int64  // the source's recorded size: the least a restore needs
	Created   time.Time
	Stats     dirvol.CopyStats
}

func snapshotOf(rec *dirvol.SnapshotRecord) (Snapshot, error) {
	id, err := volid.ParseSnapshot(rec.ID)
	if err != nil {
		return Snapshot{}, err
	}
	if id.Entry != rec.Entry {
		return Snapshot{}, fmt.Errorf("%w: snapshot record %s names entry %s", backend.ErrConflict, rec.Entry, id.Entry)
	}
	return Snapshot{ID: id, SourceID: rec.SourceID, SizeBytes: rec.SizeBytes, Created: rec.Created, Stats: rec.Stats}, nil
}

// CreateSnapshot copies the volume src into its share's snapshot area as
// the snapshot called name. It is idempotent per name: the same name and
// source return the existing snapshot, the same name with another source is
// backend.ErrExists. A missing source is backend.ErrNotFound.
func (s *Service) CreateSnapshot(ctx context.Context, name string, src volid.ID) (*Snapshot, error) {
	if len(src.Dir) == 0 {
		return nil, errWholeVolume
	}
	b, err := s.Backend(src.Backend)
	if err != nil {
		return nil, err
	}
	share, err := s.openShare(ctx, b, src)
	if err != nil {
		return nil, err
	}
	entry := dirvol.SnapshotEntry(name)
	sid := volid.SnapshotID{Backend: src.Backend, Servers: src.Servers, Share: src.Share, Entry: entry}
	if got, err := share.Snapshot(entry); err == nil {
		return s.sameSnapshot(got, name, src)
	} else if !errors.Is(err, dirvol.ErrSnapshotNotFound) {
		return nil, wrapStorage(err)
	}
	unlock := s.lockLocation(share)
	info, err := share.Lookup(src.Dir)
	if errors.Is(err, dirvol.ErrNotFound) {
		unlock()
		return nil, fmt.Errorf("%w: source volume directory %s on %s", backend.ErrNotFound, src.DirPath(), src.Share)
	}
	if err != nil {
		unlock()
		return nil, wrapStorage(err)
	}
	if info.Meta == nil {
		unlock()
		return nil, fmt.Errorf("%w: %s on %s is not a volume carve carved or adopted (no record), so carve does not snapshot it",
			backend.ErrConflict, src.DirPath(), src.Share)
	}
	// Taken under the decision lock, as Delete checks it (see use).
	defer s.use(src.Location())()
	unlock()
	rec := dirvol.SnapshotRecord{
		Entry: entry, ID: sid.String(), Name: name, SourceID: src.String(),
		Namespace: info.Meta.Namespace, SizeBytes: info.Meta.CapacityBytes, Created: s.now().UTC(),
	}
	got, created, err := share.CreateSnapshot(ctx, src.Dir, rec)
	if err != nil {
		if errors.Is(err, dirvol.ErrNotFound) {
			return nil, fmt.Errorf("%w: %w", backend.ErrNotFound, err)
		}
		return nil, wrapStorage(err)
	}
	if !created {
		return s.sameSnapshot(got, name, src)
	}
	klog.FromContext(ctx).Info("Took snapshot", "snapshot", name, "snapshotID", rec.ID, "source", src.String(),
		"files", got.Stats.Files, "bytes", got.Stats.Bytes, "reflinked", got.Stats.Reflinked, "elapsed", got.Stats.Elapsed)
	snap, err := snapshotOf(got)
	return &snap, err
}

// sameSnapshot accepts an existing snapshot for a retry of name from src.
func (s *Service) sameSnapshot(got *dirvol.SnapshotRecord, name string, src volid.ID) (*Snapshot, error) {
	if got.Name != name {
		return nil, fmt.Errorf("%w: snapshot entry %s holds snapshot %q, not %q", backend.ErrExists, got.Entry, got.Name, name)
	}
	if prev, err := volid.Parse(got.SourceID); err != nil || prev.Location() != src.Location() {
		return nil, fmt.Errorf("%w: snapshot %q exists, of volume %s, not %s", backend.ErrExists, name, got.SourceID, src.String())
	}
	snap, err := snapshotOf(got)
	return &snap, err
}

// DeleteSnapshot removes a snapshot (to the trash, purged in the
// background). It never touches a volume; a missing snapshot is success; a
// snapshot being restored right now is backend.ErrBusy.
func (s *Service) DeleteSnapshot(ctx context.Context, id volid.SnapshotID) error {
	b, err := s.Backend(id.Backend)
	if err != nil {
		return err
	}
	share, err := s.openShare(ctx, b, volid.ID{Backend: id.Backend, Servers: id.Servers, Share: id.Share})
	if err != nil {
		return err
	}
	unlock := s.lockLocation(share)
	defer unlock()
	if err := s.busy(snapshotKey(id), "snapshot "+id.String()); err != nil {
		return err
	}
	if err := share.DeleteSnapshot(ctx, id.Entry); err != nil {
		return wrapStorage(err)
	}
	s.purgeLater(ctx, share)
	return nil
}

// GetSnapshot returns one snapshot, or backend.ErrNotFound.
func (s *Service) GetSnapshot(ctx context.Context, id volid.SnapshotID) (*Snapshot, error) {
	b, err := s.Backend(id.Backend)
	if err != nil {
		return nil, err
	}
	share, err := s.openShare(ctx, b, volid.ID{Backend: id.Backend, Servers: id.Servers, Share: id.Share})
	if err != nil {
		return nil, err
	}
	rec, err := share.Snapshot(id.Entry)
	if errors.Is(err, dirvol.ErrSnapshotNotFound) {
		return nil, fmt.Errorf("%w: %w", backend.ErrNotFound, err)
	}
	if err != nil {
		return nil, wrapStorage(err)
	}
	snap, err := snapshotOf(rec)
	if err != nil {
		return nil, err
	}
	if snap.ID.ShareLocation() != id.ShareLocation() {
		return nil, fmt.Errorf("%w: snapshot %s is recorded as %s", backend.ErrNotFound, id.String(), rec.ID)
	}
	return &snap, nil
}

// Snapshots lists snapshots, sorted by ID: those of the volume src when
// given, else those on every share this process knows (the backends'
// mapped shares and every share opened since start). Shares that cannot be
// read are logged and left out.
func (s *Service) Snapshots(ctx context.Context, src *volid.ID) ([]Snapshot, error) {
	logger := klog.FromContext(ctx)
	var shares []*dirvol.Share
	if src != nil {
		b, err := s.Backend(src.Backend)
		if err != nil {
			return nil, nil // not a backend of this carve: it has no snapshots here
		}
		share, err := s.openShare(ctx, b, *src)
		if err != nil {
			return nil, err
		}
		shares = []*dirvol.Share{share}
	} else {
		for _, b := range s.backends {
			if l, ok := b.(backend.ShareLister); ok {
				if _, err := l.MappedShares(ctx); err != nil {
					logger.Info("Listing snapshots without some mapped shares", "backend", b.Kind(), "err", err)
				}
			}
		}
		shares = dirvol.Opened()
	}
	seen := map[string]bool{}
	var out []Snapshot
	for _, share := range shares {
		recs, err := share.Snapshots(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			logger.Info("Listing snapshots without a share that cannot be read", "share", share.Root(), "err", err)
			continue
		}
		for i := range recs {
			snap, err := snapshotOf(&recs[i])
			if err != nil {
				logger.V(2).Info("Skipping a snapshot with a bad record", "share", share.Root(), "entry", recs[i].Entry, "err", err)
				continue
			}
			if src != nil {
				if prev, err := volid.Parse(snap.SourceID); err != nil || prev.Location() != src.Location() {
					continue
				}
			}
			if _, b := s.backends[snap.ID.Backend]; !b || seen[snap.ID.String()] {
				continue
			}
			seen[snap.ID.String()] = true
			out = append(out, snap)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID.String() < out[j].ID.String() })
	return out, nil
}

func snapshotKey(id volid.SnapshotID) string {
	return "snapshot:" + id.ShareLocation() + "#" + id.Entry
}

// use marks a snapshot or a volume as read by a copy, so that deleting it
// meanwhile is refused (backend.ErrBusy): a purge under a running copy would
// make it silently partial. Callers take it under the share's decision lock,
// which deletes hold while they check busy and move the data away.
func (s *Service) use(key string) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inUse == nil {
		s.inUse = map[string]int{}
	}
	s.inUse[key]++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.inUse[key]--; s.inUse[key] <= 0 {
			delete(s.inUse, key)
		}
	}
}

// busy is backend.ErrBusy while a copy reads key.
func (s *Service) busy(key, what string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inUse[key] > 0 {
		return fmt.Errorf("%w: %s is being copied (a snapshot, clone or restore); retry when it is done", backend.ErrBusy, what)
	}
	return nil
}

// fill carves the claim's directory filled from src, after the checks: the
// source exists on the same share, belongs to the claim's namespace (or
// the class allows another), and fits in the requested size. It returns
// with unlock called: the copy does not hold the share's decision lock.
func (s *Service) fill(ctx context.Context, share *dirvol.Share, id volid.ID, req Request, meta dirvol.Meta, unlock func()) (*Result, error) {
	src := req.Source
	var (
		srcNamespace string
		srcSize      int64
		key          string
	)
	if src.Snapshot != nil {
		rec, err := share.Snapshot(src.Snapshot.Entry)
		if errors.Is(err, dirvol.ErrSnapshotNotFound) {
			unlock()
			return nil, fmt.Errorf("%w: %w", backend.ErrNotFound, err)
		}
		if err != nil {
			unlock()
			return nil, wrapStorage(err)
		}
		if rec.ID != src.Snapshot.String() {
			unlock()
			return nil, fmt.Errorf("%w: snapshot %s is recorded as %s", backend.ErrNotFound, src.Snapshot.String(), rec.ID)
		}
		srcNamespace, srcSize, key = rec.Namespace, rec.SizeBytes, snapshotKey(*src.Snapshot)
	} else {
		info, err := share.Lookup(src.Volume.Dir)
		if errors.Is(err, dirvol.ErrNotFound) {
			unlock()
			return nil, fmt.Errorf("%w: source volume directory %s on %s", backend.ErrNotFound, src.Volume.DirPath(), src.Volume.Share)
		}
		if err != nil {
			unlock()
			return nil, wrapStorage(err)
		}
		if info.Meta == nil {
			unlock()
			return nil, fmt.Errorf("%w: source %s on %s is not a volume carve carved or adopted (no record)",
				backend.ErrConflict, src.Volume.DirPath(), src.Volume.Share)
		}
		srcNamespace, srcSize, key = info.Meta.Namespace, info.Meta.CapacityBytes, src.Volume.Location()
	}
	if err := req.Config.CheckDataSource(srcNamespace, req.Namespace); err != nil {
		unlock()
		return nil, err
	}
	if req.SizeBytes == 0 {
		// No size asked for: the source's, the least the data needs.
		req.SizeBytes, meta.CapacityBytes = srcSize, srcSize
	}
	if req.SizeBytes < srcSize {
		unlock()
		return nil, fmt.Errorf("%w: the claim asks for %d bytes, its data source %s has %d", backend.ErrTooSmall, req.SizeBytes, src.String(), srcSize)
	}
	defer s.use(key)()
	s.markPending(id.Location(), req)
	unlock()

	meta.Source = src.String()
	res, err := s.carveWith(ctx, id, req, meta, func(own dirvol.Owner, meta dirvol.Meta) (bool, error) {
		var created bool
		var stats dirvol.CopyStats
		var err error
		if src.Snapshot != nil {
			created, stats, err = share.CreateFromSnapshot(ctx, id.Dir, own, meta, src.Snapshot.Entry)
		} else {
			created, stats, err = share.CreateFromDir(ctx, id.Dir, own, meta, src.Volume.Dir)
		}
		if err == nil && created {
			klog.FromContext(ctx).Info("Filled volume from its data source", "volume", req.Name, "source", src.String(),
				"files", stats.Files, "bytes", stats.Bytes, "reflinked", stats.Reflinked, "vanished", stats.Vanished, "elapsed", stats.Elapsed)
		}
		if errors.Is(err, dirvol.ErrSnapshotNotFound) {
			err = fmt.Errorf("%w: %w", backend.ErrNotFound, err)
		}
		return created, err
	})
	if err != nil {
		s.dropPending(id.Location(), req.Name)
		return nil, err
	}
	return res, nil
}
