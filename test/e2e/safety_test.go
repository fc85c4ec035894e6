//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/carve-csi/carve/test/cluster"
	"github.com/carve-csi/carve/test/scenario"
)

const provisionerName = "carve.csi.dev/provisioner"

// safetyEnv runs cmd/provisioner as its own process (RBAC of deploy/) on the
// real control plane, its share SERVER:SHARE mapped to shareDir.
func safetyEnv(t *testing.T, nfs scenario.NFS, shareDir string) (*scenario.Env, kubernetes.Interface) {
	t.Helper()
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	env := &scenario.Env{
		Cluster: cluster.StartForTest(t, cluster.Options{Nodes: 1}),
		NFS:     nfs, ShareDir: shareDir, Repo: repo, Namespace: "safety", Logf: t.Logf,
	}
	if err := env.StartProvisioner(t.Context()); err != nil {
		t.Fatal(err)
	}
	client := env.Cluster.Client
	if _, err := client.CoreV1().Namespaces().Create(t.Context(), &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: env.Namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return env, client
}

func createClass(t *testing.T, client kubernetes.Interface, name string, params map[string]string) {
	t.Helper()
	reclaim := v1.PersistentVolumeReclaimDelete
	sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: provisionerName,
		ReclaimPolicy: &reclaim, Parameters: params}
	if _, err := client.StorageV1().StorageClasses().Create(t.Context(), sc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func createClaim(t *testing.T, client kubernetes.Interface, ns, name, class string) {
	t.Helper()
	pvc := &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1.PersistentVolumeClaimSpec{
			StorageClassName: &class,
			AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteMany},
			Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Mi")}},
		},
	}
	if _, err := client.CoreV1().PersistentVolumeClaims(ns).Create(t.Context(), pvc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// logEvents shows a claim's events in the test log (what a user reads).
func logEvents(t *testing.T, client kubernetes.Interface, ns, name string) {
	t.Helper()
	events, err := client.CoreV1().Events(ns).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range events.Items {
		if ev.InvolvedObject.Name == name {
			t.Logf("event on %s/%s: %s %s: %s", ns, name, ev.Type, ev.Reason, ev.Message)
		}
	}
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	start := time.Now()
	if err := wait.PollUntilContextTimeout(t.Context(), 250*time.Millisecond, timeout, true, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
	t.Logf("%s (%.1fs)", what, time.Since(start).Seconds())
}

func bound(client kubernetes.Interface, ns, name string) func(ctx context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		pvc, err := client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
		return err == nil && pvc.Status.Phase == v1.ClaimBound, nil
	}
}

// claimEvent finds an event of reason on the claim whose message contains every part.
func claimEvent(client kubernetes.Interface, ns, name, reason string, parts ...string) func(ctx context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		events, err := client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		for _, ev := range events.Items {
			if ev.InvolvedObject.Name != name || ev.Reason != reason {
				continue
			}
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(ev.Message, p)
			}
			if ok {
				return true, nil
			}
		}
		return false, nil
	}
}

// TestProvisionerShareMountGone (issue 9, D1): the provisioner's share is a
// real mount (a bind mount of nfs-ganesha's export, standing in for the pod's
// NFS volume, since this kernel has no NFS client). It is unmounted under the
// running provisioner: new claims get ProvisioningFailed events naming the
// share and the path, none binds, /readyz reports not ready and nothing at
// all is written to the bare mount point. When the mount returns the claims
// bind without a restart, on the server.
func TestProvisionerShareMountGone(t *testing.T) {
	export, nfs := startNFS(t)
	mnt := filepath.Join(t.TempDir(), "share")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for unix.Unmount(mnt, unix.MNT_DETACH) == nil {
		}
	})
	bind := func() {
		t.Helper()
		if err := unix.Mount(export, mnt, "", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
	}
	bind()
	env, client := safetyEnv(t, nfs, mnt)
	ns := env.Namespace
	createClass(t, client, "carve", map[string]string{"backend": "nfs", "server": nfs.Server(), "share": nfs.Export()})
	createClaim(t, client, ns, "before", "carve")
	waitFor(t, "claim before Bound", time.Minute, bound(client, ns, "before"))

	if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	claims := []string{"during-0", "during-1", "during-2"}
	for _, c := range claims {
		createClaim(t, client, ns, c, "carve")
	}
	for _, c := range claims {
		waitFor(t, "ProvisioningFailed naming the share on "+c, time.Minute,
			claimEvent(client, ns, c, "ProvisioningFailed", nfs.Server()+":"+nfs.Export(), mnt))
	}
	logEvents(t, client, ns, claims[0])
	waitFor(t, "/readyz not ready", 30*time.Second, func(context.Context) (bool, error) {
		code, err := env.ProvisionerReady()
		return err == nil && code == http.StatusServiceUnavailable, nil
	})
	time.Sleep(3 * time.Second) // retries keep failing; none may succeed
	for _, c := range claims {
		if ok, _ := bound(client, ns, c)(t.Context()); ok {
			t.Errorf("claim %s bound while the share was gone", c)
		}
	}
	if entries, _ := os.ReadDir(mnt); len(entries) != 0 {
		t.Fatalf("%d entries written to the bare mount point %s (first %s)", len(entries), mnt, entries[0].Name())
	}

	bind()
	for _, c := range claims {
		waitFor(t, c+" Bound after the mount returned", 2*time.Minute, bound(client, ns, c))
		if _, err := os.Stat(filepath.Join(export, ns, c)); err != nil {
			t.Errorf("claim %s: directory not on the server: %v", c, err)
		}
	}
	code, err := env.ProvisionerReady()
	if err != nil || code != http.StatusOK {
		t.Errorf("/readyz after the mount returned: %d, %v", code, err)
	}
}

