// Package volume holds carve's policy for carving, re-attaching and deleting
// per-claim directories. Both binaries call it; it knows backends only through
// pkg/backend and Kubernetes only through the Referrers it is given.
package volume

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/sharemount"
	"github.com/carve-csi/carve/pkg/volid"
)

// Ref is a PersistentVolume that points at a location.
type Ref struct {
	PV        string
	Namespace string // of its claim; "" when it has none
	// Live: bound to, or reserved for, a claim that still exists. A Released
	// PV whose claim is gone is not live: its data may be re-attached.
	Live bool
}

// Referrers finds the PVs pointing at a location (volid.ID.Location).
// The provisioner answers from its PV informer; nil means no cluster view.
type Referrers interface {
	Referrers(ctx context.Context, location string) ([]Ref, error)
	// Nested finds the PVs whose directory lies strictly inside location's.
	Nested(ctx context.Context, location string) ([]Ref, error)
}

// GIDAllocator hands out a supplemental group per volume.
type GIDAllocator interface {
	// Allocate returns a free GID in [min, max] and reserves it.
	Allocate(ctx context.Context, min, max int64) (int64, error)
	// Reserve marks gid used (a re-attached directory keeps its group).
	Reserve(gid int64)
	// Release frees gid (the PV is gone).
	Release(gid int64)
}

// Request asks for a volume for one claim.
type Request struct {
	Name      string // PV name (classic) or CSI volume name: the volume's identity
	Namespace string // claim namespace
	Claim     string // claim name
	Config    *params.Config
	Vars      params.Vars
	SizeBytes int64  // requested capacity; enforced where the backend is a Limiter
	ClaimUID  string // claim UID; names a volume-per-claim (Gluster mode volume)
	// Source fills the new volume from a snapshot or another volume (nil:
	// empty). It must be on the share the class renders the volume on.
	Source *Source
}

// Result is a carved or re-attached volume.
type Result struct {
	ID         volid.ID
	Reattached bool  // the directory held data from an earlier claim
	GID        int64 // supplemental group for pods; -1 when none
	Message    string
	// CapacityBytes recorded for an existing volume of the same name (a retry).
	CapacityBytes int64
	// Warnings for the claim's events (e.g. the size is not enforced).
	Warnings []string
}

// applyLimit enforces the size where the backend can.
func (s *Service) applyLimit(ctx context.Context, b backend.Backend, id volid.ID, bytes int64) error {
	l, ok := b.(backend.Limiter)
	if !ok || bytes <= 0 {
		return nil
	}
	if err := l.SetLimit(ctx, id, bytes); err != nil {
		return fmt.Errorf("set size limit of %s: %w", id.DirPath(), err)
	}
	return nil
}

// Service carves volumes.
type Service struct {
	backends  map[string]backend.Backend
	referrers Referrers
	gids      GIDAllocator
	now       func() time.Time

	mu         sync.Mutex
	pending    map[string]pending // location → volume handed out, PV maybe not visible yet
	shareLocks map[*dirvol.Share]*sync.Mutex

	inUse map[string]int // snapshots and volumes a copy reads (use)

	purgeMu  sync.Mutex
	purging  map[*dirvol.Share]bool
	purgeWG  sync.WaitGroup
	purgeCtx context.Context
}

type pending struct {
	name      string
	namespace string
	at        time.Time
}

// pendingTTL bounds how long a handed-out volume counts as live without its PV
// appearing (the lib creates the PV right after Provision returns).
const pendingTTL = 5 * time.Minute

// Options configure a Service.
type Options struct {
	Referrers Referrers
	GIDs      GIDAllocator
	// PurgeContext bounds background purges of deleted volumes.
	PurgeContext context.Context
}

