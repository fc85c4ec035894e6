//go:build e2e

package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/test/cluster"
)

// TestReadyzWaitsForCaches (issue 17): /readyz is not ready while an
// informer carve uses has not synced, and ready once it has. The provisioner
// first runs without the right to list StorageClasses, so that cache cannot
// sync; granting it lets the informer sync and the replica become ready.
func TestReadyzWaitsForCaches(t *testing.T) {
	c := cluster.StartForTest(t, cluster.Options{})
	ctx := t.Context()
	bin := deployProvisioner(t, c)
	const name = "carve-readyz"
	kc := restrictedAccount(t, c, name, func(r *rbacv1.PolicyRule) bool {
		return !slices.Contains(r.Resources, "storageclasses")
	})
	health := freeAddr(t)
	p, err := c.StartProcess("carve-provisioner", []string{bin, "--kubeconfig=" + kc, "--leader-elect=false",
		"--mount-map=readyz.local:/export=" + declaredShare(t), "--health-address=" + health, "--v=2"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	readyz := func() (int, string) {
		resp, err := http.Get("http://" + health + "/readyz")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}

	// The process serves /healthz, the API server answers, PVs and claims
	// sync: only the StorageClass cache is missing.
	var code int
	var body string
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		code, body = readyz()
		return code != 0, nil
	})
	if err != nil {
		log, _ := os.ReadFile(p.LogPath)
		t.Fatalf("/readyz never answered: %s\nprovisioner log:\n%s", body, log)
	}
	for range 20 {
		code, body = readyz()
		if code == http.StatusOK {
			t.Fatalf("/readyz is ready while the StorageClass cache cannot sync: %s", body)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if !strings.Contains(body, "StorageClass cache has not synced") {
		t.Errorf("/readyz says %q; want it to name the StorageClass cache", body)
	}
	t.Logf("before sync: %d %s", code, body)

	role, err := c.Client.RbacV1().ClusterRoles().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	role.Rules = append(role.Rules, rbacv1.PolicyRule{APIGroups: []string{"storage.k8s.io"}, Resources: []string{"storageclasses"},
		Verbs: []string{"get", "list", "watch"}})
	if _, err := c.Client.RbacV1().ClusterRoles().Update(ctx, role, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		code, body = readyz()
		return code == http.StatusOK, nil
	})
	if err != nil {
		t.Fatalf("/readyz not ready after the caches could sync: %d %s", code, body)
	}
	t.Logf("ready %v after StorageClasses could be listed", time.Since(start).Round(time.Millisecond))
}

// TestCSIReadyzWaitsForCaches: the CSI controller's cluster view (PVs and
// claims) must sync before /readyz is ready. It runs as a service account
// that may not list them at first.
func TestCSIReadyzWaitsForCaches(t *testing.T) {
	c := cluster.StartForTest(t, cluster.Options{Nodes: -1})
	ctx := t.Context()
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(c.Dir, "carve-csi-driver")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/csi-driver")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "carve-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	const name = "carve-csi-readyz"
	kc, err := c.ServiceAccountKubeconfig(ctx, "carve-system", name)
	if err != nil {
		t.Fatal(err)
	}
	health := freeAddr(t)
	p, err := c.StartProcess("carve-csi-controller", []string{bin, "--mode=controller", "--kubeconfig=" + kc,
		"--endpoint=unix://" + filepath.Join(t.TempDir(), "csi.sock"), "--mount-map=readyz.local:/export=" + declaredShare(t),
		"--health-address=" + health, "--v=2"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	for range 40 {
		if code, body := readyzOf(health); code == http.StatusOK {
			t.Fatalf("/readyz is ready while the PV and claim caches cannot sync: %s", body)
		}
		time.Sleep(250 * time.Millisecond)
	}
	select {
	case <-p.Done():
		log, _ := os.ReadFile(p.LogPath)
		t.Fatalf("the controller exited: %v\n%s", p.Err(), log)
	default:
	}

	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: []rbacv1.PolicyRule{{
		APIGroups: []string{""}, Resources: []string{"persistentvolumes", "persistentvolumeclaims"}, Verbs: []string{"get", "list", "watch"}}}}
	if _, err := c.Client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	bindServiceAccount(t, c, name)
	start := time.Now()
	var code int
	var body string
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		code, body = readyzOf(health)
		return code == http.StatusOK, nil
	})
	if err != nil {
		log, _ := os.ReadFile(p.LogPath)
		t.Fatalf("/readyz not ready after the caches could sync: %d %s\n%s", code, body, log)
	}
	t.Logf("ready %v after PVs and claims could be listed", time.Since(start).Round(time.Millisecond))
}

func readyzOf(addr string) (int, string) {
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// declaredShare is a directory declared to be the share (an empty
// .carve-share, as an administrator does for an exported directory carve
// reaches without a mount), so readiness sees a verified share.
func declaredShare(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := dirvol.Declare(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}
