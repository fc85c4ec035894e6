//go:build e2e

package ferret

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/carve-csi/carve/test/cluster"
	"github.com/carve-csi/carve/test/scenario"
)

// backupRestore is the Mongo example's backup and restore through
// VolumeSnapshots on the real node of TestFerretRealNode, in namespace
// mongo-backup: deploy/snapshot-controller (CRDs and snapshot-controller)
// next to carve from deploy/examples/csi-nfs (csi-snapshotter,
// VolumeSnapshotClass carve-nfs-csi). 100 documents are written to a
// FerretDB replica, the replica is stopped (a quiesced snapshot, as
// docs/snapshots.md advises: the snapshot is a copy of files), its claim
// snapshotted, and 50 more written after the snapshot. Two restores of
// that snapshot side by side, a claim of its own (dataSource) mounted by a
// new FerretDB pod and a new StatefulSet whose claim template names the
// snapshot, must each hold exactly the first 100; the source keeps 150.
func backupRestore(t *testing.T, c *cluster.Cluster, n *cluster.RealNode, repo, share string) {
	ctx := t.Context()
	start := time.Now()
	t0 := start
	if err := scenario.DeploySnapshotController(ctx, c, n, repo); err != nil {
		t.Fatal(err)
	}
	t.Logf("deploy/snapshot-controller applied and rolled out in %s", time.Since(t0).Round(time.Second))
	const ns = "mongo-backup"
	f := newFerretSTS(ctx, t, c, ns)
	f.scale(ctx, 0)

	manifests := filepath.Join(t.TempDir(), "backup.yaml")
	if err := os.WriteFile(manifests, []byte(`apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: state-ferret-0-backup}
spec:
  volumeSnapshotClassName: carve-nfs-csi
  source: {persistentVolumeClaimName: state-ferret-0}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	if _, err := c.Kubectl(ctx, "-n", ns, "apply", "-f", manifests); err != nil {
		t.Fatal(err)
	}
	if out, err := c.Kubectl(ctx, "-n", ns, "wait", "--for=jsonpath={.status.readyToUse}=true", "--timeout=3m", "volumesnapshot/state-ferret-0-backup"); err != nil {
		out2, _ := c.Kubectl(ctx, "-n", ns, "describe", "volumesnapshot")
		t.Fatalf("snapshot never ready: %v %s\n%s", err, out, out2)
	}
	content, err := c.Kubectl(ctx, "-n", ns, "get", "volumesnapshot/state-ferret-0-backup", "-o", "jsonpath={.status.boundVolumeSnapshotContentName} {.status.restoreSize}")
	if err != nil {
		t.Fatal(err)
	}
	snapReady := time.Since(t0)
	entries, err := os.ReadDir(filepath.Join(share, ".carve-snapshots"))
	if err != nil || len(entries) != 1 {
		t.Fatalf("want one snapshot entry in the share's .carve-snapshots, got %d: %v", len(entries), err)
	}
	files, size := treeSize(t, filepath.Join(share, ".carve-snapshots", entries[0].Name()))
	t.Logf("VolumeSnapshot ready in %s (content, restoreSize: %s; the copy on the share: %d files, %d bytes)",
		snapReady.Round(100*time.Millisecond), content, files, size)

	// Writes after the snapshot must not reach the restore.
	f.scale(ctx, 1)
	f.waitNewPod(ctx, "")
	f.insert(ctx, 100, 50)
	f.count(ctx, 150)

	// Two restores of the one snapshot side by side: a claim of its own
	// (dataSource) mounted by a new pod, and a new StatefulSet whose claim
	// template names the snapshot, so its replica 0's claim is restored.
	if err := os.WriteFile(manifests, []byte(`apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: state-restored}
spec:
  storageClassName: carve-nfs-csi
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
  dataSource: {apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: state-ferret-0-backup}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	if _, err := c.Kubectl(ctx, "-n", ns, "apply", "-f", manifests); err != nil {
		t.Fatal(err)
	}
	r := &ferretSTS{t: t, c: c, ns: ns, name: "ferret-restored", dataSource: &v1.TypedLocalObjectReference{
		APIGroup: ptr.To("snapshot.storage.k8s.io"), Kind: "VolumeSnapshot", Name: "state-ferret-0-backup"}}
	if err := r.create(ctx, 1); err != nil {
		t.Fatal(err)
	}
	claims := []string{"state-restored", "state-ferret-restored-0"}
	bound := map[string]time.Duration{}
	err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, name := range claims {
			if _, ok := bound[name]; ok {
				continue
			}
			if pvc, err := c.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{}); err == nil && pvc.Status.Phase == v1.ClaimBound {
				bound[name] = time.Since(t0)
			}
		}
		return len(bound) == len(claims), nil
	})
	if err != nil {
		out, _ := c.Kubectl(ctx, "-n", ns, "describe", "pvc")
		t.Fatalf("restored claims never Bound (%v Bound): %v\n%s", bound, err, out)
	}
	t.Logf("claims restored from the snapshot, Bound after: %s %s (claim applied), %s %s (StatefulSet created)",
		claims[0], bound[claims[0]].Round(100*time.Millisecond), claims[1], bound[claims[1]].Round(100*time.Millisecond))

	// A new FerretDB pod on the restored claim, as the StatefulSet's.
	tmpl := f.template()
	// Not the StatefulSet's labels: it would adopt the pod.
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "ferret-claim-restored", Namespace: ns, Labels: map[string]string{"app": "ferret-claim-restored"}}, Spec: tmpl.Spec}
	pod.Spec.Volumes = []v1.Volume{{Name: "state", VolumeSource: v1.VolumeSource{
		PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "state-restored"}}}}
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var ip string
	f.poll(ctx, "ferret-claim-restored Ready", func(ctx context.Context) (bool, error) {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, "ferret-claim-restored", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		ip = p.Status.PodIP
		return ready(p), nil
	})
	uri := fmt.Sprintf("mongodb://%s:27017/?directConnection=true&serverSelectionTimeoutMS=20000", ip)
	cl, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	defer closeClient(cl)
	coll := cl.Database("shop").Collection("orders")
	var got int64
	for i := 0; i < 20; i++ {
		if got, err = coll.CountDocuments(ctx, bson.D{}); err == nil {
			break
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		t.Fatalf("count on the restored claim: %v", err)
	}
	if got != 100 {
		t.Fatalf("the restored claim holds %d documents, want the 100 of the snapshot", got)
	}
	var last bson.M
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: 99}}).Decode(&last); err != nil || last["item"] != "item-99" {
		t.Fatalf("document 99 on the restored claim: %v %v", last, err)
	}
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: 100}}).Err(); !errors.Is(err, mongo.ErrNoDocuments) {
		t.Fatalf("document 100, written after the snapshot, on the restored claim: %v", err)
	}
	t.Logf("restored claim: the 100 documents of the snapshot read back in a new FerretDB pod, none of the 50 written after it (%s after the claim was applied)", time.Since(t0).Round(time.Second))

	// count asserts exactly 100 documents, item-0 … item-99: none of the
	// 50 written after the snapshot.
	r.count(ctx, 100)
	t.Logf("new StatefulSet ferret-restored (claim template with the snapshot as dataSource): replica 0 reads the 100 documents of the snapshot, none written after it (%s after the StatefulSet was created)", time.Since(t0).Round(time.Second))

	// The source replica is untouched by the restores: still 150.
	f.count(ctx, 150)
	t.Logf("BackupRestore, snapshot-controller rollout included: %s", time.Since(start).Round(time.Second))
}

// treeSize counts the regular files under dir and their bytes.
func treeSize(t *testing.T, dir string) (files int, size int64) {
	t.Helper()
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		files++
		size += fi.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files, size
}