// New returns a Service over the given backends.
func New(opts Options, backends ...backend.Backend) *Service {
	s := &Service{
		backends:   map[string]backend.Backend{},
		referrers:  opts.Referrers,
		gids:       opts.GIDs,
		now:        time.Now,
		pending:    map[string]pending{},
		shareLocks: map[*dirvol.Share]*sync.Mutex{},
		purging:    map[*dirvol.Share]bool{},
		purgeCtx:   opts.PurgeContext,
	}
	if s.purgeCtx == nil {
		s.purgeCtx = context.Background()
	}
	for _, b := range backends {
		s.backends[b.Kind()] = b
	}
	return s
}

// Backend returns the backend of a kind.
func (s *Service) Backend(kind string) (backend.Backend, error) {
	b, ok := s.backends[kind]
	if !ok {
		return nil, fmt.Errorf("%w: backend %q is not enabled in this carve", backend.ErrInvalid, kind)
	}
	return b, nil
}

// Locate renders the request's path into a volume ID without touching storage.
func (s *Service) Locate(req Request) (volid.ID, backend.Backend, error) {
	cfg := req.Config
	b, err := s.Backend(cfg.Backend)
	if err != nil {
		return volid.ID{}, nil, err
	}
	dir, err := cfg.PathPattern.Render(req.Vars)
	if err != nil {
		return volid.ID{}, nil, err
	}
	id := volid.ID{Backend: cfg.Backend, Servers: b.Servers(cfg), Share: cfg.Share, Dir: dir, OnDelete: cfg.OnDelete}
	if err := id.Validate(); err != nil {
		return volid.ID{}, nil, fmt.Errorf("%w: %w", backend.ErrInvalid, err)
	}
	return id, b, nil
}

// Share opens the engine of the share holding id's directory and verifies
// that the share is mounted and is the one carve knows (dirvol.Share.Verify):
// otherwise the error (backend.ErrUnavailable) names the share and its local
// path, and nothing is written.
func (s *Service) Share(ctx context.Context, id volid.ID) (*dirvol.Share, error) {
	b, err := s.Backend(id.Backend)
	if err != nil {
		return nil, err
	}
	return s.openShare(ctx, b, id)
}

func (s *Service) openShare(ctx context.Context, b backend.Backend, id volid.ID) (*dirvol.Share, error) {
	share, err := b.Share(ctx, id.Servers, id.Share)
	if err != nil {
		return nil, err
	}
	if err := share.Verify(); err != nil {
		return nil, fmt.Errorf("%w: %s share %s: %w", backend.ErrUnavailable, id.Backend, sharemount.Key(id.Servers[0], id.Share), err)
	}
	return share, nil
}

