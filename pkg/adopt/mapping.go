// Package adopt takes over PersistentVolumes that other provisioners made
// (nfs-subdir-external-provisioner, csi-driver-nfs, the in-tree glusterfs
// plugin with heketi): each becomes a carve PV for the same data, bound to
// the same claim, with carve's ownership record written beside the data.
//
// mapping.go reads an old PV's shape and builds the carve PV (pure, no
// cluster access); adopt.go runs the replacement against a cluster.
package adopt

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/carve-csi/carve/pkg/kubeview"
	"github.com/carve-csi/carve/pkg/nfs"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/sharemount"
	"github.com/carve-csi/carve/pkg/volid"
)

// Kinds of PV carve adopts, named after the provisioner that made them.
const (
	KindNFSSubdir = "nfs-subdir"     // in-tree spec.nfs, <share>/<pathPattern>
	KindCSINFS    = "csi-driver-nfs" // spec.csi, driver nfs.csi.k8s.io
	KindHeketi    = "heketi"         // in-tree spec.glusterfs, one Gluster volume
)

// csiNFSDriver is csi-driver-nfs's driver name.
const csiNFSDriver = "nfs.csi.k8s.io"

// Annotations carve-adopt writes.
const (
	// AnnAdoptedFrom on a new PV names the kind of PV it replaced.
	AnnAdoptedFrom = "carve.csi.dev/adopted-from"
	// AnnProvisionedBy is the Kubernetes annotation naming a PV's provisioner.
	AnnProvisionedBy = "pv.kubernetes.io/provisioned-by"
	// ClassicProvisionerName is the classic provisioner's default --name.
	ClassicProvisionerName = "carve.csi.dev/provisioner"
)

// SubdirDefaultPattern is nfs-subdir's directory name when its class sets
// no pathPattern: <namespace>-<claim>-<PV>.
const SubdirDefaultPattern = "${pvc.metadata.namespace}-${pvc.metadata.name}-${pv.metadata.name}"

var (
	// ErrRefused marks a PV carve-adopt will not touch; wrapped by Refusal.
	ErrRefused = errors.New("refused")
	// ErrUnknownShape: the PV is none of the kinds above.
	ErrUnknownShape = errors.New("not an nfs-subdir, csi-driver-nfs or heketi PersistentVolume")
)

// Refusal says why one PV is not adopted; it names the PV (and through its
// reason, the claim, share or directory at fault).
type Refusal struct {
	PV     string
	Reason error
}

func (r *Refusal) Error() string {
	return fmt.Sprintf("PersistentVolume %s is not adopted: %v", r.PV, r.Reason)
}

func (r *Refusal) Unwrap() []error { return []error{ErrRefused, r.Reason} }

func refuse(pv string, format string, args ...any) error {
	return &Refusal{PV: pv, Reason: fmt.Errorf(format, args...)}
}

// Options say how old PVs map onto carve's shares.
type Options struct {
	// MountMap gives the local path of every NFS share carve-adopt writes
	// to; an NFS PV's directory must be under one of them.
	MountMap sharemount.Map
	// Pattern is nfs-subdir's layout under its share (SubdirDefaultPattern
	// unless its class set pathPattern); nil means the default.
	Pattern *params.Pattern
	// VolumeType of the new NFS PVs: params.VolumeTypeCSI (carve's node
	// plugin mounts them) or params.VolumeTypeNFS (in-tree spec.nfs, the
	// classic provisioner's shape). Gluster PVs are always CSI.
	VolumeType string
	// GlusterServers replaces the addresses of heketi PVs' Endpoints.
	GlusterServers []string
}

// EndpointsGetter returns the addresses of the Endpoints object an in-tree
// glusterfs PV names.
type EndpointsGetter func(namespace, name string) ([]string, error)

