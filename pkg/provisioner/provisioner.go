// Package provisioner adapts carve's volume service to the external
// provisioner library: claim in, PersistentVolume out, and back again on delete.
package provisioner

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/kubeview"
	"github.com/carve-csi/carve/pkg/nfs"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/volume"
)

// Event reasons carve adds to the library's own.
const (
	ReasonReattached = "ReattachedVolume"
	ReasonDeleted    = "VolumeDataRemoved"
	ReasonKept       = "VolumeDataKept"
	// ReasonWarning: provisioned, with a caveat (e.g. the size is not enforced).
	ReasonWarning = "ProvisioningWarning"
	// ReasonPatternOverlap: two classes on one share have patterns that can nest.
	ReasonPatternOverlap = "PathPatternOverlap"
)

// Provisioner implements controller.Provisioner.
type Provisioner struct {
	svc      *volume.Service
	gids     volume.GIDAllocator
	recorder record.EventRecorder
	classes  func() []*storagev1.StorageClass // nil: no overlap warnings
	warned   sync.Map                         // class pairs already warned about
	ops      opGate
}

// Stop refuses further Provision and Delete calls and waits for those in
// progress, so another replica may take over without overlapping them.
func (p *Provisioner) Stop() { p.ops.close() }

var _ controller.Provisioner = (*Provisioner)(nil)

// New returns a provisioner. gids may be nil when no StorageClass allocates GIDs.
func New(svc *volume.Service, gids volume.GIDAllocator, recorder record.EventRecorder) *Provisioner {
	return &Provisioner{svc: svc, gids: gids, recorder: recorder}
}

// WithClasses lets the provisioner compare a class with the others on its
// share (the StorageClass informer's cache).
func (p *Provisioner) WithClasses(list func() []*storagev1.StorageClass) *Provisioner {
	p.classes = list
	return p
}

// warnOverlaps tells, once per pair of classes in this process, that two
// classes on one share have patterns that can nest: carve refuses the claim
// that would nest, and the admin should know before it happens.
func (p *Provisioner) warnOverlaps(claim *v1.PersistentVolumeClaim, class *storagev1.StorageClass, cfg *params.Config) {
	if p.classes == nil || cfg.PathPattern == nil {
		return
	}
	for _, other := range p.classes() {
		if other.Name == class.Name || other.Provisioner != class.Provisioner {
			continue
		}
		oc, err := params.Parse(other.Parameters)
		if err != nil || oc.PathPattern == nil || !params.SameShare(cfg, oc) {
			continue
		}
		outer, inner, op, ip := class, other, cfg.PathPattern, oc.PathPattern
		switch {
		case params.MayNest(op, ip):
		case params.MayNest(ip, op):
			outer, inner, op, ip = other, class, ip, op
		default:
			continue
		}
		key := outer.Name + "\x00" + inner.Name
		if _, seen := p.warned.LoadOrStore(key, true); seen {
			continue
		}
		p.recorder.Eventf(claim, v1.EventTypeWarning, ReasonPatternOverlap,
			"StorageClass %s (pathPattern %q) can render a parent directory of StorageClass %s's paths (pathPattern %q) on the same share: "+
				"volume directories never nest, so a claim of one is refused where it would hold or sit inside a volume of the other; "+
				"give the classes distinct first segments", outer.Name, op.String(), inner.Name, ip.String())
	}
}

// Provision carves (or re-attaches) the claim's directory and returns its PV.
func (p *Provisioner) Provision(ctx context.Context, opts controller.ProvisionOptions) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	if err := p.ops.enter(); err != nil {
		return nil, controller.ProvisioningNoChange, err
	}
	defer p.ops.leave()
	claim := opts.PVC
	logger := klog.FromContext(ctx).WithValues("PVC", klog.KObj(claim), "PV", opts.PVName)
	ctx = klog.NewContext(ctx, logger)

	// Refusals name the object at fault (the claim or its class), in one place.
	blame := func(err error) error {
		return params.Blame(err, claim.Namespace+"/"+claim.Name, opts.StorageClass.Name)
	}
	if err := checkClaim(claim); err != nil {
		return nil, controller.ProvisioningFinished, blame(err)
	}
	cfg, err := params.Parse(opts.StorageClass.Parameters)
	if err != nil {
		return nil, controller.ProvisioningFinished, blame(err)
	}
	p.warnOverlaps(claim, opts.StorageClass, cfg)
	res, err := p.svc.Create(ctx, volume.Request{
		Name:      opts.PVName,
		Namespace: claim.Namespace,
		Claim:     claim.Name,
		ClaimUID:  string(claim.UID),
		Config:    cfg,
		SizeBytes: sizeOf(claim),
		Vars: params.Vars{
			Namespace:   claim.Namespace,
			Name:        claim.Name,
			PVName:      opts.PVName,
			Labels:      claim.Labels,
			Annotations: claim.Annotations,
		},
	})
	if err != nil {
		return nil, controller.ProvisioningFinished, blame(err)
	}
	if res.Reattached {
		p.recorder.Event(claim, v1.EventTypeNormal, ReasonReattached, res.Message)
	}
	for _, w := range res.Warnings {
		p.recorder.Event(claim, v1.EventTypeWarning, ReasonWarning, w)
	}
	pv := buildPV(opts, cfg, res)
	logger.V(2).Info("Provisioned volume", "volumeID", res.ID.String(), "reattached", res.Reattached, "gid", res.GID)
	return pv, controller.ProvisioningFinished, nil
}

func sizeOf(c *v1.PersistentVolumeClaim) int64 {
	q := c.Spec.Resources.Requests[v1.ResourceStorage]
	return q.Value()
}

