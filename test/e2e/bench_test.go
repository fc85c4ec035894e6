//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
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
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/carve-csi/carve/internal/benchfig"
	"github.com/carve-csi/carve/pkg/kubeclient"
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
	share := declaredShare(b)
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

// BenchmarkBacklog measures the classic provisioner against the limit the
// API server sets. For each run, BENCH_BACKLOG_CLAIMS (default 1000) claims
// are created in a namespace of their own while no provisioner runs, and
// the controller-manager marks them for carve; then one of these works
// through the backlog:
//   - "API limit": a bare client with carve's client settings (QPS 200,
//     burst 400, protobuf, carve's service account) and 32 workers (carve's
//     --threadiness) creates one PV per claim, copies of a PV carve made,
//     pre-bound to the claim as carve's are. Nothing but the PV writes: the
//     rate the API server allows a provisioner with these settings.
//   - carve with its default flags, carve with the lib's defaults
//     (--threadiness=4, client-go's 5 QPS and burst 10), and each build in
//     BENCH_BASELINE_BIN (comma-separated) with default flags.
//
// The API limit runs first and after each round of carve and the
// baselines (BENCH_BACKLOG_REPEAT rounds): the cluster grows by one backlog
// per run and the host's load moves, so each row's ratio is to the mean of
// the API-limit runs just before and after it. A PV counts when its watch
// event arrives. carve's rate is counted from its readiness (caches synced,
// when the lib's workers start) to the last PV. Figures are
// printed and written to bin/bench/backlog.txt; it never fails on them.
func BenchmarkBacklog(b *testing.B) {
	n := 1000
	if s := os.Getenv("BENCH_BACKLOG_CLAIMS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n <= 0 {
			b.Fatalf("BENCH_BACKLOG_CLAIMS=%q: want a positive number", s)
		}
	}
	share := declaredShare(b)
	c := cluster.StartForTest(b, cluster.Options{
		Nodes:                 -1,
		ControllerManagerArgs: []string{"--kube-api-qps=500", "--kube-api-burst=500"},
	})
	ctx := b.Context()
	repo, _ := filepath.Abs("../..")
	bin := filepath.Join(c.Dir, "carve-provisioner")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/provisioner")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build cmd/provisioner: %v\n%s", err, out)
	}
	for _, f := range []string{"namespace.yaml", "rbac.yaml"} {
		if err := c.Apply(ctx, filepath.Join(repo, "deploy/provisioner", f)); err != nil {
			b.Fatal(err)
		}
	}
	client := benchClient(b, c, map[string]string{"backend": "nfs", "server": "bench.local", "share": "/export"})
	p, err := startBenchProvisioner(b, c, bin, share, nil)
	if err != nil {
		b.Fatal(err)
	}
	_, tmplPV, err := provisionTemplate(ctx, client)
	p.stop()
	if err != nil {
		b.Fatal(err)
	}
	kubeconfig, err := c.ServiceAccountKubeconfig(ctx, "carve-system", "carve-provisioner")
	if err != nil {
		b.Fatal(err)
	}

	type run struct {
		name string
		bin  string // empty: the bare client
		args []string
	}
	// carve and the baselines in turn, BENCH_BACKLOG_REPEAT (default 1)
	// times, so that a change of the host's load hits them alike.
	repeat := 1
	if s := os.Getenv("BENCH_BACKLOG_REPEAT"); s != "" {
		repeat, _ = strconv.Atoi(s)
	}
	bare := run{name: "API limit (bare client)"}
	runs := []run{bare}
	for range repeat {
		runs = append(runs, run{name: "carve, default flags", bin: bin})
		for _, s := range strings.Split(os.Getenv("BENCH_BASELINE_BIN"), ",") {
			if s != "" {
				runs = append(runs, run{name: "baseline " + filepath.Base(s), bin: s})
			}
		}
		runs = append(runs, bare)
	}
	runs = append(runs, run{name: "carve, lib defaults", bin: bin, args: []string{"--threadiness=4", "--kube-api-qps=5", "--kube-api-burst=10"}})
	type result struct {
		ready, first, last time.Duration // from the start
		cpu                time.Duration
		load               string
	}
	results := make([]result, len(runs))
	for j, r := range runs {
		ns := fmt.Sprintf("backlog-%d", j)
		if _, err := client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		if err := createClaims(ctx, client, ns, "bench", n); err != nil {
			b.Fatal(err)
		}
		claims, err := waitMarked(ctx, client, ns, n)
		if err != nil {
			b.Fatal(err)
		}
		// The controller-manager binds the last run's claims to their PVs
		// (two writes each) after that run ends: without this wait that
		// work falls into this run's measurement.
		if err := waitBoundExcept(ctx, client, ns); err != nil {
			b.Fatal(err)
		}
		arrivals, err := watchPVs(ctx, client, ns, n)
		if err != nil {
			b.Fatal(err)
		}
		var res result
		t0 := time.Now()
		var prov *provisionerRun
		if r.bin == "" {
			if err := bareCreatePVs(ctx, kubeconfig, tmplPV, claims); err != nil {
				b.Fatal(err)
			}
		} else {
			prov, err = startBenchProvisioner(b, c, r.bin, share, nil, r.args...)
			if err != nil {
				b.Fatal(err)
			}
			res.ready = prov.ready
		}
		var times []time.Time
		select {
		case times = <-arrivals:
		case <-time.After(15 * time.Minute):
			b.Fatalf("%s: fewer than %d PVs after 15 minutes", r.name, n)
		}
		res.first, res.last, res.load = times[0].Sub(t0), times[len(times)-1].Sub(t0), benchfig.Load()
		if prov != nil {
			res.cpu = prov.cpu()
			prov.stop()
		}
		results[j] = res
		b.Logf("%s: ready %.2fs, first PV %.2fs, last PV %.2fs (load %s)", r.name, res.ready.Seconds(), res.first.Seconds(), res.last.Seconds(), res.load)
	}

	rate := func(r result) float64 { return float64(n) / (r.last - r.ready).Seconds() }
	// limit is the mean rate of the API-limit runs just before and after run j.
	limit := func(j int) float64 {
		var sum float64
		var k int
		for i := j - 1; i >= 0; i-- {
			if runs[i].bin == "" {
				sum, k = sum+rate(results[i]), k+1
				break
			}
		}
		for i := j + 1; i < len(runs); i++ {
			if runs[i].bin == "" {
				sum, k = sum+rate(results[i]), k+1
				break
			}
		}
		return sum / float64(k)
	}
	var out strings.Builder
	fmt.Fprintf(&out, "backlog of %d claims per run, run in this order, each in its own namespace; seconds from the start "+
		"(process start, or the bare client's first request) to ready, first and last PV; rate from ready to the last PV; "+
		"ratio to the mean of the API-limit runs before and after:\n", n)
	fmt.Fprintf(&out, "  %-36s %7s %9s %9s %10s %7s %8s  %s\n", "run", "ready", "first PV", "last PV", "PVs/s", "ratio", "CPU", "host load")
	var ratios []float64
	for j, r := range runs {
		res := results[j]
		ratio := "      -"
		if r.bin != "" {
			ratio = fmt.Sprintf("%6.0f%%", 100*rate(res)/limit(j))
			if r.name == runs[1].name {
				ratios = append(ratios, rate(res)/limit(j))
			}
		}
		fmt.Fprintf(&out, "  %-36s %6.2fs %8.2fs %8.2fs %10.1f %s %7.2fs  %s\n", r.name, res.ready.Seconds(), res.first.Seconds(),
			res.last.Seconds(), rate(res), ratio, res.cpu.Seconds(), res.load)
	}
	b.ReportMetric(limit(1), "PVs/s-API-limit")
	b.ReportMetric(rate(results[1]), "PVs/s-carve")
	b.ReportMetric(100*ratios[0], "%-of-limit")
	b.Log(out.String())
	writeBenchReport(b, "backlog.txt", out.String())
}

