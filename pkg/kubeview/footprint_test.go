package kubeview

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/carve-csi/carve/pkg/volid"
)

// benchPair is a bound carve PV and claim shaped like the ones the
// controller-manager leaves (its annotations and finalizers).
func benchPair(i int) (*v1.PersistentVolume, *v1.PersistentVolumeClaim) {
	claim := fmt.Sprintf("claim-%06d", i)
	pvName := fmt.Sprintf("pvc-bench-%06d", i)
	uid := types.UID(fmt.Sprintf("0b7c4a3e-1d2f-4c5b-9a8e-%012d", i))
	now := metav1.NewTime(time.Unix(1764460000, 0))
	mf := []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate,
		APIVersion: "v1", Time: &now, FieldsType: "FieldsV1", FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:metadata":{"f:annotations":{"f:pv.kubernetes.io/bind-completed":{}}}}`)}}}
	pv := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: pvName, UID: types.UID(fmt.Sprintf("9f1e2d3c-4b5a-4978-8695-%012d", i)), ResourceVersion: fmt.Sprint(100000 + i),
			CreationTimestamp: now, Finalizers: []string{"kubernetes.io/pv-protection"}, ManagedFields: mf,
			Annotations: map[string]string{
				"carve.csi.dev/volume-id":         volid.ID{Backend: "nfs", Servers: []string{"bench.local"}, Share: "/export", Dir: []string{"bench", claim}, OnDelete: "retain"}.String(),
				"pv.beta.kubernetes.io/gid":       "2000",
				"pv.kubernetes.io/provisioned-by": "carve.csi.dev/provisioner",
			}},
		Spec: v1.PersistentVolumeSpec{
			Capacity:                      v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")},
			PersistentVolumeSource:        v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: "bench.local", Path: "/export/bench/" + claim}},
			AccessModes:                   []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			ClaimRef:                      &v1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: "bench", Name: claim, UID: uid, ResourceVersion: fmt.Sprint(90000 + i)},
			PersistentVolumeReclaimPolicy: v1.PersistentVolumeReclaimRetain,
			StorageClassName:              "bench",
			VolumeMode:                    ptr.To(v1.PersistentVolumeFilesystem),
		},
		Status: v1.PersistentVolumeStatus{Phase: v1.VolumeBound, LastPhaseTransitionTime: &now},
	}
	pvc := &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: claim, Namespace: "bench", UID: uid, ResourceVersion: fmt.Sprint(110000 + i),
			CreationTimestamp: now, Finalizers: []string{"kubernetes.io/pvc-protection"}, ManagedFields: mf,
			Labels: map[string]string{"app": "bench"},
			Annotations: map[string]string{
				"pv.kubernetes.io/bind-completed":               "yes",
				"pv.kubernetes.io/bound-by-controller":          "yes",
				"volume.beta.kubernetes.io/storage-provisioner": "carve.csi.dev/provisioner",
				"volume.kubernetes.io/storage-provisioner":      "carve.csi.dev/provisioner",
			}},
		Spec: v1.PersistentVolumeClaimSpec{
			AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			StorageClassName: ptr.To("bench"),
			Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}},
			VolumeName:       pvName,
			VolumeMode:       ptr.To(v1.PersistentVolumeFilesystem),
		},
		Status: v1.PersistentVolumeClaimStatus{Phase: v1.ClaimBound, AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			Capacity: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}},
	}
	return pv, pvc
}

// BenchmarkCacheFootprint reports the heap 1000 PV+claim pairs hold in
// indexers built like the provisioner's (carve's indexes and the lib's UID
// index), each object decoded from protobuf as the client receives it and
// passed through the informers' transform.
func BenchmarkCacheFootprint(b *testing.B) {
	const n = 10000
	for range b.N {
		heap := func() uint64 {
			runtime.GC()
			runtime.GC()
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			return m.HeapAlloc
		}
		pvs := cache.NewSharedIndexInformer(&cache.ListWatch{}, &v1.PersistentVolume{}, 0, cache.Indexers{})
		pvcs := cache.NewSharedIndexInformer(&cache.ListWatch{}, &v1.PersistentVolumeClaim{}, 0,
			cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
		if _, err := NewClusterView(pvs, pvcs); err != nil {
			b.Fatal(err)
		}
		if err := pvcs.AddIndexers(cache.Indexers{"uid": func(obj any) ([]string, error) {
			return []string{string(obj.(metav1.Object).GetUID())}, nil
		}}); err != nil {
			b.Fatal(err)
		}
		wire := make([][2][]byte, n)
		for i := range n {
			pv, pvc := benchPair(i)
			wire[i][0], _ = pv.Marshal()
			wire[i][1], _ = pvc.Marshal()
		}
		h0 := heap()
		for i := range n {
			pv, pvc := &v1.PersistentVolume{}, &v1.PersistentVolumeClaim{}
			if err := pv.Unmarshal(wire[i][0]); err != nil {
				b.Fatal(err)
			}
			if err := pvc.Unmarshal(wire[i][1]); err != nil {
				b.Fatal(err)
			}
			o1, _ := transform(pv)
			o2, _ := transform(pvc)
			_ = pvs.GetIndexer().Add(o1)
			_ = pvcs.GetIndexer().Add(o2)
		}
		h1 := heap()
		// A heap profile of the caches alone, for go tool pprof.
		if f := os.Getenv("FOOTPRINT_PROFILE"); f != "" {
			if out, err := os.Create(f); err == nil {
				_ = pprof.Lookup("heap").WriteTo(out, 0)
				out.Close()
			}
		}
		runtime.KeepAlive(wire)
		runtime.KeepAlive(pvs)
		runtime.KeepAlive(pvcs)
		b.ReportMetric((float64(h1)-float64(h0))/float64(n)*1000/(1<<20), "MiB-per-1k-pairs")
	}
}