// Target is what one old PV becomes.
type Target struct {
	Kind string
	// Old is the PV being replaced, Claim its claim.
	Old   *v1.PersistentVolume
	Claim *v1.PersistentVolumeClaim
	// ID is the carve volume: the same directory or Gluster volume.
	ID volid.ID
	// LocalShare is the NFS share's local path (--mount-map); "" for Gluster.
	LocalShare string
	// GID is the old PV's pv.beta.kubernetes.io/gid; 0 when none.
	GID int64
	// New is the carve PV that takes Old's name and claim.
	New *v1.PersistentVolume
}

// Kind returns the kind of an old PV, or ErrUnknownShape.
func Kind(pv *v1.PersistentVolume) (string, error) {
	switch s := pv.Spec.PersistentVolumeSource; {
	case s.NFS != nil:
		return KindNFSSubdir, nil
	case s.CSI != nil && s.CSI.Driver == csiNFSDriver:
		return KindCSINFS, nil
	case s.Glusterfs != nil:
		return KindHeketi, nil
	case s.CSI != nil:
		return "", fmt.Errorf("%w: spec.csi of driver %s", ErrUnknownShape, s.CSI.Driver)
	}
	return "", ErrUnknownShape
}

// Map builds the carve PV for an old one bound to claim (nil when the
// claim does not exist). It only reads its arguments: checks that need the
// share, Gluster or the pods come later.
func Map(pv *v1.PersistentVolume, claim *v1.PersistentVolumeClaim, endpoints EndpointsGetter, opts Options) (*Target, error) {
	kind, err := Kind(pv)
	if err != nil {
		return nil, &Refusal{PV: pv.Name, Reason: err}
	}
	if err := checkBound(pv, claim); err != nil {
		return nil, err
	}
	return mapShape(pv, kind, claim, endpoints, opts)
}

// Locate maps an old PV whatever its binding (Released, Available): where
// its data is, for the nesting checks against the PVs being adopted. A PV
// without a claim is located with its claimRef's namespace and name.
func Locate(pv *v1.PersistentVolume, claim *v1.PersistentVolumeClaim, endpoints EndpointsGetter, opts Options) (*Target, error) {
	kind, err := Kind(pv)
	if err != nil {
		return nil, &Refusal{PV: pv.Name, Reason: err}
	}
	if claim == nil && pv.Spec.ClaimRef != nil {
		ref := pv.Spec.ClaimRef
		claim = &v1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ref.Namespace, Name: ref.Name, UID: ref.UID}}
	}
	if claim == nil {
		claim = &v1.PersistentVolumeClaim{}
	}
	return mapShape(pv, kind, claim, endpoints, opts)
}

func mapShape(pv *v1.PersistentVolume, kind string, claim *v1.PersistentVolumeClaim, endpoints EndpointsGetter, opts Options) (*Target, error) {
	var err error
	if pv.Spec.VolumeMode != nil && *pv.Spec.VolumeMode == v1.PersistentVolumeBlock {
		return nil, refuse(pv.Name, "volumeMode Block: carve serves file systems only")
	}
	t := &Target{Kind: kind, Old: pv, Claim: claim}
	switch kind {
	case KindNFSSubdir:
		err = t.mapSubdir(opts)
	case KindCSINFS:
		err = t.mapCSINFS(opts)
	case KindHeketi:
		err = t.mapHeketi(endpoints, opts)
	}
	if err != nil {
		return nil, err
	}
	if s, ok := pv.Annotations[kubeview.AnnGID]; ok {
		g, err := strconv.ParseInt(s, 10, 64)
		if err != nil || g < 0 {
			return nil, refuse(pv.Name, "annotation %s=%q is not a group ID", kubeview.AnnGID, s)
		}
		t.GID = g
	}
	t.ID.OnDelete = params.OnDeleteRetain
	if err := t.ID.Validate(); err != nil {
		return nil, refuse(pv.Name, "%w", err)
	}
	volumeType := opts.VolumeType
	if volumeType == "" || kind == KindHeketi {
		volumeType = params.VolumeTypeCSI
	}
	t.New = newPV(t, volumeType)
	return t, nil
}