// Create carves the directory for a claim, or re-attaches retained data at the
// same path when that is safe. It is idempotent for the same req.Name.
func (s *Service) Create(ctx context.Context, req Request) (*Result, error) {
	logger := klog.FromContext(ctx)
	if req.Config != nil && req.Config.VolumePerClaim() {
		if req.Source != nil {
			return nil, errWholeVolume
		}
		return s.createVolume(ctx, req)
	}
	id, b, err := s.Locate(req)
	if err != nil {
		return nil, err
	}
	if req.Source != nil && req.Source.shareLocation() != id.ShareLocation() {
		return nil, fmt.Errorf("%w: the data source %s is on another share than the claim's StorageClass renders the volume on (%s): "+
			"carve restores and clones within one share", backend.ErrInvalid, req.Source.String(), id.ShareLocation())
	}
	share, err := s.openShare(ctx, b, id)
	if err != nil {
		return nil, err
	}
	loc := id.Location()
	meta := dirvol.Meta{PV: req.Name, Namespace: req.Namespace, Claim: req.Claim, CapacityBytes: req.SizeBytes, Updated: s.now().UTC()}

	// One decision per share at a time: two claims rendering the same path
	// must not both see it free.
	unlockShare := s.lockLocation(share)
	var once sync.Once
	unlock := func() { once.Do(unlockShare) }
	defer unlock()

	info, err := share.Lookup(id.Dir)
	switch {
	case errors.Is(err, dirvol.ErrNotFound):
		if err := s.checkAncestors(ctx, share, id, req.Name); err != nil {
			return nil, err
		}
		if other, err := s.nestedVolume(ctx, share, id, req.Name, false); err != nil {
			return nil, err
		} else if other != "" {
			return nil, fmt.Errorf("%w: %s would contain the directory of %s", errNested, id.DirPath(), other)
		}
		if req.Config.Layout == params.LayoutBtrfs {
			// Recorded so dirvol makes a subvolume limited to the size.
			meta.Layout = params.LayoutBtrfs
		}
		var res *Result
		if req.Source != nil {
			res, err = s.fill(ctx, share, id, req, meta, unlock)
		} else {
			res, err = s.carve(ctx, share, id, req, meta)
		}
		if err != nil {
			return nil, err
		}
		s.markPending(loc, req)
		return res, s.applyClaimLimit(ctx, b, id, req, res)
	case err != nil:
		return nil, wrapStorage(err)
	}

	if info.Meta != nil && info.Meta.PV == req.Name {
		if info.Meta.Source != req.Source.String() {
			return nil, fmt.Errorf("%w: volume %s exists, filled from %q, and the request names %q as its data source",
				backend.ErrExists, req.Name, info.Meta.Source, req.Source.String())
		}
		// A retry for the same volume (e.g. the PV could not be saved, or the
		// process died before saving it): its GID must stay taken, and a
		// limit an expansion raised since must not be lowered.
		s.markPending(loc, req)
		req.SizeBytes = max(req.SizeBytes, info.Meta.CapacityBytes)
		res := &Result{ID: id, GID: groupOf(info, req.Config), CapacityBytes: info.Meta.CapacityBytes}
		if res.GID >= 0 && s.gids != nil && req.Config.AllocateGID() {
			s.gids.Reserve(res.GID)
		}
		return res, s.applyClaimLimit(ctx, b, id, req, res)
	}
	if req.Source != nil {
		return nil, fmt.Errorf("%w: directory %s on %s exists already; carve fills only new directories from a data source "+
			"(delete the old data or change pathPattern)", backend.ErrConflict, id.DirPath(), id.Share)
	}
	if s.referrers == nil && info.Meta != nil && info.Meta.PV != "" {
		// Without a cluster view carve cannot tell whether that volume still
		// exists, and a delete (which carries only the ID the two would
		// share) could no longer tell whose deletion it is.
		return nil, fmt.Errorf("%w: directory %s on %s is recorded for volume %s; without a cluster view (--kube-referrers) "+
			"carve cannot tell whether that volume still exists, so it does not hand the directory to %s",
			backend.ErrConflict, id.DirPath(), id.Share, info.Meta.PV, req.Name)
	}
	if err := s.checkReattach(ctx, loc, req, info); err != nil {
		return nil, err
	}
	if err := s.checkAncestors(ctx, share, id, req.Name); err != nil {
		return nil, err
	}
	if other, err := s.nestedVolume(ctx, share, id, req.Name, true); err != nil {
		return nil, err
	} else if other != "" {
		return nil, fmt.Errorf("%w: existing directory %s holds the directory of %s, so it cannot be a volume of its own "+
			"(check the pathPattern of the claim's StorageClass against the other classes on this share)", errNested, id.DirPath(), other)
	}
	gid := groupOf(info, req.Config)
	meta.GID = max(gid, 0)
	if info.Meta != nil {
		meta.Layout = info.Meta.Layout // as it was made, whatever the class says now
	}
	if err := share.SetMeta(id.Dir, meta); err != nil {
		return nil, wrapStorage(err)
	}
	s.markPending(loc, req)
	if gid >= 0 && s.gids != nil && req.Config.AllocateGID() {
		s.gids.Reserve(gid)
	}
	msg := fmt.Sprintf("re-attached existing directory %s on %s:%s (data retained from an earlier claim)", id.DirPath(), id.Servers[0], id.Share)
	res := &Result{ID: id, Reattached: true, GID: gid, Message: msg}
	if err := s.applyClaimLimit(ctx, b, id, req, res); err != nil {
		return nil, err
	}
	logger.Info("Re-attaching retained volume directory", "volume", req.Name, "dir", id.DirPath(), "share", id.Share)
	return res, nil
}

