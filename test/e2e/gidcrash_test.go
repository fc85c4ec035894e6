//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/kubeview"
	"github.com/carve-csi/carve/test/cluster"
)

// TestGIDUniqueAfterKill (issue 9, D3): the provisioner is SIGKILLed between
// carving a directory (its GID recorded on the share) and saving the PV. To
// hold it at that point it first runs as a service account that may not
// create PVs; the lib keeps retrying the PV while the directory exists. After
// the restart, with the shipped RBAC, a new claim must not get the crashed
// directory's GID, and the crashed claim, carved again, keeps its own: no two
// PVs share a GID.
func TestGIDUniqueAfterKill(t *testing.T) {
	share, nfs := startNFS(t)
	c := cluster.StartForTest(t, cluster.Options{})
	ctx := t.Context()
	bin := deployProvisioner(t, c)
	noPV := restrictedAccount(t, c, "carve-no-pv-create", func(r *rbacv1.PolicyRule) bool {
		if slices.Contains(r.Resources, "persistentvolumes") {
			r.Verbs = slices.DeleteFunc(slices.Clone(r.Verbs), func(v string) bool { return v == "create" })
		}
		return true
	})
	full, err := c.ServiceAccountKubeconfig(ctx, "carve-system", "carve-provisioner")
	if err != nil {
		t.Fatal(err)
	}
	start := func(kubeconfig string) *cluster.Process {
		p, err := c.StartProcess("carve-provisioner", []string{bin,
			"--kubeconfig=" + kubeconfig,
			"--mount-map=" + nfs.Server() + ":" + nfs.Export() + "=" + share,
			"--leader-elect=false", "--health-address=" + freeAddr(t), "--v=2",
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	const ns = "gids"
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "carve-gids"}, Provisioner: "carve.csi.dev/provisioner",
		Parameters: map[string]string{"backend": "nfs", "server": nfs.Server(), "share": nfs.Export()}}
	if _, err := c.Client.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// 1. Carve "crashed" with no way to save its PV, then kill -9.
	p := start(noPV)
	newClaim(t, c, ns, "crashed", sc.Name)
	rec := waitRecord(t, share, "crashed")
	t.Logf("carved %s with GID %d; PV creation is forbidden; SIGKILL", rec.Dir, rec.GID)
	if err := syscall.Kill(p.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	// The claim goes, so its retry cannot reserve the GID first; its
	// directory and record stay, as they do for a retained volume.
	if err := c.Client.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, "crashed", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	// 2. Restart with the shipped RBAC: a new claim, then "crashed" again.
	p = start(full)
	t.Cleanup(p.Stop)
	fresh := waitPV(t, c, newClaim(t, c, ns, "fresh", sc.Name))
	again := waitPV(t, c, newClaim(t, c, ns, "crashed", sc.Name))
	t.Logf("GIDs: fresh %s, crashed (re-attached) %s", fresh.Annotations[kubeview.AnnGID], again.Annotations[kubeview.AnnGID])

	pvs, err := c.Client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	owner := map[string]string{}
	for _, pv := range pvs.Items {
		g := pv.Annotations[kubeview.AnnGID]
		if g == "" {
			t.Errorf("PV %s has no GID", pv.Name)
			continue
		}
		if o, dup := owner[g]; dup {
			t.Errorf("GID %s is shared by PVs %s and %s", g, o, pv.Name)
		}
		owner[g] = pv.Name
	}
	if again.Annotations[kubeview.AnnGID] != fmt.Sprint(rec.GID) {
		t.Errorf("the crashed claim's volume has GID %s, want its recorded %d", again.Annotations[kubeview.AnnGID], rec.GID)
	}
}

// restrictedAccount is a service account named name with the shipped
// ClusterRole changed by edit (a rule is dropped when edit returns false),
// bound in a ClusterRole of the same name; it returns the kubeconfig.
func restrictedAccount(t *testing.T, c *cluster.Cluster, name string, edit func(*rbacv1.PolicyRule) bool) string {
	ctx := t.Context()
	role, err := c.Client.RbacV1().ClusterRoles().Get(ctx, "carve-provisioner", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for _, rule := range role.Rules {
		if edit(&rule) {
			r.Rules = append(r.Rules, rule)
		}
	}
	if _, err := c.Client.RbacV1().ClusterRoles().Create(ctx, r, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	bindServiceAccount(t, c, name)
	kc, err := c.ServiceAccountKubeconfig(ctx, "carve-system", name)
	if err != nil {
		t.Fatal(err)
	}
	return kc
}

// deployProvisioner applies the shipped namespace and RBAC and builds
// cmd/provisioner; it returns the binary.
func deployProvisioner(t *testing.T, c *cluster.Cluster) string {
	ctx := t.Context()
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"namespace.yaml", "rbac.yaml"} {
		if err := c.Apply(ctx, filepath.Join(repo, "deploy/provisioner", f)); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(c.Dir, "carve-provisioner")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/provisioner")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func newClaim(t *testing.T, c *cluster.Cluster, ns, name, class string) *v1.PersistentVolumeClaim {
	pvc := &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1.PersistentVolumeClaimSpec{
			StorageClassName: &class,
			AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteMany},
			Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	// A claim of the same name may still be going away.
	var out *v1.PersistentVolumeClaim
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		var err error
		out, err = c.Client.CoreV1().PersistentVolumeClaims(ns).Create(ctx, pvc, metav1.CreateOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("create claim %s: %v", name, err)
	}
	return out
}

func waitPV(t *testing.T, c *cluster.Cluster, pvc *v1.PersistentVolumeClaim) *v1.PersistentVolume {
	var pv *v1.PersistentVolume
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		var err error
		pv, err = c.Client.CoreV1().PersistentVolumes().Get(ctx, "pvc-"+string(pvc.UID), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		t.Fatalf("no PV for claim %s: %v", pvc.Name, err)
	}
	return pv
}

// waitRecord waits for the carve record of claim on the share.
func waitRecord(t *testing.T, share, claim string) dirvol.Meta {
	s, err := dirvol.Open(share)
	if err != nil {
		t.Fatal(err)
	}
	var rec dirvol.Meta
	err = wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		recs, err := s.Records(ctx)
		if err != nil {
			return false, err
		}
		for _, r := range recs {
			if r.Claim == claim {
				rec = r
				return r.GID > 0, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no record for %s on the share: %v", claim, err)
	}
	return rec
}

func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// bindServiceAccount binds the ClusterRole name to the ServiceAccount
// carve-system/name.
func bindServiceAccount(t *testing.T, c *cluster.Cluster, name string) {
	t.Helper()
	b := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: "carve-system"}},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name}}
	if _, err := c.Client.RbacV1().ClusterRoleBindings().Create(t.Context(), b, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}