// checkBound: carve-adopt replaces the PV of an existing claim and rebinds
// that claim; anything else has no claim to keep.
func checkBound(pv *v1.PersistentVolume, claim *v1.PersistentVolumeClaim) error {
	ref := pv.Spec.ClaimRef
	switch {
	case ref == nil:
		return refuse(pv.Name, "it is not bound to a claim (phase %s): carve-adopt replaces bound PVs; "+
			"for data without a claim write a static carve PV (docs/adopt.md)", phase(pv))
	case claim == nil:
		return refuse(pv.Name, "its claim %s/%s no longer exists (phase %s): there is no claim to keep; "+
			"for retained data write a static carve PV (docs/adopt.md)", ref.Namespace, ref.Name, phase(pv))
	case ref.UID != "" && ref.UID != claim.UID:
		return refuse(pv.Name, "its claimRef names claim %s/%s with UID %s, but that claim is now another object (UID %s)",
			ref.Namespace, ref.Name, ref.UID, claim.UID)
	case claim.Spec.VolumeName != pv.Name:
		return refuse(pv.Name, "claim %s/%s is not bound to it (spec.volumeName %q)", claim.Namespace, claim.Name, claim.Spec.VolumeName)
	}
	return nil
}

func phase(pv *v1.PersistentVolume) string {
	if pv.Status.Phase == "" {
		return "unknown"
	}
	return string(pv.Status.Phase)
}

// mapSubdir: spec.nfs path is <share>/<pattern rendered for the claim>; the
// pattern check makes sure the directory is this claim's and not, say, a
// PV written by hand for a whole export.
func (t *Target) mapSubdir(opts Options) error {
	pv, src := t.Old, t.Old.Spec.NFS
	if src.ReadOnly {
		return refuse(pv.Name, "spec.nfs.readOnly is set: a carve PV would be writable")
	}
	pattern := opts.Pattern
	if pattern == nil {
		var err error
		if pattern, err = params.ParsePattern(SubdirDefaultPattern); err != nil {
			return err
		}
	}
	rendered, err := pattern.Render(params.Vars{Namespace: t.Claim.Namespace, Name: t.Claim.Name, PVName: pv.Name,
		Labels: t.Claim.Labels, Annotations: t.Claim.Annotations})
	if err != nil {
		return refuse(pv.Name, "pathPattern %q for claim %s/%s: %w", pattern, t.Claim.Namespace, t.Claim.Name, err)
	}
	want := strings.Join(rendered, "/")
	if !strings.HasSuffix(src.Path, "/"+want) {
		return refuse(pv.Name, "spec.nfs.path %q does not end with %q, what pathPattern %q renders for claim %s/%s: "+
			"if its StorageClass had another pathPattern, pass that with --path-pattern", src.Path, want, pattern, t.Claim.Namespace, t.Claim.Name)
	}
	return t.mapNFSPath(src.Server, src.Path, opts)
}

// mapCSINFS reads csi-driver-nfs's volume handle
// SERVER#SHARE#SUBDIR[#UUID[#ONDELETE]] (SHARE without its leading "/")
// and its volumeAttributes server, share and subdir (older versions put
// SHARE/SUBDIR in share); where both say something they must agree.
func (t *Target) mapCSINFS(opts Options) error {
	pv, src := t.Old, t.Old.Spec.CSI
	if src.ReadOnly {
		return refuse(pv.Name, "spec.csi.readOnly is set: a carve PV would be writable")
	}
	var server, full string
	if f := strings.Split(src.VolumeHandle, "#"); len(f) >= 3 {
		server, full = f[0], path.Join("/", f[1], f[2])
		if f[2] == "" {
			full = ""
		}
	}
	attrs := src.VolumeAttributes
	if s, ok := attrs["server"]; ok {
		if server != "" && s != server {
			return refuse(pv.Name, "volumeHandle %q names server %q, volumeAttributes server %q", src.VolumeHandle, server, s)
		}
		server = s
	}
	if sh, ok := attrs["share"]; ok {
		attrFull := path.Join("/", sh, attrs["subdir"])
		if full != "" && attrFull != full {
			return refuse(pv.Name, "volumeHandle %q names directory %q, volumeAttributes share/subdir %q", src.VolumeHandle, full, attrFull)
		}
		if attrs["subdir"] != "" || full == "" {
			full = attrFull
		}
	}
	if server == "" || full == "" {
		return refuse(pv.Name, "neither volumeHandle %q nor volumeAttributes name a server and a directory", src.VolumeHandle)
	}
	return t.mapNFSPath(server, full, opts)
}