func (s *Service) carve(ctx context.Context, share *dirvol.Share, id volid.ID, req Request, meta dirvol.Meta) (*Result, error) {
	return s.carveWith(ctx, id, req, meta, func(own dirvol.Owner, meta dirvol.Meta) (bool, error) {
		return share.Create(ctx, id.Dir, own, meta)
	})
}

// carveWith allocates the owner of a new directory and makes it with create.
func (s *Service) carveWith(ctx context.Context, id volid.ID, req Request, meta dirvol.Meta,
	create func(dirvol.Owner, dirvol.Meta) (bool, error)) (*Result, error) {
	cfg := req.Config
	own := dirvol.Owner{Mode: cfg.DirMode()}
	if cfg.UID != nil {
		own.UID = *cfg.UID
	}
	gid := int64(-1)
	switch {
	case cfg.GID != nil:
		gid = *cfg.GID
	case s.gids != nil:
		g, err := s.gids.Allocate(ctx, cfg.GIDMin, cfg.GIDMax)
		if err != nil {
			return nil, fmt.Errorf("allocate a GID in %d..%d: %w", cfg.GIDMin, cfg.GIDMax, err)
		}
		gid = g
	}
	own.GID = max(gid, 0)
	meta.GID = own.GID
	created, err := create(own, meta)
	if err != nil || !created {
		if s.gids != nil && cfg.AllocateGID() && gid >= 0 {
			s.gids.Release(gid)
		}
		if err != nil {
			if isClassified(err) {
				return nil, err
			}
			return nil, wrapStorage(err)
		}
		// Lost a race outside this process; let the caller retry the decision.
		return nil, fmt.Errorf("%w: %s appeared while carving it; retrying", backend.ErrBusy, id.DirPath())
	}
	klog.FromContext(ctx).V(2).Info("Carved volume directory", "volume", req.Name, "dir", id.DirPath(), "share", id.Share, "gid", gid)
	return &Result{ID: id, GID: gid}, nil
}

// checkReattach enforces: never two live claims on one directory, never across
// namespaces.
func (s *Service) checkReattach(ctx context.Context, loc string, req Request, info *dirvol.Info) error {
	dir := strings.Join(info.Path, "/")
	refs, err := s.refs(ctx, loc, req.Name)
	if err != nil {
		return err
	}
	sameNamespaceReleased := false
	for _, r := range refs {
		if r.Live {
			return fmt.Errorf("%w: directory %s is in use by PersistentVolume %s; two live claims never share a directory "+
				"(change pathPattern or the claim's name)", backend.ErrConflict, dir, r.PV)
		}
		if r.Namespace != "" && r.Namespace != req.Namespace {
			return fmt.Errorf("%w: directory %s belongs to a released PersistentVolume %s of namespace %q",
				backend.ErrConflict, dir, r.PV, r.Namespace)
		}
		if r.Namespace == req.Namespace {
			sameNamespaceReleased = true
		}
	}
	if info.Meta != nil && info.Meta.Namespace != "" && info.Meta.Namespace != req.Namespace {
		return fmt.Errorf("%w: directory %s was carved for namespace %q; a claim in %q cannot re-attach it",
			backend.ErrConflict, dir, info.Meta.Namespace, req.Namespace)
	}
	if !req.Config.PathPattern.Namespaced() && !sameNamespaceReleased {
		return fmt.Errorf("%w: directory %s already exists and pathPattern %q does not contain ${pvc.metadata.namespace} "+
			"as a whole segment, so carve cannot tell that the data belongs to namespace %q",
			backend.ErrConflict, dir, req.Config.PathPattern, req.Namespace)
	}
	return nil
}

