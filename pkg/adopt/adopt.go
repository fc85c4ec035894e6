package adopt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"sigs.k8s.io/yaml"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/gluster"
	"github.com/carve-csi/carve/pkg/kubeview"
	"github.com/carve-csi/carve/pkg/nfs"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/sharemount"
	"github.com/carve-csi/carve/pkg/volume"
)

// AnnCheckpoint on a claim holds the PV carve-adopt is putting in place for
// it, from before the old PV is deleted until the new one exists: a run that
// dies in between is finished by the next run from this record alone.
const AnnCheckpoint = "carve.csi.dev/adopt-pv"

// Finalizers carve-adopt removes from the old PV once it has deleted it:
// pv-protection holds a bound PV's deletion until its claim goes, which is
// exactly what does not happen here; the external-provisioner's holds a
// Delete PV until its driver deleted the data, which Retain forbids.
var removableFinalizers = []string{"kubernetes.io/pv-protection", "external-provisioner.volume.kubernetes.io/finalizer"}

// Selection says which PVs to consider.
type Selection struct {
	PVs            []string // by name; an unknown shape is refused
	StorageClasses []string // every PV of these classes
	All            bool     // every PV of a shape carve adopts
}

// Config configures a run.
type Config struct {
	Client  kubernetes.Interface
	Mapping Options
	Select  Selection
	Apply   bool // false: dry run, print the plan and change nothing
	// AllowInUse adopts PVs whose claim a running pod uses; running pods
	// are not touched (they mount the new PV when they restart).
	AllowInUse bool
	// Gluster reaches glusterd to check and record heketi volumes.
	GlusterExecutor gluster.ExecutorSpec
	GlusterdSocket  string
	// BindTimeout bounds the wait for a claim to be Bound to its new PV.
	BindTimeout time.Duration
	Out         io.Writer
}

// Report counts what a run did or would do.
type Report struct {
	Planned  []string // dry run: PVs that would be adopted
	Adopted  []string // PVs replaced by carve PVs in this run
	Already  []string // carve PVs already (nothing left to do)
	Refused  []error  // *Refusal, or the error that stopped a PV midway
	Skipped  []string // other shapes, with --all or --storage-class
	Resumed  []string // adoptions an earlier run left unfinished
	Messages []string
}

// Failed reports whether anything was refused or failed.
func (r *Report) Failed() bool { return len(r.Refused) > 0 }

// checkpoint is AnnCheckpoint's value.
type checkpoint struct {
	OldUID types.UID            `json:"oldUID"`
	PV     *v1.PersistentVolume `json:"pv"`
}

type runner struct {
	cfg    Config
	svc    *volume.Service
	report *Report
}

// Run adopts the selected PVs (or, without Apply, prints what it would do).
// Every step is idempotent and the claim carries a checkpoint across the one
// step that cannot be repeated (the old PV's deletion), so running again
// after a crash or an error finishes the job.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.BindTimeout <= 0 {
		cfg.BindTimeout = 2 * time.Minute
	}
	if !cfg.Select.All && len(cfg.Select.PVs) == 0 && len(cfg.Select.StorageClasses) == 0 {
		return nil, fmt.Errorf("%w: nothing selected: name PVs, --storage-class or --all", params.ErrInvalid)
	}
	stop := make(chan struct{})
	defer close(stop)
	view, err := clusterView(ctx, cfg.Client, stop)
	if err != nil {
		return nil, err
	}
	resolver := &sharemount.Resolver{Map: cfg.Mapping.MountMap}
	svc := volume.New(volume.Options{Referrers: view, PurgeContext: ctx},
		nfs.New(resolver),
		gluster.New(gluster.Options{Resolver: resolver, GlusterdSocket: cfg.GlusterdSocket, DefaultExecutor: cfg.GlusterExecutor,
			SecretData: func(ctx context.Context, namespace, name string) (map[string][]byte, error) {
				s, err := cfg.Client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					return nil, err
				}
				return s.Data, nil
			}}))
	r := &runner{cfg: cfg, svc: svc, report: &Report{}}
	return r.report, r.run(ctx)
}