// TestProvisionerVolumesNeverNest (issue 9, D2): two classes on one share,
// one rendering ${namespace} and the default ${namespace}/${name}. In either
// order the second claim is refused with an event naming the other volume,
// and deleting the first (onDelete delete) leaves the other's data alone.
func TestProvisionerVolumesNeverNest(t *testing.T) {
	export, nfs := startNFS(t)
	env, client := safetyEnv(t, nfs, export)
	params := func(extra ...string) map[string]string {
		p := map[string]string{"backend": "nfs", "server": nfs.Server(), "share": nfs.Export(), "onDelete": "delete"}
		for i := 0; i+1 < len(extra); i += 2 {
			p[extra[i]] = extra[i+1]
		}
		return p
	}
	createClass(t, client, "per-claim", params())
	createClass(t, client, "per-namespace", params("pathPattern", "${pvc.metadata.namespace}"))
	ns := env.Namespace
	pvName := func(claim string) string {
		pvc, err := client.CoreV1().PersistentVolumeClaims(ns).Get(t.Context(), claim, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return pvc.Spec.VolumeName
	}

	// The inner volume first; the outer class must not adopt its parent.
	createClaim(t, client, ns, "inner", "per-claim")
	waitFor(t, "inner Bound", time.Minute, bound(client, ns, "inner"))
	// The first claim of either class warns that the two patterns can nest.
	waitFor(t, "PathPatternOverlap warning", time.Minute,
		claimEvent(client, ns, "inner", "PathPatternOverlap", "StorageClass per-namespace", "StorageClass per-claim"))
	logEvents(t, client, ns, "inner")
	data := filepath.Join(export, ns, "inner", "data")
	if err := os.WriteFile(data, []byte("live"), 0o644); err != nil {
		t.Fatal(err)
	}
	createClaim(t, client, ns, "outer", "per-namespace")
	waitFor(t, "outer refused naming inner's volume", time.Minute,
		claimEvent(client, ns, "outer", "ProvisioningFailed", "never nest", pvName("inner")))
	logEvents(t, client, ns, "outer")
	if ok, _ := bound(client, ns, "outer")(t.Context()); ok {
		t.Fatal("the outer claim bound to the directory holding the inner volume")
	}
	if err := client.CoreV1().PersistentVolumeClaims(ns).Delete(t.Context(), "outer", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	// The other order, in a namespace of its own.
	ns2 := "safety-2"
	if _, err := client.CoreV1().Namespaces().Create(t.Context(), &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns2}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	createClaim(t, client, ns2, "outer", "per-namespace")
	waitFor(t, "outer Bound", time.Minute, bound(client, ns2, "outer"))
	createClaim(t, client, ns2, "inner", "per-claim")
	outerPV, err := client.CoreV1().PersistentVolumeClaims(ns2).Get(t.Context(), "outer", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "inner refused naming outer's volume", time.Minute,
		claimEvent(client, ns2, "inner", "ProvisioningFailed", "never nest", outerPV.Spec.VolumeName))
	logEvents(t, client, ns2, "inner")
	if _, err := os.Stat(filepath.Join(export, ns2, "inner")); err == nil {
		t.Fatal("a volume was carved inside another volume")
	}

	// Deleting the inner claim's neighbours never touches its data.
	if err := client.CoreV1().PersistentVolumeClaims(ns2).Delete(t.Context(), "outer", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "outer's PV gone", time.Minute, func(ctx context.Context) (bool, error) {
		_, err := client.CoreV1().PersistentVolumes().Get(ctx, outerPV.Spec.VolumeName, metav1.GetOptions{})
		return err != nil, nil
	})
	if b, err := os.ReadFile(data); err != nil || string(b) != "live" {
		t.Fatalf("the inner volume's data: %q, %v", b, err)
	}
	if ok, _ := bound(client, ns, "inner")(t.Context()); !ok {
		t.Fatal(fmt.Errorf("inner claim no longer Bound"))
	}
}
