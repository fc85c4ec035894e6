//go:build e2e

package ferret

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/carve-csi/carve/test/cluster"
	"github.com/carve-csi/carve/test/scenario"
)

// TestFerretBackupRestore is the Mongo example's backup and restore through
// VolumeSnapshots on a real node: deploy/snapshot-controller (CRDs and
// snapshot-controller), carve from deploy/examples/csi-nfs (csi-snapshotter,
// VolumeSnapshotClass carve-nfs-csi). 100 documents are written to a
// FerretDB replica, the replica is stopped (a quiesced snapshot, as
// docs/snapshots.md advises), its claim snapshotted, and 50 more written
// after the snapshot. A new claim restored from the snapshot (dataSource)
// and mounted by a new FerretDB pod must hold exactly the first 100.
func TestFerretBackupRestore(t *testing.T) {
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	c, n, share := scenario.StartRealCSI(t, repo, cluster.RealNodeOptions{})
	ctx := t.Context()
	t0 := time.Now()
	if err := scenario.DeploySnapshotController(ctx, c, n, repo); err != nil {
		t.Fatal(err)
	}
	t.Logf("deploy/snapshot-controller applied and rolled out in %s", time.Since(t0).Round(time.Second))
	const ns = "mongo"
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f := &ferretSTS{t: t, c: c, ns: ns}
	if err := f.create(ctx, 1); err != nil {
		t.Fatal(err)
	}
	f.insert(ctx, 0, 100)
	f.count(ctx, 100)
	f.scale(ctx, 0)

	manifests := filepath.Join(t.TempDir(), "backup.yaml")
	if err := os.WriteFile(manifests, []byte(`apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: state-ferret-0-backup, namespace: mongo}
spec:
  volumeSnapshotClassName: carve-nfs-csi
  source: {persistentVolumeClaimName: state-ferret-0}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	if _, err := c.Kubectl(ctx, "apply", "-f", manifests); err != nil {
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
	t.Logf("VolumeSnapshot ready in %s (content, restoreSize: %s)", time.Since(t0).Round(time.Second), content)
	entries, err := os.ReadDir(filepath.Join(share, ".carve-snapshots"))
	if err != nil || len(entries) == 0 {
		t.Fatalf("no snapshot entry in the share's .carve-snapshots: %v", err)
	}

	// Writes after the snapshot must not reach the restore.
	f.scale(ctx, 1)
	f.waitNewPod(ctx, "")
	f.insert(ctx, 100, 50)
	f.count(ctx, 150)

	if err := os.WriteFile(manifests, []byte(`apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: state-restored, namespace: mongo}
spec:
  storageClassName: carve-nfs-csi
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
  dataSource: {apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: state-ferret-0-backup}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	if _, err := c.Kubectl(ctx, "apply", "-f", manifests); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Kubectl(ctx, "-n", ns, "wait", "--for=jsonpath={.status.phase}=Bound", "--timeout=3m", "pvc/state-restored"); err != nil {
		out, _ := c.Kubectl(ctx, "-n", ns, "describe", "pvc/state-restored")
		t.Fatalf("restored claim never Bound: %v\n%s", err, out)
	}
	t.Logf("claim restored from the snapshot, Bound in %s", time.Since(t0).Round(time.Second))

	// A new FerretDB pod on the restored claim, as the StatefulSet's.
	tmpl := f.template()
	// Not the StatefulSet's labels: it would adopt the pod.
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "ferret-restored", Namespace: ns, Labels: map[string]string{"app": "ferret-restored"}}, Spec: tmpl.Spec}
	pod.Spec.Volumes = []v1.Volume{{Name: "state", VolumeSource: v1.VolumeSource{
		PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "state-restored"}}}}
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var ip string
	f.poll(ctx, "ferret-restored Ready", func(ctx context.Context) (bool, error) {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, "ferret-restored", metav1.GetOptions{})
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
	defer func() { _ = cl.Disconnect(context.Background()) }()
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
	if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: 100}}).Err(); err != mongo.ErrNoDocuments {
		t.Fatalf("document 100, written after the snapshot, on the restored claim: %v", err)
	}
	t.Log("restored claim: the 100 documents of the snapshot read back in a new FerretDB pod, none of the 50 written after it")
}