// endpointAddresses lists the IP addresses of an Endpoints object, which
// the in-tree glusterfs plugin named in its PVs (an EndpointSlice would not
// be the object the PV names).
func endpointAddresses(ctx context.Context, client kubernetes.Interface, ns, name string) ([]string, error) {
	ep, err := client.CoreV1().Endpoints(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range ep.Subsets {
		for _, a := range s.Addresses {
			if a.IP != "" && !slices.Contains(out, a.IP) {
				out = append(out, a.IP)
			}
		}
	}
	return out, nil
}

// clusterView gives the volume service carve's view of the cluster's PVs
// (which carve PVs point at a directory, whether their claims are live).
func clusterView(ctx context.Context, client kubernetes.Interface, stop chan struct{}) (*kubeview.ClusterView, error) {
	f := informers.NewSharedInformerFactory(client, 0)
	pvs, pvcs := f.Core().V1().PersistentVolumes().Informer(), f.Core().V1().PersistentVolumeClaims().Informer()
	view, err := kubeview.NewClusterView(pvs, pvcs)
	if err != nil {
		return nil, err
	}
	f.Start(stop)
	if !cache.WaitForCacheSync(ctx.Done(), pvs.HasSynced, pvcs.HasSynced) {
		return nil, fmt.Errorf("%w: PersistentVolume and claim caches did not sync", backend.ErrUnavailable)
	}
	return view, nil
}

func (r *runner) printf(format string, args ...any) {
	fmt.Fprintf(r.cfg.Out, format, args...)
}

func (r *runner) run(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	client := r.cfg.Client
	pvList, err := client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list PersistentVolumes: %w", err)
	}
	claimList, err := client.CoreV1().PersistentVolumeClaims("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list PersistentVolumeClaims: %w", err)
	}
	claims := map[string]*v1.PersistentVolumeClaim{}
	checkpoints := map[string]*v1.PersistentVolumeClaim{} // PV name → claim holding its checkpoint
	for i := range claimList.Items {
		c := &claimList.Items[i]
		claims[c.Namespace+"/"+c.Name] = c
		if cp, ok := readCheckpoint(c); ok {
			checkpoints[cp.PV.Name] = c
		}
	}
	pvs := map[string]*v1.PersistentVolume{}
	for i := range pvList.Items {
		pvs[pvList.Items[i].Name] = &pvList.Items[i]
	}
	endpoints := func(ns, name string) ([]string, error) { return endpointAddresses(ctx, client, ns, name) }
	claimOf := func(pv *v1.PersistentVolume) *v1.PersistentVolumeClaim {
		if pv.Spec.ClaimRef == nil {
			return nil
		}
		return claims[pv.Spec.ClaimRef.Namespace+"/"+pv.Spec.ClaimRef.Name]
	}

	// Every old PV that maps, selected or not: nesting is checked against all.
	var all []*Target
	for _, name := range sortedKeys(pvs) {
		pv := pvs[name]
		if _, err := Kind(pv); err != nil {
			continue
		}
		if t, err := Locate(pv, claimOf(pv), endpoints, r.cfg.Mapping); err == nil {
			all = append(all, t)
		}
	}

	names := r.selected(pvs, checkpoints)
	if len(names) == 0 {
		r.printf("No PersistentVolume matches the selection.\n")
	}
	for _, name := range names {
		pv, exists := pvs[name]
		cpClaim := checkpoints[name]
		var err error
		switch {
		case !exists && cpClaim != nil:
			// The old PV is gone, the new one not created yet.
			r.report.Resumed = append(r.report.Resumed, name)
			err = r.resume(ctx, cpClaim)
		case !exists:
			err = refuse(name, "no such PersistentVolume")
		default:
			err = r.one(ctx, pv, claimOf(pv), cpClaim, endpoints, all)
		}
		if err != nil {
			r.report.Refused = append(r.report.Refused, err)
			if errors.Is(err, ErrRefused) {
				r.printf("REFUSED %v\n\n", err)
			} else {
				r.printf("FAILED %v\n\n", err)
			}
			logger.V(2).Info("PersistentVolume not adopted", "PV", name, "err", err)
		}
	}
	r.summary()
	return nil
}

