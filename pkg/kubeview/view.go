// Package kubeview is carve's Kubernetes view of its own PersistentVolumes,
// shared by both front doors: the annotations carve writes, how a PV names
// its volume, which PVs point at (or into) a directory and whether their
// claims are live, and the GID table. It answers volume.Referrers and
// volume.GIDAllocator from the informers the caller runs.
package kubeview

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/sharemount"
	"github.com/carve-csi/carve/pkg/volid"
	"github.com/carve-csi/carve/pkg/volume"
)

const (
	locationIndex = "carve-location"
	// withinIndex keys a PV by every ancestor of its directory, so the
	// volumes inside a directory are one lookup.
	withinIndex = "carve-within"
)

// ClusterView answers, from the PV and PVC informers the controller shares,
// which PVs point at a directory and whether their claims still exist; it
// also keeps the table of allocated GIDs.
type ClusterView struct {
	volumes cache.Indexer
	claims  ClaimLookup

	mu     sync.Mutex
	loaded bool
	used   map[int64]bool
	// recorded lists the GIDs recorded on the shares carve can reach (see
	// RecordedGIDs); nil means PVs only.
	recorded func(context.Context) ([]int64, error)
}

// RecordGIDsFrom makes the GID table also load the GIDs that list returns,
// before the first allocation: a directory carved just before a crash has
// its GID recorded on the share but no PV yet, and its retry will return
// that GID. Call it before the controller runs.
func (c *ClusterView) RecordGIDsFrom(list func(context.Context) ([]int64, error)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recorded = list
}

// RecordedGIDs lists the GIDs of every volume record on the mapped shares
// (--mount-map). Shares carve mounts on demand (--mounts-dir) are not
// listed: which ones exist is known only from StorageClasses, and mounting
// them all at start would make one unreachable server block every
// allocation; GID uniqueness across a crash is guaranteed for mapped shares.
func RecordedGIDs(m sharemount.Map) func(context.Context) ([]int64, error) {
	return func(ctx context.Context) ([]int64, error) {
		var gids []int64
		for key, local := range m {
			share, err := dirvol.Open(local)
			if err != nil {
				return nil, fmt.Errorf("%w: GID table: share %s at %s: %w", backend.ErrUnavailable, key, local, err)
			}
			recs, err := share.Records(ctx)
			if err != nil {
				return nil, fmt.Errorf("%w: GID table: records of share %s at %s: %w", backend.ErrUnavailable, key, local, err)
			}
			for _, r := range recs {
				if r.GID > 0 {
					gids = append(gids, r.GID)
				}
			}
		}
		return gids, nil
	}
}

// carveID is the volume ID of a carve PV in an informer's cache.
func carveID(obj any) (volid.ID, bool) {
	pv, ok := obj.(*v1.PersistentVolume)
	if !ok {
		return volid.ID{}, false
	}
	id, ok, err := VolumeID(pv)
	return id, ok && err == nil
}

// ClaimLookup answers whether a claim exists, and its UID: whether a PV's
// claim is live.
type ClaimLookup interface {
	ClaimUID(ctx context.Context, namespace, name string) (uid types.UID, exists bool, err error)
}

// cachedClaims answers from a claim informer's cache.
type cachedClaims struct{ cache.Indexer }

func (c cachedClaims) ClaimUID(_ context.Context, namespace, name string) (types.UID, bool, error) {
	obj, exists, err := c.GetByKey(namespace + "/" + name)
	if err != nil || !exists {
		return "", false, err
	}
	return obj.(metav1.Object).GetUID(), true, nil
}

// NewClusterView indexes the PV informer by carve location and answers
// claims from the claim informer's cache. Call it before the informers start.
func NewClusterView(pvInformer, pvcInformer cache.SharedIndexInformer) (*ClusterView, error) {
	return NewClusterViewLookup(pvInformer, cachedClaims{pvcInformer.GetIndexer()})
}

// NewClusterViewLookup is NewClusterView with claims looked up through
// claims: a process that holds no claim informer of its own (carve's CSI
// controller, beside csi-provisioner's) asks the API server for the few
// claims of PVs that point at a directory being decided on.
func NewClusterViewLookup(pvInformer cache.SharedIndexInformer, claims ClaimLookup) (*ClusterView, error) {
	err := pvInformer.AddIndexers(cache.Indexers{locationIndex: func(obj any) ([]string, error) {
		id, ok := carveID(obj)
		if !ok {
			return nil, nil
		}
		return []string{id.Location()}, nil
	}, withinIndex: func(obj any) ([]string, error) {
		id, ok := carveID(obj)
		if !ok {
			return nil, nil
		}
		keys := make([]string, 0, len(id.Dir))
		for i := 1; i < len(id.Dir); i++ {
			up := id
			up.Dir = id.Dir[:i]
			keys = append(keys, up.Location())
		}
		return keys, nil
	}})
	if err != nil {
		return nil, fmt.Errorf("index PersistentVolumes: %w", err)
	}
	return &ClusterView{volumes: pvInformer.GetIndexer(), claims: claims, used: map[int64]bool{}}, nil
}