// waitBoundExcept waits until every claim outside namespace ns is Bound.
func waitBoundExcept(ctx context.Context, client kubernetes.Interface, ns string) error {
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 10*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := client.CoreV1().PersistentVolumeClaims("").List(ctx, metav1.ListOptions{ResourceVersion: "0"})
		if err != nil {
			return false, nil
		}
		for _, c := range list.Items {
			if c.Namespace != ns && c.Status.Phase != v1.ClaimBound {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("the earlier runs' claims not all Bound: %w", err)
	}
	return nil
}

// waitMarked waits until the controller-manager has marked all n claims of
// ns for a provisioner (the annotation the lib waits for) and returns them.
func waitMarked(ctx context.Context, client kubernetes.Interface, ns string, n int) ([]v1.PersistentVolumeClaim, error) {
	var claims []v1.PersistentVolumeClaim
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 10*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := client.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		marked := 0
		for _, c := range list.Items {
			if c.Annotations["volume.kubernetes.io/storage-provisioner"] != "" {
				marked++
			}
		}
		claims = list.Items
		return marked >= n, nil
	})
	if err != nil {
		return nil, fmt.Errorf("claims of %s not marked for the provisioner: %w", ns, err)
	}
	return claims, nil
}

// watchPVs watches PVs from now on and sends the arrival times of the first
// n whose claim is in ns. The watch is re-established when the API server or
// the client closes it.
func watchPVs(ctx context.Context, client kubernetes.Interface, ns string, n int) (<-chan []time.Time, error) {
	list, err := client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		return nil, err
	}
	w, err := watchtools.NewRetryWatcherWithContext(ctx, list.ResourceVersion, &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return client.CoreV1().PersistentVolumes().Watch(ctx, o)
		},
	})
	if err != nil {
		return nil, err
	}
	out := make(chan []time.Time, 1)
	go func() {
		defer w.Stop()
		var times []time.Time
		for ev := range w.ResultChan() {
			pv, ok := ev.Object.(*v1.PersistentVolume)
			if ev.Type != watch.Added || !ok || pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.Namespace != ns {
				continue
			}
			if times = append(times, time.Now()); len(times) == n {
				out <- times
				return
			}
		}
	}()
	return out, nil
}