// selected lists the PV names to handle, in order, including PVs whose
// adoption an earlier run left between deletion and creation.
func (r *runner) selected(pvs map[string]*v1.PersistentVolume, checkpoints map[string]*v1.PersistentVolumeClaim) []string {
	sel := r.cfg.Select
	var out []string
	seen := map[string]bool{}
	add := func(n string) {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	for _, n := range sel.PVs {
		add(n)
	}
	classOK := func(class string) bool { return sel.All || slices.Contains(sel.StorageClasses, class) }
	for _, n := range sortedKeys(pvs) {
		pv := pvs[n]
		if !classOK(pv.Spec.StorageClassName) || seen[n] {
			continue
		}
		if _, err := Kind(pv); err != nil {
			_, carve, _ := kubeview.VolumeID(pv)
			switch {
			case !carve:
				r.report.Skipped = append(r.report.Skipped, n)
				continue
			case checkpoints[n] == nil && pv.Annotations[AnnAdoptedFrom] == "":
				continue // carve provisioned it: not this command's business
			}
		}
		add(n) // adopted by an earlier run too: done, or to finish
	}
	for _, n := range sortedKeys(checkpoints) {
		cp, _ := readCheckpoint(checkpoints[n])
		if _, ok := pvs[n]; !ok && classOK(cp.PV.Spec.StorageClassName) {
			add(n)
		}
	}
	return out
}

// one handles one existing PV: plan, then (with Apply) replace it.
func (r *runner) one(ctx context.Context, pv *v1.PersistentVolume, claim *v1.PersistentVolumeClaim, cpClaim *v1.PersistentVolumeClaim,
	endpoints EndpointsGetter, all []*Target) error {
	if id, carve, _ := kubeview.VolumeID(pv); carve {
		if cpClaim != nil {
			// Created by an earlier run that stopped before the claim was
			// Bound again.
			r.report.Resumed = append(r.report.Resumed, pv.Name)
			return r.finish(ctx, cpClaim, pv.Name)
		}
		r.report.Already = append(r.report.Already, pv.Name)
		r.printf("pv/%s is a carve PersistentVolume already (%s): nothing to do\n\n", pv.Name, id)
		return nil
	}
	t, err := Map(pv, claim, endpoints, r.cfg.Mapping)
	if err != nil {
		return err
	}
	if err := Overlaps(t, all); err != nil {
		return err
	}
	resuming := cpClaim != nil && cpClaim.UID == claim.UID && checkpointUID(cpClaim) == pv.UID
	if pv.DeletionTimestamp != nil && !resuming {
		return refuse(pv.Name, "it is being deleted: nothing is safe to do with it (finalizers %v)", pv.Finalizers)
	}
	if err := r.checkInUse(ctx, t); err != nil {
		return err
	}
	if err := r.svc.Adopt(ctx, r.adoptRequest(t, true)); err != nil {
		return refuse(pv.Name, "%s: %w", where(t.ID), err)
	}
	if err := r.printPlan(t); err != nil {
		return err
	}
	if !r.cfg.Apply {
		r.report.Planned = append(r.report.Planned, pv.Name)
		return nil
	}
	if resuming {
		r.report.Resumed = append(r.report.Resumed, pv.Name)
	}
	return r.apply(ctx, t)
}

func (r *runner) adoptRequest(t *Target, dryRun bool) volume.AdoptRequest {
	size := t.Old.Spec.Capacity[v1.ResourceStorage]
	return volume.AdoptRequest{ID: t.ID, Name: t.Old.Name, Namespace: t.Claim.Namespace, Claim: t.Claim.Name,
		SizeBytes: size.Value(), GID: t.GID, DryRun: dryRun}
}

// checkInUse refuses a PV whose claim a pod that has not terminated uses:
// its kubelet would keep the old mount, or fail to set up the new one,
// while the PV changes underneath.
func (r *runner) checkInUse(ctx context.Context, t *Target) error {
	pods, err := r.cfg.Client.CoreV1().Pods(t.Claim.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list pods of namespace %s: %w", t.Claim.Namespace, err)
	}
	var users []string
	for _, p := range pods.Items {
		if p.Status.Phase == v1.PodSucceeded || p.Status.Phase == v1.PodFailed {
			continue
		}
		for _, vol := range p.Spec.Volumes {
			name := ""
			switch {
			case vol.PersistentVolumeClaim != nil:
				name = vol.PersistentVolumeClaim.ClaimName
			case vol.Ephemeral != nil:
				name = p.Name + "-" + vol.Name
			}
			if name == t.Claim.Name {
				users = append(users, p.Name)
			}
		}
	}
	if len(users) == 0 {
		return nil
	}
	if r.cfg.AllowInUse {
		r.printf("pv/%s: claim %s/%s is used by pod(s) %s (--allow-in-use): restart them after the adoption\n",
			t.Old.Name, t.Claim.Namespace, t.Claim.Name, strings.Join(users, ", "))
		return nil
	}
	return refuse(t.Old.Name, "claim %s/%s is used by running pod(s) %s: scale the workload down first (or pass --allow-in-use)",
		t.Claim.Namespace, t.Claim.Name, strings.Join(users, ", "))
}

// printPlan prints exactly the steps apply takes for t, and the new PV.
func (r *runner) printPlan(t *Target) error {
	old := t.Old
	verb := "would adopt"
	if r.cfg.Apply {
		verb = "adopting"
	}
	r.printf("pv/%s (%s, claim %s/%s): %s %s\n", old.Name, t.Kind, t.Claim.Namespace, t.Claim.Name, verb, where(t.ID))
	step := 0
	p := func(format string, args ...any) {
		step++
		r.printf("  %d. "+format+"\n", append([]any{step}, args...)...)
	}
	if old.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimRetain {
		p("set reclaimPolicy Retain on pv/%s (now %s), so nothing deletes the data", old.Name, old.Spec.PersistentVolumeReclaimPolicy)
	} else {
		p("keep reclaimPolicy Retain on pv/%s", old.Name)
	}
	if len(t.ID.Dir) > 0 {
		p("record carve's ownership of %s in .carve-meta on %s (local path %s)", t.ID.DirPath(),
			sharemount.Key(t.ID.Servers[0], t.ID.Share), t.LocalShare)
	} else {
		p("record carve's ownership on Gluster volume %s (%s=%s, %s=%s/%s)", t.ID.Share, gluster.OptPV, old.Name,
			gluster.OptClaim, t.Claim.Namespace, t.Claim.Name)
	}
	p("note the new PV on claim %s/%s (annotation %s), so a later run can finish", t.Claim.Namespace, t.Claim.Name, AnnCheckpoint)
	p("delete pv/%s and remove its finalizers %v (the data stays: reclaimPolicy Retain)", old.Name, removableFinalizers)
	p("create pv/%s as a carve PV (%s) bound to claim %s/%s", old.Name, newShape(t.New), t.Claim.Namespace, t.Claim.Name)
	p("wait until claim %s/%s is Bound to it again", t.Claim.Namespace, t.Claim.Name)
	out, err := yaml.Marshal(t.New)
	if err != nil {
		return fmt.Errorf("print PV %s: %w", old.Name, err)
	}
	r.printf("  new PersistentVolume:\n%s\n", indent(string(out), "    "))
	return nil
}

func newShape(pv *v1.PersistentVolume) string {
	if pv.Spec.CSI != nil {
		return "CSI driver " + pv.Spec.CSI.Driver + ", volumeHandle " + pv.Spec.CSI.VolumeHandle
	}
	return "in-tree nfs " + pv.Spec.NFS.Server + ":" + pv.Spec.NFS.Path
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return prefix + strings.Join(lines, "\n"+prefix)
}

// apply replaces t.Old by t.New; the order keeps the data safe at every
// step: Retain first, then carve's record, the checkpoint, and only then
// the deletion of the old object.
func (r *runner) apply(ctx context.Context, t *Target) error {
	logger := klog.FromContext(ctx).WithValues("PV", t.Old.Name, "PVC", klog.KObj(t.Claim))
	ctx = klog.NewContext(ctx, logger)
	pvs := r.cfg.Client.CoreV1().PersistentVolumes()
	name := t.Old.Name
	if t.Old.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimRetain {
		patch := []byte(`{"spec":{"persistentVolumeReclaimPolicy":"Retain"}}`)
		got, err := pvs.Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
		if err != nil {
			return refuse(name, "cannot set reclaimPolicy Retain, so nothing else was done: %w", err)
		}
		if got.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimRetain || got.UID != t.Old.UID {
			return refuse(name, "reclaimPolicy is still %s after setting Retain, so nothing else was done", got.Spec.PersistentVolumeReclaimPolicy)
		}
		logger.Info("Set reclaimPolicy Retain", "was", t.Old.Spec.PersistentVolumeReclaimPolicy)
	}
	if err := r.svc.Adopt(ctx, r.adoptRequest(t, false)); err != nil {
		return fmt.Errorf("PersistentVolume %s: record carve's ownership of %s (the PV is Retain now; run again): %w", name, where(t.ID), err)
	}
	if err := r.writeCheckpoint(ctx, t); err != nil {
		return err
	}
	if err := r.deleteOld(ctx, t.Old); err != nil {
		return err
	}
	claim, err := r.cfg.Client.CoreV1().PersistentVolumeClaims(t.Claim.Namespace).Get(ctx, t.Claim.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("PersistentVolume %s: read claim %s/%s back: %w", name, t.Claim.Namespace, t.Claim.Name, err)
	}
	return r.resume(ctx, claim)
}

func (r *runner) writeCheckpoint(ctx context.Context, t *Target) error {
	data, err := json.Marshal(checkpoint{OldUID: t.Old.UID, PV: t.New})
	if err != nil {
		return err
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{AnnCheckpoint: string(data)}}})
	if err != nil {
		return err
	}
	if _, err := r.cfg.Client.CoreV1().PersistentVolumeClaims(t.Claim.Namespace).Patch(ctx, t.Claim.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("PersistentVolume %s: note the new PV on claim %s/%s: %w", t.Old.Name, t.Claim.Namespace, t.Claim.Name, err)
	}
	return nil
}