// refs merges the cluster's view with volumes handed out but not yet visible.
func (s *Service) refs(ctx context.Context, loc, self string) ([]Ref, error) {
	var refs []Ref
	if s.referrers != nil {
		rs, err := s.referrers.Referrers(ctx, loc)
		if err != nil {
			return nil, fmt.Errorf("%w: list PersistentVolumes: %w", backend.ErrUnavailable, err)
		}
		for _, r := range rs {
			if r.PV != self {
				refs = append(refs, r)
			}
		}
	}
	s.mu.Lock()
	p, ok := s.pending[loc]
	s.mu.Unlock()
	if ok && p.name != self && s.now().Sub(p.at) < pendingTTL {
		seen := false
		for _, r := range refs {
			seen = seen || r.PV == p.name
		}
		if !seen {
			refs = append(refs, Ref{PV: p.name, Namespace: p.namespace, Live: true})
		}
	}
	return refs, nil
}

// dropPending forgets the volume handed out at loc if it is name.
func (s *Service) dropPending(loc, name string) {
	if name == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.pending[loc]; ok && p.name == name {
		delete(s.pending, loc)
	}
}

func (s *Service) markPending(loc string, req Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for k, p := range s.pending {
		if now.Sub(p.at) >= pendingTTL {
			delete(s.pending, k)
		}
	}
	s.pending[loc] = pending{name: req.Name, namespace: req.Namespace, at: now}
}

// Outcome says what Delete did with the data.
type Outcome struct {
	Action backend.Action
	Where  string // archive path, for archived
}

// Delete applies the onDelete policy recorded in the ID. It never removes a
// directory that another live PV references; name is the PV being deleted.
// name may be "" when the caller cannot know it (a CSI DeleteVolume carries
// only the ID, which a re-attaching volume shares): then the referrers alone
// decide, and the directory's record is not compared.
func (s *Service) Delete(ctx context.Context, name string, id volid.ID) (Outcome, error) {
	logger := klog.FromContext(ctx)
	// The volume being deleted no longer counts as handed out: a claim
	// recreated right after must not wait pendingTTL to re-attach its data.
	s.dropPending(id.Location(), name)
	if id.OnDelete == params.OnDeleteRetain {
		return Outcome{Action: backend.ActionRetained}, nil
	}
	b, err := s.Backend(id.Backend)
	if err != nil {
		return Outcome{}, err
	}
	if len(id.Dir) == 0 {
		return s.deleteVolume(ctx, b, name, id)
	}
	share, err := s.openShare(ctx, b, id)
	if err != nil {
		return Outcome{}, err
	}
	unlock := s.lockLocation(share)
	defer unlock()

	refs, err := s.refs(ctx, id.Location(), name)
	if err != nil {
		return Outcome{}, err
	}
	for _, r := range refs {
		if r.Live {
			logger.Info("Keeping volume directory: another live PersistentVolume uses it", "dir", id.DirPath(), "user", r.PV)
			return Outcome{Action: backend.ActionKeptInUse, Where: r.PV}, nil
		}
	}
	if err := s.busy(id.Location(), "volume "+id.DirPath()); err != nil {
		return Outcome{}, err
	}
	info, err := share.Lookup(id.Dir)
	switch {
	case errors.Is(err, dirvol.ErrNotFound):
		return Outcome{Action: backend.ActionAbsent}, nil
	case err != nil:
		return Outcome{}, wrapStorage(err)
	case info.Meta == nil:
		// Not carved (or re-attached) by carve: a pattern's parent holding
		// other volumes, or data from elsewhere. Never carve's to remove.
		logger.Info("Keeping directory: carve has no record of it", "dir", id.DirPath())
		return Outcome{Action: backend.ActionKeptUnrecorded}, nil
	case name != "" && info.Meta.PV != "" && info.Meta.PV != name:
		// Re-attached by a newer volume since; that one decides.
		logger.Info("Keeping volume directory: it was re-attached by another volume", "dir", id.DirPath(), "holder", info.Meta.PV)
		return Outcome{Action: backend.ActionKeptInUse, Where: info.Meta.PV}, nil
	}
	if other, err := s.nestedVolume(ctx, share, id, name, true); err != nil {
		return Outcome{}, err
	} else if other != "" {
		logger.Info("Keeping volume directory: it holds another volume's directory", "dir", id.DirPath(), "other", other)
		return Outcome{Action: backend.ActionKeptHoldsVolumes, Where: other}, nil
	}

	if l, ok := b.(backend.Limiter); ok {
		if err := l.RemoveLimit(ctx, id); err != nil {
			return Outcome{}, fmt.Errorf("remove size limit of %s: %w", id.DirPath(), err)
		}
	}
	switch id.OnDelete {
	case params.OnDeleteArchive:
		where, err := share.Archive(ctx, id.Dir, s.now())
		if err != nil {
			return Outcome{}, wrapStorage(err)
		}
		return Outcome{Action: backend.ActionArchived, Where: where}, nil
	case params.OnDeleteDelete:
		if _, err := share.Trash(ctx, id.Dir); err != nil {
			return Outcome{}, wrapStorage(err)
		}
		s.purgeLater(ctx, share)
		return Outcome{Action: backend.ActionDeleted}, nil
	}
	return Outcome{}, fmt.Errorf("%w: onDelete %q", backend.ErrInvalid, id.OnDelete)
}