// mapNFSPath finds the mapped share holding the directory full on server:
// the deepest --mount-map share above it.
func (t *Target) mapNFSPath(server, full string, opts Options) error {
	pv := t.Old.Name
	if err := params.CheckHost(server); err != nil {
		return refuse(pv, "NFS server %q: %w", server, err)
	}
	if !strings.HasPrefix(full, "/") || path.Clean(full) != full {
		return refuse(pv, "directory %q is not a clean absolute path: it may point outside its share", full)
	}
	best, local := "", ""
	var mapped []string
	for key, l := range opts.MountMap {
		s, share, ok := sharemount.SplitKey(key)
		if !ok || s != server {
			continue
		}
		if share == full {
			return refuse(pv, "it is the whole share %s:%s, not a directory under it: carve volumes are directories under a share "+
				"(or whole Gluster volumes)", server, full)
		}
		mapped = append(mapped, share)
		if under(full, share) && len(share) > len(best) {
			best, local = share, l
		}
	}
	if best == "" {
		slices.Sort(mapped)
		return refuse(pv, "directory %s:%s is outside every share of %s given with --mount-map (%s): "+
			"add --mount-map %s:SHARE=LOCALPATH for the export holding it", server, full, server, strings.Join(mapped, ", "), server)
	}
	rel := strings.TrimPrefix(strings.TrimPrefix(full, best), "/")
	dir := strings.Split(rel, "/")
	for _, seg := range dir {
		if err := params.CheckSegment(seg); err != nil {
			return refuse(pv, "directory %q under share %s:%s: %w", rel, server, best, err)
		}
	}
	t.ID = volid.ID{Backend: params.BackendNFS, Servers: []string{server}, Share: best, Dir: dir}
	t.LocalShare = local
	return nil
}

// under: full is strictly inside share.
func under(full, share string) bool {
	if share == "/" {
		return full != "/"
	}
	return strings.HasPrefix(full, share+"/")
}

// mapHeketi: the in-tree plugin mounted ENDPOINT:/<path>, path being the
// Gluster volume heketi created for the claim; carve's Gluster volume mode
// serves exactly that (a volume ID without a directory).
func (t *Target) mapHeketi(endpoints EndpointsGetter, opts Options) error {
	pv, src := t.Old, t.Old.Spec.Glusterfs
	if src.ReadOnly {
		return refuse(pv.Name, "spec.glusterfs.readOnly is set: a carve PV would be writable")
	}
	vol := strings.TrimPrefix(src.Path, "/")
	if strings.Contains(vol, "/") {
		return refuse(pv.Name, "spec.glusterfs.path %q is a directory inside a Gluster volume; carve-adopt takes over whole heketi volumes", src.Path)
	}
	if err := params.CheckGlusterVolumeName(vol); err != nil {
		return refuse(pv.Name, "spec.glusterfs.path %q: %w", src.Path, err)
	}
	servers := opts.GlusterServers
	if len(servers) == 0 {
		ns := t.Claim.Namespace
		if src.EndpointsNamespace != nil && *src.EndpointsNamespace != "" {
			ns = *src.EndpointsNamespace
		}
		addrs, err := endpoints(ns, src.EndpointsName)
		if err != nil {
			return refuse(pv.Name, "Endpoints %s/%s: %w (or name the Gluster servers with --gluster-servers)", ns, src.EndpointsName, err)
		}
		servers = addrs
		if len(servers) == 0 {
			return refuse(pv.Name, "Endpoints %s/%s lists no address: name the Gluster servers with --gluster-servers", ns, src.EndpointsName)
		}
	}
	for _, s := range servers {
		if err := params.CheckHost(s); err != nil {
			return refuse(pv.Name, "Gluster server %q: %w", s, err)
		}
	}
	t.ID = volid.ID{Backend: params.BackendGluster, Servers: servers, Share: vol}
	return nil
}