// bareCreatePVs creates one PV per claim as carve would (a copy of tmpl,
// named and pre-bound as the lib does), with carve's client settings and
// as many workers as carve's default --threadiness.
func bareCreatePVs(ctx context.Context, kubeconfig string, tmpl *v1.PersistentVolume, claims []v1.PersistentVolumeClaim) error {
	client, err := kubeclient.New(kubeconfig, "bench-bare-client", 200, 400)
	if err != nil {
		return err
	}
	next := make(chan *v1.PersistentVolumeClaim)
	errs := make(chan error, len(claims))
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range next {
				pv := tmpl.DeepCopy()
				pv.ObjectMeta = metav1.ObjectMeta{Name: "pvc-" + string(c.UID), Labels: tmpl.Labels,
					Annotations: tmpl.Annotations, Finalizers: tmpl.Finalizers}
				pv.Spec.ClaimRef = &v1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1",
					Namespace: c.Namespace, Name: c.Name, UID: c.UID, ResourceVersion: c.ResourceVersion}
				if pv.Spec.NFS != nil {
					pv.Spec.NFS.Path = filepath.Join(filepath.Dir(pv.Spec.NFS.Path), c.Namespace+"-"+c.Name+"-"+pv.Name)
				}
				pv.Status = v1.PersistentVolumeStatus{}
				if _, err := client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := range claims {
		next <- &claims[i]
	}
	close(next)
	wg.Wait()
	close(errs)
	return <-errs
}