// checkClaim refuses what carve cannot do, saying what to change.
func checkClaim(c *v1.PersistentVolumeClaim) error {
	switch {
	case c.Spec.VolumeMode != nil && *c.Spec.VolumeMode == v1.PersistentVolumeBlock:
		return params.ClaimRefusal("spec.volumeMode", errors.New("volumeMode Block is not supported by NFS or GlusterFS: use volumeMode Filesystem"))
	case c.Spec.DataSource != nil || c.Spec.DataSourceRef != nil:
		return params.ClaimRefusal("spec.dataSource", errors.New("carve cannot populate a volume from a dataSource (clone or snapshot): remove spec.dataSource"))
	case c.Spec.Selector != nil:
		return params.ClaimRefusal("spec.selector", errors.New("a claim with spec.selector only binds existing PVs; carve cannot provision for it: remove the selector"))
	}
	if _, ok := c.Spec.Resources.Requests[v1.ResourceStorage]; !ok {
		return params.ClaimRefusal("spec.resources.requests.storage", errors.New("a storage request is required"))
	}
	return nil
}

func buildPV(opts controller.ProvisionOptions, cfg *params.Config, res *volume.Result) *v1.PersistentVolume {
	reclaim := v1.PersistentVolumeReclaimDelete // the API server's default for a class
	if opts.StorageClass.ReclaimPolicy != nil {
		reclaim = *opts.StorageClass.ReclaimPolicy
	}
	pv := &v1.PersistentVolume{}
	pv.Name = opts.PVName
	pv.Annotations = map[string]string{kubeview.AnnVolumeID: res.ID.String()}
	if res.GID >= 0 {
		pv.Annotations[kubeview.AnnGID] = strconv.FormatInt(res.GID, 10)
	}
	fs := v1.PersistentVolumeFilesystem
	pv.Spec = v1.PersistentVolumeSpec{
		PersistentVolumeReclaimPolicy: reclaim,
		AccessModes:                   opts.PVC.Spec.AccessModes,
		Capacity:                      v1.ResourceList{v1.ResourceStorage: opts.PVC.Spec.Resources.Requests[v1.ResourceStorage]},
		MountOptions:                  opts.StorageClass.MountOptions,
		VolumeMode:                    &fs,
	}
	if cfg.VolumeType == params.VolumeTypeCSI {
		pv.Spec.CSI = &v1.CSIPersistentVolumeSource{
			Driver:           kubeview.DriverName,
			VolumeHandle:     res.ID.String(),
			VolumeAttributes: kubeview.VolumeAttributes(res.ID),
		}
	} else {
		pv.Spec.NFS = &v1.NFSVolumeSource{Server: res.ID.Servers[0], Path: nfs.ExportPath(res.ID)}
	}
	return pv
}

// Delete applies the onDelete policy recorded in the PV's volume ID.
func (p *Provisioner) Delete(ctx context.Context, pv *v1.PersistentVolume) error {
	if err := p.ops.enter(); err != nil {
		return err
	}
	defer p.ops.leave()
	logger := klog.FromContext(ctx).WithValues("PV", klog.KObj(pv))
	ctx = klog.NewContext(ctx, logger)
	id, ok, err := kubeview.VolumeID(pv)
	if !ok {
		return &controller.IgnoredError{Reason: "the PV has no " + kubeview.AnnVolumeID + " annotation, so carve did not provision it"}
	}
	if err != nil {
		// Never guess where data lives: leave the PV for an administrator.
		return fmt.Errorf("cannot delete: %s annotation is not a valid carve volume ID: %w", kubeview.AnnVolumeID, err)
	}
	out, err := p.svc.Delete(ctx, pv.Name, id)
	if err != nil {
		return err
	}
	action := out.Action
	if len(id.Dir) == 0 { // a whole volume per claim (Gluster mode volume)
		p.wholeVolumeEvent(pv, id, out)
		action = ""
	}
	// Kept for safety: say why on the PV, as a Warning, since an administrator may have to act.
	switch action {
	case backend.ActionKeptHoldsVolumes:
		p.recorder.Eventf(pv, v1.EventTypeWarning, ReasonKept, "kept %s: it holds the directory of another volume (%s); "+
			"volume directories never nest, so carve removes neither", id.DirPath(), out.Where)
	case backend.ActionKeptUnrecorded:
		p.recorder.Eventf(pv, v1.EventTypeWarning, ReasonKept, "kept %s: carve has no record of carving it "+
			"(.carve-meta), so it is not carve's to remove", id.DirPath())
	}
	switch action {
	case backend.ActionArchived:
		p.recorder.Eventf(pv, v1.EventTypeNormal, ReasonDeleted, "onDelete=archive: moved %s to %s", id.DirPath(), out.Where)
	case backend.ActionDeleted:
		p.recorder.Eventf(pv, v1.EventTypeNormal, ReasonDeleted, "onDelete=delete: moved %s to the trash; it is purged in the background", id.DirPath())
	case backend.ActionKeptInUse:
		p.recorder.Eventf(pv, v1.EventTypeNormal, ReasonKept, "kept %s: PersistentVolume %s still uses it", id.DirPath(), out.Where)
	case backend.ActionRetained:
		p.recorder.Eventf(pv, v1.EventTypeNormal, ReasonKept, "onDelete=retain: kept %s on the share", id.DirPath())
	}
	if p.gids != nil {
		// The group stays reserved while its directory may be mounted again.
		if g, err := strconv.ParseInt(pv.Annotations[kubeview.AnnGID], 10, 64); err == nil && out.Action.Gone() {
			p.gids.Release(g)
		}
	}
	logger.V(2).Info("Deleted volume", "volumeID", id.String(), "action", out.Action, "where", out.Where)
	return nil
}
