package provisioner

import (
	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/gluster"
	"github.com/carve-csi/carve/pkg/kubeclient"
	"github.com/carve-csi/carve/pkg/nfs"
	"github.com/carve-csi/carve/pkg/sharemount"
	"github.com/carve-csi/carve/pkg/volid"
	"github.com/carve-csi/carve/pkg/volume"
)

// wholeVolumeEvent reports what Delete did with a volume per claim.
func (p *Provisioner) wholeVolumeEvent(pv *v1.PersistentVolume, id volid.ID, out volume.Outcome) {
	switch out.Action {
	case backend.ActionArchived:
		p.recorder.Eventf(pv, v1.EventTypeNormal, ReasonDeleted, "onDelete=archive: stopped Gluster volume %s and kept it with its data", id.Share)
	case backend.ActionDeleted:
		if out.Where != "" {
			p.recorder.Eventf(pv, v1.EventTypeWarning, ReasonDeleted, "onDelete=delete: deleted Gluster volume %s; %s", id.Share, out.Where)
			return
		}
		p.recorder.Eventf(pv, v1.EventTypeNormal, ReasonDeleted, "onDelete=delete: deleted Gluster volume %s and its bricks", id.Share)
	case backend.ActionKeptInUse:
		p.recorder.Eventf(pv, v1.EventTypeNormal, ReasonKept, "kept Gluster volume %s: PersistentVolume %s still uses it", id.Share, out.Where)
	case backend.ActionRetained:
		p.recorder.Eventf(pv, v1.EventTypeNormal, ReasonKept, "onDelete=retain: kept Gluster volume %s", id.Share)
	}
}

// newGluster is the Gluster backend with executor ssh reading its Secrets
// through the API server (executor local needs nothing).
func newGluster(client kubernetes.Interface, resolver *sharemount.Resolver) *gluster.Backend {
	return gluster.New(gluster.Options{Resolver: resolver, SecretData: kubeclient.SecretData(client)})
}

// newNFS is the NFS backend with btrfsExecutor ssh reading its Secrets
// through the API server, and learning a share's executor from the
// provisioner's StorageClasses after a restart.
func newNFS(client kubernetes.Interface, resolver *sharemount.Resolver, name string) *nfs.Backend {
	return nfs.NewWithOptions(resolver, nfs.Options{SecretData: kubeclient.SecretData(client), Classes: kubeclient.ClassParams(client, name)})
}