// DeletingName names the volume a delete that carries only an ID is for
// (CSI DeleteVolume): the ID is shared by a volume and any later volume that
// re-attached its directory. The directory's record names its last holder.
// Without a cluster view that is the volume being deleted (Create hands a
// recorded directory to no other volume then). With one, it is the holder
// only if its PV is visible and released; otherwise "" lets the live PVs
// (and volumes handed out but not yet visible) decide, which keeps the
// directory when in doubt.
func (s *Service) DeletingName(ctx context.Context, id volid.ID) (string, error) {
	if len(id.Dir) == 0 {
		return "", nil // a whole Gluster volume has no directory record
	}
	share, err := s.Share(ctx, id)
	if err != nil {
		return "", err
	}
	info, err := share.Lookup(id.Dir)
	switch {
	case errors.Is(err, dirvol.ErrNotFound):
		return "", nil
	case err != nil:
		return "", wrapStorage(err)
	case info.Meta == nil || info.Meta.PV == "":
		return "", nil
	}
	holder := info.Meta.PV
	if s.referrers == nil {
		return holder, nil
	}
	refs, err := s.referrers.Referrers(ctx, id.Location())
	if err != nil {
		return "", fmt.Errorf("%w: list PersistentVolumes: %w", backend.ErrUnavailable, err)
	}
	for _, r := range refs {
		if r.PV == holder && !r.Live {
			return holder, nil
		}
	}
	return "", nil
}

