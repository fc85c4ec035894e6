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
	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/carve-csi/carve/test/cluster"
	"github.com/carve-csi/carve/test/scenario"
)

// TestFerretRealNode (issue #11, the Mongo example on real containers):
// FerretDB v1.24.0 (Mongo wire protocol, SQLite backend; the ferretdb image
// of make images) stands in for mongod in a one-replica StatefulSet whose
// /state is a carve claim, on a real node with carve deployed from
// deploy/csi-driver. Documents inserted through the Mongo wire protocol are
// all read back after deleting the pod, after scaling to 0 and back, and
// after deleting the StatefulSet and its claim and recreating them (the
// claim is re-attached to its retained directory). The replica-set logic
// of the example (the agent) is still proven only against a fake: there is
// no mongod binary here. There is no kube-proxy on the real node, so the
// test reaches the pod at its IP (the pod network is local to this host)
// rather than through the Service.
//
// BackupRestore (issue 14) snapshots a replica's claim and restores it
// (backupRestore). Both run on one cluster and real node: starting and
// stopping them took 1.5 to 3.5 minutes on the loaded test machine, the
// stories under a minute each.
func TestFerretRealNode(t *testing.T) {
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	c, n, share := scenario.StartRealCSI(t, repo, cluster.RealNodeOptions{})
	t.Run("StatefulSet", func(t *testing.T) { statefulSet(t, c, share) })
	t.Run("BackupRestore", func(t *testing.T) { backupRestore(t, c, n, repo, share) })
}

// newFerretSTS makes namespace ns with the StatefulSet "ferret" of one
// replica, which holds documents 0-99.
func newFerretSTS(ctx context.Context, t *testing.T, c *cluster.Cluster, ns string) *ferretSTS {
	t.Helper()
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f := &ferretSTS{t: t, c: c, ns: ns, name: "ferret"}
	if err := f.create(ctx, 1); err != nil {
		t.Fatal(err)
	}
	f.insert(ctx, 0, 100)
	f.count(ctx, 100)
	return f
}

// statefulSet is the StatefulSet story of TestFerretRealNode, in namespace
// mongo.
func statefulSet(t *testing.T, c *cluster.Cluster, share string) {
	ctx := t.Context()
	const ns = "mongo"
	f := newFerretSTS(ctx, t, c, ns)

	old := f.pod(ctx)
	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, old.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	f.waitNewPod(ctx, old.UID)
	f.count(ctx, 100)
	f.insert(ctx, 100, 50)
	t.Log("after deleting the pod: all 100 documents read back, 50 more inserted")

	f.scale(ctx, 0)
	f.scale(ctx, 1)
	f.waitNewPod(ctx, "")
	f.count(ctx, 150)
	t.Log("after scaling 1 → 0 → 1: all 150 documents read back")

	if err := c.Client.AppsV1().StatefulSets(ns).Delete(ctx, "ferret", metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationForeground)}); err != nil {
		t.Fatal(err)
	}
	f.poll(ctx, "pods gone", func(ctx context.Context) (bool, error) {
		pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		return err == nil && len(pods.Items) == 0, nil
	})
	if err := c.Client.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, "state-ferret-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	f.poll(ctx, "claim gone", func(ctx context.Context) (bool, error) {
		pvcs, err := c.Client.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
		return err == nil && len(pvcs.Items) == 0, nil
	})
	if err := f.create(ctx, 1); err != nil {
		t.Fatal(err)
	}
	f.waitNewPod(ctx, "")
	f.count(ctx, 150)
	t.Log("after deleting the StatefulSet and its claim and recreating them: all 150 documents read back (claim re-attached)")
	if _, err := os.Stat(filepath.Join(share, ns, "state-ferret-0")); err != nil {
		t.Errorf("the claim's directory on the share: %v", err)
	}
}

// ferretSTS is a one-container FerretDB StatefulSet whose /state is a
// carve claim from the claim template "state" (claims state-<name>-N).
type ferretSTS struct {
	t    *testing.T
	c    *cluster.Cluster
	ns   string
	name string
	// dataSource, when set, is the claim template's: each new claim is
	// restored from it (a VolumeSnapshot) instead of starting empty.
	dataSource *v1.TypedLocalObjectReference
}

func (f *ferretSTS) poll(ctx context.Context, what string, cond func(context.Context) (bool, error)) {
	f.t.Helper()
	if err := wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, cond); err != nil {
		f.t.Fatalf("waiting for %s: %v", what, err)
	}
}

func (f *ferretSTS) labels() map[string]string { return map[string]string{"app": f.name} }

// template is the FerretDB pod of the StatefulSet, /state from the claim
// template "state".
func (f *ferretSTS) template() v1.PodTemplateSpec {
	return v1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: f.labels()},
		Spec: v1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To(int64(10)),
			SecurityContext: &v1.PodSecurityContext{
				RunAsUser: ptr.To(int64(65532)), RunAsGroup: ptr.To(int64(65532)), FSGroup: ptr.To(int64(65532)),
				FSGroupChangePolicy: ptr.To(v1.FSGroupChangeOnRootMismatch),
			},
			Containers: []v1.Container{{
				Name:            "ferretdb",
				Image:           "ghcr.io/carve-csi/ferretdb:v1.24.0",
				ImagePullPolicy: v1.PullIfNotPresent,
				Args:            []string{"--listen-addr=:27017", "--state-dir=/state/db", "--log-level=warn"},
				Ports:           []v1.ContainerPort{{Name: "mongo", ContainerPort: 27017}},
				ReadinessProbe: &v1.Probe{
					ProbeHandler:  v1.ProbeHandler{TCPSocket: &v1.TCPSocketAction{Port: intstr.FromInt32(27017)}},
					PeriodSeconds: 1,
				},
				VolumeMounts: []v1.VolumeMount{{Name: "state", MountPath: "/state"}},
			}},
		},
	}
}