var (
	_ volume.Referrers    = (*ClusterView)(nil)
	_ volume.GIDAllocator = (*ClusterView)(nil)
)

// Referrers implements volume.Referrers.
func (c *ClusterView) Referrers(ctx context.Context, location string) ([]volume.Ref, error) {
	return c.refs(ctx, locationIndex, location)
}

// Nested implements volume.Referrers.
func (c *ClusterView) Nested(ctx context.Context, location string) ([]volume.Ref, error) {
	return c.refs(ctx, withinIndex, location)
}

func (c *ClusterView) refs(ctx context.Context, index, location string) ([]volume.Ref, error) {
	objs, err := c.volumes.ByIndex(index, location)
	if err != nil {
		return nil, err
	}
	refs := make([]volume.Ref, 0, len(objs))
	for _, o := range objs {
		pv := o.(*v1.PersistentVolume)
		live, err := c.live(ctx, pv)
		if err != nil {
			return nil, fmt.Errorf("claim of PersistentVolume %s: %w", pv.Name, err)
		}
		r := volume.Ref{PV: pv.Name, Live: live}
		if pv.Spec.ClaimRef != nil {
			r.Namespace = pv.Spec.ClaimRef.Namespace
		}
		refs = append(refs, r)
	}
	return refs, nil
}

// live: a PV whose claim still exists, or one without a claim that any new
// claim could bind (conservative: such a PV may be handed out at any moment).
// A claim that cannot be looked up is an error, never taken as gone.
func (c *ClusterView) live(ctx context.Context, pv *v1.PersistentVolume) (bool, error) {
	ref := pv.Spec.ClaimRef
	if ref == nil {
		return true, nil
	}
	uid, exists, err := c.claims.ClaimUID(ctx, ref.Namespace, ref.Name)
	if err != nil || !exists {
		return false, err
	}
	return ref.UID == "" || ref.UID == uid, nil
}

// ErrNoGID: the range is exhausted.
var ErrNoGID = errors.New("no free GID in range")

// Allocate implements volume.GIDAllocator. GIDs are unique across all of
// carve's PVs, not per StorageClass, because classes may share one export.
func (c *ClusterView) Allocate(ctx context.Context, min, max int64) (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.load(ctx); err != nil {
		return 0, err
	}
	for g := min; g <= max; g++ {
		if !c.used[g] {
			c.used[g] = true
			return g, nil
		}
	}
	return 0, fmt.Errorf("%w %d..%d", ErrNoGID, min, max)
}

// Reserve implements volume.GIDAllocator.
func (c *ClusterView) Reserve(gid int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// The table may stay unloaded (a share unreadable): Allocate loads it
	// before handing out anything, and keeps this reservation.
	c.used[gid] = true
}

// Release implements volume.GIDAllocator.
func (c *ClusterView) Release(gid int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.used, gid)
}

// load fills the table once, from the PVs and from the records on the
// shares; the controller only runs workers after its informers have synced.
// Until every share could be read nothing is allocated: a GID missed here
// could be handed out twice.
func (c *ClusterView) load(ctx context.Context) error {
	if c.loaded {
		return nil
	}
	if c.recorded != nil {
		gids, err := c.recorded(ctx)
		if err != nil {
			return err
		}
		for _, g := range gids {
			c.used[g] = true
		}
		klog.FromContext(ctx).V(2).Info("GID table: loaded GIDs recorded on the shares", "count", len(gids))
	}
	for _, o := range c.volumes.List() {
		pv := o.(*v1.PersistentVolume)
		if _, ok := pv.Annotations[AnnVolumeID]; !ok {
			continue
		}
		if g, err := strconv.ParseInt(pv.Annotations[AnnGID], 10, 64); err == nil {
			c.used[g] = true
		}
	}
	c.loaded = true
	return nil
}

// Annotations carve writes on PersistentVolumes.
const (
	// AnnVolumeID holds the self-describing volume ID: Delete needs nothing else.
	AnnVolumeID = "carve.csi.dev/volume-id"
	// AnnGID makes the kubelet add the volume's group to the pod's
	// supplemental groups, so non-root images can write without 0777.
	AnnGID = "pv.beta.kubernetes.io/gid"
)

// DriverName is carve's CSI driver name, used for csi PVs.
const DriverName = "carve.csi.dev"

// VolumeAttributes are informational copies of the ID's fields for CSI PVs.
func VolumeAttributes(id volid.ID) map[string]string {
	return map[string]string{
		"backend": id.Backend,
		"server":  id.Servers[0],
		"share":   id.Share,
		"subdir":  id.DirPath(),
	}
}

// VolumeID returns the carve volume ID of a PV, or false if the PV is not carve's.
func VolumeID(pv *v1.PersistentVolume) (volid.ID, bool, error) {
	s, ok := pv.Annotations[AnnVolumeID]
	if !ok && pv.Spec.CSI != nil && pv.Spec.CSI.Driver == DriverName {
		s, ok = pv.Spec.CSI.VolumeHandle, true
	}
	if !ok {
		return volid.ID{}, false, nil
	}
	id, err := volid.Parse(s)
	return id, true, err
}