// deleteOld deletes the old PV object (Retain: its data stays) and lets it
// go: its bound claim would hold it forever otherwise.
func (r *runner) deleteOld(ctx context.Context, old *v1.PersistentVolume) error {
	logger := klog.FromContext(ctx)
	pvs := r.cfg.Client.CoreV1().PersistentVolumes()
	err := pvs.Delete(ctx, old.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &old.UID}})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete PersistentVolume %s: %w", old.Name, err)
	}
	return wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		cur, err := pvs.Get(ctx, old.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return true, nil
		case err != nil:
			return false, nil
		case cur.UID != old.UID:
			return true, nil // a later run's PV: the old one is gone
		case len(cur.Finalizers) == 0:
			return false, nil
		}
		var keep []string
		for _, f := range cur.Finalizers {
			if !slices.Contains(removableFinalizers, f) {
				keep = append(keep, f)
			}
		}
		if len(keep) == len(cur.Finalizers) {
			return false, fmt.Errorf("PersistentVolume %s is deleted but held by finalizers %v, which are not carve-adopt's to remove: "+
				"resolve them, then run again", old.Name, keep)
		}
		patch, err := json.Marshal([]map[string]any{
			{"op": "test", "path": "/metadata/uid", "value": old.UID},
			{"op": "replace", "path": "/metadata/finalizers", "value": keep},
		})
		if err != nil {
			return false, err
		}
		if _, err := pvs.Patch(ctx, old.Name, types.JSONPatchType, patch, metav1.PatchOptions{}); err != nil && !apierrors.IsNotFound(err) {
			logger.V(2).Info("Removing finalizers failed; retrying", "PV", old.Name, "err", err)
			return false, nil
		}
		logger.Info("Deleted old PersistentVolume", "PV", old.Name, "removedFinalizers", len(cur.Finalizers)-len(keep))
		return false, nil
	})
}