// newPV is the carve PV replacing t.Old: the same name, claim, class,
// capacity, access modes, mount options and labels, reclaim policy Retain
// (the data came from elsewhere: carve never deletes it on its own), and
// carve's volume ID, which records onDelete retain.
func newPV(t *Target, volumeType string) *v1.PersistentVolume {
	old := t.Old
	fs := v1.PersistentVolumeFilesystem
	pv := &v1.PersistentVolume{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "PersistentVolume"},
		ObjectMeta: metav1.ObjectMeta{
			Name:   old.Name,
			Labels: old.Labels,
			Annotations: map[string]string{
				kubeview.AnnVolumeID: t.ID.String(),
				AnnAdoptedFrom:       t.Kind,
			},
		},
		Spec: v1.PersistentVolumeSpec{
			Capacity:                      old.Spec.Capacity,
			AccessModes:                   old.Spec.AccessModes,
			MountOptions:                  old.Spec.MountOptions,
			StorageClassName:              old.Spec.StorageClassName,
			PersistentVolumeReclaimPolicy: v1.PersistentVolumeReclaimRetain,
			VolumeMode:                    &fs,
			NodeAffinity:                  old.Spec.NodeAffinity,
			ClaimRef: &v1.ObjectReference{
				APIVersion: "v1",
				Kind:       "PersistentVolumeClaim",
				Namespace:  t.Claim.Namespace,
				Name:       t.Claim.Name,
				UID:        t.Claim.UID,
			},
		},
	}
	if s, ok := old.Annotations[kubeview.AnnGID]; ok {
		pv.Annotations[kubeview.AnnGID] = s
	}
	if volumeType == params.VolumeTypeNFS {
		pv.Annotations[AnnProvisionedBy] = ClassicProvisionerName
		pv.Spec.NFS = &v1.NFSVolumeSource{Server: t.ID.Servers[0], Path: nfs.ExportPath(t.ID)}
		return pv
	}
	pv.Annotations[AnnProvisionedBy] = kubeview.DriverName
	pv.Spec.CSI = &v1.CSIPersistentVolumeSource{
		Driver:           kubeview.DriverName,
		VolumeHandle:     t.ID.String(),
		VolumeAttributes: kubeview.VolumeAttributes(t.ID),
	}
	return pv
}

// Overlaps refuses targets whose data another PV also points at or nests
// with: two PVs on one directory, or one directory inside another's. carve
// never lets volume directories nest, and adopting one of two PVs on the
// same data would leave the other writing into a carve volume. others are
// the locations of every other PV that maps (selected or not).
func Overlaps(t *Target, others []*Target) error {
	for _, o := range others {
		if o == t || o.Old.Name == t.Old.Name {
			continue
		}
		a, b := t.ID, o.ID
		if a.Backend != b.Backend || a.Share != b.Share || (a.Backend == params.BackendNFS && a.Servers[0] != b.Servers[0]) {
			continue
		}
		ad, bd := a.DirPath(), b.DirPath()
		switch {
		case ad == bd:
			return refuse(t.Old.Name, "PersistentVolume %s points at the same data (%s): two PVs never share a volume", o.Old.Name, where(a))
		case strings.HasPrefix(ad, bd+"/"):
			return refuse(t.Old.Name, "its directory %s is inside directory %s of PersistentVolume %s: volume directories never nest", ad, bd, o.Old.Name)
		case strings.HasPrefix(bd, ad+"/"):
			return refuse(t.Old.Name, "its directory %s holds directory %s of PersistentVolume %s: volume directories never nest", ad, bd, o.Old.Name)
		}
	}
	return nil
}

func where(id volid.ID) string {
	if len(id.Dir) == 0 {
		return "Gluster volume " + id.Share
	}
	return sharemount.Key(id.Servers[0], id.Share) + " " + id.DirPath()
}