func (f *ferretSTS) create(ctx context.Context, replicas int32) error {
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: f.name, Namespace: f.ns},
		Spec: appsv1.StatefulSetSpec{
			Replicas:    ptr.To(replicas),
			ServiceName: f.name,
			Selector:    &metav1.LabelSelector{MatchLabels: f.labels()},
			Template:    f.template(),
			VolumeClaimTemplates: []v1.PersistentVolumeClaim{{
				ObjectMeta: metav1.ObjectMeta{Name: "state"},
				Spec: v1.PersistentVolumeClaimSpec{
					AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
					StorageClassName: ptr.To("carve-nfs-csi"),
					Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("64Mi")}},
					DataSource:       f.dataSource,
				},
			}},
		},
	}
	_, err := f.c.Client.AppsV1().StatefulSets(f.ns).Create(ctx, sts, metav1.CreateOptions{})
	return err
}

func (f *ferretSTS) scale(ctx context.Context, n int32) {
	f.t.Helper()
	s, err := f.c.Client.AppsV1().StatefulSets(f.ns).GetScale(ctx, f.name, metav1.GetOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	s.Spec.Replicas = n
	if _, err := f.c.Client.AppsV1().StatefulSets(f.ns).UpdateScale(ctx, f.name, s, metav1.UpdateOptions{}); err != nil {
		f.t.Fatal(err)
	}
	if n == 0 {
		f.poll(ctx, "scale to 0", func(ctx context.Context) (bool, error) {
			pods, err := f.c.Client.CoreV1().Pods(f.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + f.name})
			return err == nil && len(pods.Items) == 0, nil
		})
	}
}

func ready(p *v1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.PodIP == "" {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == v1.PodReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

// pod waits for replica 0 (<name>-0) Ready and returns it.
func (f *ferretSTS) pod(ctx context.Context) *v1.Pod {
	f.t.Helper()
	var pod *v1.Pod
	f.poll(ctx, f.name+"-0 Ready", func(ctx context.Context) (bool, error) {
		p, err := f.c.Client.CoreV1().Pods(f.ns).Get(ctx, f.name+"-0", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		pod = p
		return ready(p), nil
	})
	return pod
}

func (f *ferretSTS) waitNewPod(ctx context.Context, oldUID any) {
	f.t.Helper()
	f.poll(ctx, "a new "+f.name+"-0 Ready", func(ctx context.Context) (bool, error) {
		p, err := f.c.Client.CoreV1().Pods(f.ns).Get(ctx, f.name+"-0", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		if oldUID != "" && fmt.Sprint(p.UID) == fmt.Sprint(oldUID) {
			return false, nil
		}
		return ready(p), nil
	})
}

func (f *ferretSTS) client(ctx context.Context) *mongo.Client {
	f.t.Helper()
	p := f.pod(ctx)
	uri := fmt.Sprintf("mongodb://%s:27017/?directConnection=true&serverSelectionTimeoutMS=20000", p.Status.PodIP)
	cl, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		f.t.Fatalf("connect %s: %v", uri, err)
	}
	return cl
}

// closeClient closes a client while its pod still runs: Disconnect ends the
// client's sessions on the server, and for a pod that is gone it would wait
// the whole serverSelectionTimeout (20 s per client, minutes per test).
func closeClient(cl *mongo.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = cl.Disconnect(ctx)
}

func (f *ferretSTS) insert(ctx context.Context, from, count int) {
	f.t.Helper()
	cl := f.client(ctx)
	defer closeClient(cl)
	coll := cl.Database("shop").Collection("orders")
	docs := make([]any, 0, count)
	for i := from; i < from+count; i++ {
		docs = append(docs, bson.D{{Key: "_id", Value: i}, {Key: "item", Value: fmt.Sprintf("item-%d", i)}})
	}
	if _, err := coll.InsertMany(ctx, docs); err != nil {
		f.t.Fatalf("insert: %v", err)
	}
}

func (f *ferretSTS) count(ctx context.Context, want int64) {
	f.t.Helper()
	cl := f.client(ctx)
	defer closeClient(cl)
	coll := cl.Database("shop").Collection("orders")
	var got int64
	var err error
	for i := 0; i < 20; i++ {
		if got, err = coll.CountDocuments(ctx, bson.D{}); err == nil {
			break
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		f.t.Fatalf("count: %v", err)
	}
	if got != want {
		f.t.Fatalf("%d documents read back, want %d", got, want)
	}
	cur, err := coll.Find(ctx, bson.D{})
	if err != nil {
		f.t.Fatal(err)
	}
	var all []bson.M
	if err := cur.All(ctx, &all); err != nil {
		f.t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, d := range all {
		seen[fmt.Sprint(d["item"])] = true
	}
	for i := int64(0); i < want; i++ {
		if !seen[fmt.Sprintf("item-%d", i)] {
			f.t.Fatalf("document item-%d missing", i)
		}
	}
}
