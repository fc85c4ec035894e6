//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/test/cluster"
	"github.com/carve-csi/carve/test/scenario"
)

// localShare stands in for an NFS server: the benchmark measures the
// provisioner and the control plane, not NFS.
type localShare struct{}

func (localShare) Server() string { return "bench.local" }
func (localShare) Export() string { return "/export" }
func (localShare) List(string) ([]string, error) {
	return nil, errors.New("no NFS server in the benchmark")
}

// BenchmarkClaims creates BENCH_CLAIMS (default 1000) claims at once and
// reports how fast they get PVs and become Bound, with the provisioner's
// default flags. It reports figures; it never fails on them.
//
//	make bench
func BenchmarkClaims(b *testing.B) {
	n := 1000
	if s := os.Getenv("BENCH_CLAIMS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	// The controller-manager's defaults (20 QPS) would make binding, not
	// carve, the bottleneck; BENCH_KCM_QPS=20 shows that effect.
	kcmQPS := "500"
	if s := os.Getenv("BENCH_KCM_QPS"); s != "" {
		kcmQPS = s
	}
	share := filepath.Join(b.TempDir(), "export")
	if err := os.Mkdir(share, 0o755); err != nil {
		b.Fatal(err)
	}
	// A plain directory standing in for the export: declare it, as an
	// administrator does (carve refuses an unverified share).
	if err := dirvol.Declare(share); err != nil {
		b.Fatal(err)
	}
	c := cluster.StartForTest(b, cluster.Options{
		Nodes:                 -1,
		ControllerManagerArgs: []string{"--kube-api-qps=" + kcmQPS, "--kube-api-burst=" + kcmQPS},
	})
	repo, _ := filepath.Abs("../..")
	env := &scenario.Env{Cluster: c, NFS: localShare{}, ShareDir: share, Repo: repo, Namespace: "bench", Logf: b.Logf,
		ProvisionerArgs: strings.Fields(os.Getenv("BENCH_PROVISIONER_ARGS"))}
	ctx := b.Context()
	if err := env.StartProvisioner(ctx); err != nil {
		b.Fatal(err)
	}
	client := benchClient(b, c, map[string]string{"backend": "nfs", "server": "bench.local", "share": "/export"})

	b.ResetTimer()
	start := time.Now()
	if err := createClaims(ctx, client, "bench", "bench", n); err != nil {
		b.Fatal(err)
	}
	created := time.Since(start)
	var toPVs, toBound time.Duration
	for toBound == 0 {
		if time.Since(start) > 15*time.Minute {
			b.Fatalf("gave up after 15 minutes")
		}
		pvs, err := client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{ResourceVersion: "0"})
		if err != nil {
			b.Fatal(err)
		}
		if toPVs == 0 && len(pvs.Items) >= n {
			toPVs = time.Since(start)
		}
		bound := 0
		for _, pv := range pvs.Items {
			if pv.Status.Phase == v1.VolumeBound {
				bound++
			}
		}
		if bound >= n {
			toBound = time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.StopTimer()

	rss := peakRSS(env.ProvisionerPid())
	b.ReportMetric(toPVs.Seconds(), "s-to-PVs")
	b.ReportMetric(toBound.Seconds(), "s-to-Bound")
	b.ReportMetric(float64(n)/toPVs.Seconds(), "claims/s-to-PV")
	b.ReportMetric(float64(n)/toBound.Seconds(), "claims/s-to-Bound")
	b.ReportMetric(float64(rss)/(1<<20), "MiB-peak-RSS")
	b.Logf("%d claims created in %.1fs; PVs after %.1fs (%.0f/s); Bound after %.1fs (%.0f/s); provisioner peak RSS %.0f MiB; kcm QPS %s",
		n, created.Seconds(), toPVs.Seconds(), float64(n)/toPVs.Seconds(), toBound.Seconds(), float64(n)/toBound.Seconds(),
		float64(rss)/(1<<20), kcmQPS)
}

// createClaims creates claims claim-0000 ... in namespace ns of class
// class, 64 at a time.
func createClaims(ctx context.Context, client kubernetes.Interface, ns, class string, n int) error {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := make(chan int)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				pvc := &v1.PersistentVolumeClaim{
					ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("claim-%04d", i)},
					Spec: v1.PersistentVolumeClaimSpec{
						StorageClassName: &class,
						AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
						Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}},
					},
				}
				if _, err := client.CoreV1().PersistentVolumeClaims(ns).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	return <-errs
}

// benchClient returns a client that the benchmark's own requests do not
// throttle, after creating the StorageClass "bench" of the classic
// provisioner with params and the namespace "bench".
func benchClient(b *testing.B, c *cluster.Cluster, params map[string]string) kubernetes.Interface {
	ctx := b.Context()
	rc := rest.CopyConfig(c.RESTConfig)
	rc.QPS, rc.Burst = 2000, 4000
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		b.Fatal(err)
	}
	retain := v1.PersistentVolumeReclaimRetain
	sc := &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: "bench"}, Provisioner: "carve.csi.dev/provisioner", ReclaimPolicy: &retain,
		Parameters: params,
	}
	if _, err := client.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	if _, err := client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench"}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	return client
}

// peakRSS reads VmHWM (the resident set's high-water mark) in bytes.
func peakRSS(pid int) int64 { return procStatusBytes(pid, "VmHWM:") }

// procStatusBytes reads a kB field of /proc/PID/status in bytes (0 when
// the process or the field is gone).
func procStatusBytes(pid int, field string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == field {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