// Expand records a larger size for a volume and enforces it where the backend
// is a Limiter. It never shrinks: it returns the larger of the recorded and the
// requested size. A missing directory is backend.ErrNotFound.
func (s *Service) Expand(ctx context.Context, id volid.ID, bytes int64) (int64, error) {
	b, err := s.Backend(id.Backend)
	if err != nil {
		return 0, err
	}
	if len(id.Dir) == 0 {
		return s.expandVolume(ctx, b, id, bytes)
	}
	share, err := s.openShare(ctx, b, id)
	if err != nil {
		return 0, err
	}
	unlock := s.lockLocation(share)
	defer unlock()
	info, err := share.Lookup(id.Dir)
	if errors.Is(err, dirvol.ErrNotFound) {
		return 0, fmt.Errorf("%w: directory %s on %s", backend.ErrNotFound, id.DirPath(), id.Share)
	}
	if err != nil {
		return 0, wrapStorage(err)
	}
	var meta dirvol.Meta
	if info.Meta != nil {
		meta = *info.Meta
	}
	if meta.CapacityBytes >= bytes {
		return meta.CapacityBytes, nil
	}
	if err := s.applyLimit(ctx, b, id, bytes); err != nil {
		return 0, err
	}
	meta.CapacityBytes = bytes
	meta.Updated = s.now().UTC()
	if err := share.SetMeta(id.Dir, meta); err != nil {
		return 0, wrapStorage(err)
	}
	klog.FromContext(ctx).V(2).Info("Expanded volume", "dir", id.DirPath(), "share", id.Share, "bytes", bytes)
	return bytes, nil
}

// purgeLater empties the share's trash in the background, one purge per share
// at a time; a request during a purge makes it run once more.
func (s *Service) purgeLater(ctx context.Context, share *dirvol.Share) {
	s.purgeMu.Lock()
	defer s.purgeMu.Unlock()
	if running, ok := s.purging[share]; ok {
		if !running {
			return
		}
		s.purging[share] = false // rerun when done
		return
	}
	s.purging[share] = true
	logger := klog.FromContext(ctx)
	s.purgeWG.Add(1)
	go func() {
		defer s.purgeWG.Done()
		for {
			if err := share.Purge(klog.NewContext(s.purgeCtx, logger)); err != nil {
				logger.Error(err, "Purging deleted volumes failed; will retry on the next delete", "share", share.Root())
			}
			s.purgeMu.Lock()
			again := !s.purging[share]
			if !again {
				delete(s.purging, share)
			} else {
				s.purging[share] = true
			}
			s.purgeMu.Unlock()
			if !again {
				return
			}
		}
	}()
}

// WaitPurges blocks until background purges are done (tests, shutdown).
func (s *Service) WaitPurges() { s.purgeWG.Wait() }

func (s *Service) lockLocation(share *dirvol.Share) func() {
	// One lock per share keeps the policy decision and the change together.
	s.mu.Lock()
	l, ok := s.shareLocks[share]
	if !ok {
		l = &sync.Mutex{}
		s.shareLocks[share] = l
	}
	s.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// groupOf is the supplemental group to advertise for an existing directory.
func groupOf(info *dirvol.Info, cfg *params.Config) int64 {
	if cfg.GID != nil {
		return *cfg.GID
	}
	if info.Mode&0o2000 != 0 && int64(info.GID) >= cfg.GIDMin && int64(info.GID) <= cfg.GIDMax {
		return int64(info.GID)
	}
	return -1
}

// wrapStorage classifies filesystem errors, once for both binaries: unsafe
// paths and shares that cannot hold the class's layout are conflicts the
// user must resolve, paths the filesystem refuses are
// invalid requests, anything else is worth a retry.
func wrapStorage(err error) error {
	if isClassified(err) {
		return err
	}
	if errors.Is(err, dirvol.ErrUnsafe) || errors.Is(err, dirvol.ErrUnsupportedFile) || errors.Is(err, dirvol.ErrLayout) {
		return fmt.Errorf("%w: %w", backend.ErrConflict, err)
	}
	if errors.Is(err, dirvol.ErrPermanent) {
		// The filesystem refuses the path itself (a name too long for it):
		// retrying cannot help.
		return fmt.Errorf("%w: %w", backend.ErrInvalid, err)
	}
	return fmt.Errorf("%w: %w", backend.ErrUnavailable, err)
}

// isClassified: err already carries one of pkg/backend's outcomes.
func isClassified(err error) bool {
	for _, e := range []error{backend.ErrInvalid, backend.ErrConflict, backend.ErrUnavailable, backend.ErrNotFound,
		backend.ErrBusy, backend.ErrExists, backend.ErrTooSmall} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