// resume creates the PV recorded on the claim (if not there yet) and
// waits for the claim to be Bound to it.
func (r *runner) resume(ctx context.Context, claim *v1.PersistentVolumeClaim) error {
	cp, ok := readCheckpoint(claim)
	if !ok {
		return fmt.Errorf("claim %s/%s: annotation %s is missing or unreadable", claim.Namespace, claim.Name, AnnCheckpoint)
	}
	pv := cp.PV.DeepCopy()
	pv.ResourceVersion, pv.UID = "", ""
	if !r.cfg.Apply {
		r.printf("pv/%s: deleted by an earlier run; --apply creates the carve PV noted on claim %s/%s (%s) and waits until the claim is Bound to it\n\n",
			pv.Name, claim.Namespace, claim.Name, newShape(pv))
		r.report.Planned = append(r.report.Planned, pv.Name)
		return nil
	}
	pvs := r.cfg.Client.CoreV1().PersistentVolumes()
	created, err := pvs.Create(ctx, pv, metav1.CreateOptions{})
	switch {
	case apierrors.IsAlreadyExists(err):
		cur, gerr := pvs.Get(ctx, pv.Name, metav1.GetOptions{})
		if gerr != nil {
			return fmt.Errorf("PersistentVolume %s: %w", pv.Name, gerr)
		}
		if cur.UID == cp.OldUID {
			return fmt.Errorf("PersistentVolume %s: the old PV still exists; run again to finish its deletion", pv.Name)
		}
		if cur.Annotations[kubeview.AnnVolumeID] != pv.Annotations[kubeview.AnnVolumeID] {
			return fmt.Errorf("PersistentVolume %s exists but is not the PV noted on claim %s/%s (volume ID %q, want %q): "+
				"remove annotation %s from the claim once you have checked which one is right", pv.Name, claim.Namespace, claim.Name,
				cur.Annotations[kubeview.AnnVolumeID], pv.Annotations[kubeview.AnnVolumeID], AnnCheckpoint)
		}
	case err != nil:
		return fmt.Errorf("create PersistentVolume %s for claim %s/%s (noted on the claim; run again): %w", pv.Name, claim.Namespace, claim.Name, err)
	default:
		klog.FromContext(ctx).Info("Created carve PersistentVolume", "PV", created.Name, "volumeID", created.Annotations[kubeview.AnnVolumeID])
	}
	return r.finish(ctx, claim, pv.Name)
}

// finish drops the checkpoint (its update also makes the PV controller look
// at the claim again) and waits until the claim is Bound to the new PV.
func (r *runner) finish(ctx context.Context, claim *v1.PersistentVolumeClaim, name string) error {
	if !r.cfg.Apply {
		r.printf("pv/%s: created by an earlier run; --apply finishes it (claim %s/%s still carries %s)\n\n",
			name, claim.Namespace, claim.Name, AnnCheckpoint)
		r.report.Planned = append(r.report.Planned, name)
		return nil
	}
	claims := r.cfg.Client.CoreV1().PersistentVolumeClaims(claim.Namespace)
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{AnnCheckpoint: nil}}})
	if _, err := claims.Patch(ctx, claim.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("claim %s/%s: remove %s: %w", claim.Namespace, claim.Name, AnnCheckpoint, err)
	}
	var last *v1.PersistentVolumeClaim
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, r.cfg.BindTimeout, true, func(ctx context.Context) (bool, error) {
		c, err := claims.Get(ctx, claim.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = c
		if c.Spec.VolumeName != name || c.Status.Phase != v1.ClaimBound {
			return false, nil
		}
		pv, err := r.cfg.Client.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
		return err == nil && pv.Status.Phase == v1.VolumeBound, nil
	})
	if err != nil {
		ph := "unknown"
		if last != nil {
			ph = string(last.Status.Phase)
		}
		return fmt.Errorf("claim %s/%s is not Bound to the new PersistentVolume %s after %s (phase %s): "+
			"the PV exists; the PersistentVolume controller binds them on its next pass: %w", claim.Namespace, claim.Name, name, r.cfg.BindTimeout, ph, err)
	}
	r.report.Adopted = append(r.report.Adopted, name)
	r.printf("pv/%s: adopted; claim %s/%s is Bound to it\n\n", name, claim.Namespace, claim.Name)
	return nil
}

func readCheckpoint(c *v1.PersistentVolumeClaim) (*checkpoint, bool) {
	s, ok := c.Annotations[AnnCheckpoint]
	if !ok {
		return nil, false
	}
	var cp checkpoint
	if err := json.Unmarshal([]byte(s), &cp); err != nil || cp.PV == nil || cp.PV.Name == "" {
		return nil, false
	}
	return &cp, true
}

func checkpointUID(c *v1.PersistentVolumeClaim) types.UID {
	if cp, ok := readCheckpoint(c); ok {
		return cp.OldUID
	}
	return ""
}

func (r *runner) summary() {
	rep := r.report
	if !r.cfg.Apply {
		r.printf("Dry run: %d to adopt, %d refused, %d carve's already, %d skipped (other kinds); nothing was changed. Run with --apply to adopt.\n",
			len(rep.Planned), len(rep.Refused), len(rep.Already), len(rep.Skipped))
		return
	}
	r.printf("Adopted %d (%d finishing an earlier run), %d refused or failed, %d carve's already, %d skipped (other kinds).\n",
		len(rep.Adopted), len(rep.Resumed), len(rep.Refused), len(rep.Already), len(rep.Skipped))
	if len(rep.Refused) > 0 {
		r.printf("Whatever failed midway is noted on its claim (%s) or still Retain: running again finishes it.\n", AnnCheckpoint)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
