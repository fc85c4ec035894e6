//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/carve-csi/carve/internal/benchfig"
	"github.com/carve-csi/carve/test/cluster"
	"github.com/carve-csi/carve/test/scenario"
)

// BenchmarkCacheMemory measures what the cluster's size costs the classic
// provisioner (the CSI controller builds the same caches, kubeview): its RSS
// once its caches have synced in an almost empty cluster and at each size of
// BENCH_CACHE_PVS (comma-separated, ascending; default 10000,20000) bound
// carve PVs and their claims, the growth per 1000 pairs, and the time from
// start to ready (a restart). The
// PVs and claims are copies of one that carve provisioned, bound by the
// controller-manager, so they carry the fields and managedFields a real
// cluster's do. BENCH_BASELINE_BIN names other builds of cmd/provisioner
// (older commits, comma-separated) measured the same way in the same
// cluster, side by side. At the first size each binary is restarted
// BENCH_RESTARTS (default 5) times with leader election on, as deployed,
// after SIGKILL and SIGTERM in turn, in the same pod (same POD_NAME and
// POD_UID: a container restart) or in a new one, and one new claim is timed
// after each restart. It reports figures; it never fails on them.
func BenchmarkCacheMemory(b *testing.B) {
	sizes := []int{10000, 20000}
	if s := os.Getenv("BENCH_CACHE_PVS"); s != "" {
		sizes = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 || (len(sizes) > 0 && n <= sizes[len(sizes)-1]) {
				b.Fatalf("BENCH_CACHE_PVS=%q: want ascending positive counts", s)
			}
			sizes = append(sizes, n)
		}
	}
	share := declaredShare(b)
	c := cluster.StartForTest(b, cluster.Options{
		Nodes:                 -1,
		ControllerManagerArgs: []string{"--kube-api-qps=500", "--kube-api-burst=500"},
	})
	ctx := b.Context()
	repo, _ := filepath.Abs("../..")
	bins := []struct{ name, path string }{{"this build", filepath.Join(c.Dir, "carve-provisioner")}}
	build := exec.CommandContext(ctx, "go", "build", "-o", bins[0].path, "./cmd/provisioner")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build cmd/provisioner: %v\n%s", err, out)
	}
	for _, s := range strings.Split(os.Getenv("BENCH_BASELINE_BIN"), ",") {
		if s != "" {
			bins = append(bins, struct{ name, path string }{"baseline " + filepath.Base(s), s})
		}
	}
	for _, f := range []string{"namespace.yaml", "rbac.yaml"} {
		if err := c.Apply(ctx, filepath.Join(repo, "deploy/provisioner", f)); err != nil {
			b.Fatal(err)
		}
	}
	client := benchClient(b, c, map[string]string{"backend": "nfs", "server": "bench.local", "share": "/export",
		"pathPattern": "${pvc.metadata.namespace}/${pvc.metadata.name}"})
	run := func(bin string, args ...string) (*provisionerRun, error) {
		return startBenchProvisioner(b, c, bin, share, nil, args...)
	}

	// One claim provisioned by carve is the template of the others.
	p, err := run(bins[0].path)
	if err != nil {
		b.Fatal(err)
	}
	pvc, pv, err := provisionTemplate(ctx, client)
	p.stop()
	if err != nil {
		b.Fatal(err)
	}

	type figures struct {
		rss, hwm, live int64
		cpu, ready     time.Duration
	}
	// got[i][k]: binary i at size k; size 0 is the empty cluster.
	got := make([][]figures, len(bins))
	measure := func(k int) error {
		for i, bin := range bins {
			r, err := run(bin.path)
			if err != nil {
				return err
			}
			f := figures{ready: r.ready, rss: r.settledRSS(ctx)}
			f.hwm, f.live, f.cpu = peakRSS(r.p.Pid()), r.liveHeap(), r.cpu()
			r.stop()
			got[i] = append(got[i], f)
		}
		return nil
	}
	if err := measure(0); err != nil {
		b.Fatal(err)
	}
	restarts := 5
	if s := os.Getenv("BENCH_RESTARTS"); s != "" {
		restarts, _ = strconv.Atoi(s)
	}
	var loads, created []string
	restartRuns := make([][]restartRun, len(bins))
	have := 0
	for k, n := range sizes {
		t0 := time.Now()
		if err := copyPairs(ctx, client, pvc, pv, have, n); err != nil {
			b.Fatal(err)
		}
		created = append(created, fmt.Sprintf("%d->%d in %.0fs", have, n, time.Since(t0).Seconds()))
		have = n
		b.Logf("%d PVs and claims created and Bound in %.1fs (load %s)", n, time.Since(t0).Seconds(), benchfig.Load())
		if err := measure(k + 1); err != nil {
			b.Fatal(err)
		}
		loads = append(loads, benchfig.Load())
		if k != 0 {
			continue
		}
		for i, bin := range bins {
			restartRuns[i], err = measureRestarts(ctx, b, client, restarts, fmt.Sprintf("b%d", i), func(podEnv []string) (*provisionerRun, error) {
				// As deployed: a Lease elects the replica that works.
				return startBenchProvisioner(b, c, bin.path, share, podEnv, "--leader-elect=true", "--leader-elect-namespace=carve-system")
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	mib := func(v int64) float64 { return float64(v) / (1 << 20) }
	var out strings.Builder
	fmt.Fprintf(&out, "classic provisioner, caches synced, carve PVs + claims (created: %s):\n", strings.Join(created, ", "))
	fmt.Fprintf(&out, "  %-30s %7s %9s %9s %9s %9s %12s %9s %8s  %s\n", "binary", "PVs", "anon", "peak", "live heap",
		"anon/1k", "heap/1k", "ready", "CPU", "host load")
	for i, bin := range bins {
		for k, f := range got[i] {
			n, load := 0, "-"
			if k > 0 {
				n, load = sizes[k-1], loads[k-1]
			}
			per1k := func(v, v0 int64) string {
				if n == 0 {
					return "-"
				}
				return fmt.Sprintf("%.2fM", mib(v-v0)/float64(n)*1000)
			}
			fmt.Fprintf(&out, "  %-30s %7d %8.0fM %8.0fM %8.0fM %9s %12s %8.2fs %7.2fs  %s\n", bin.name, n,
				mib(f.rss), mib(f.hwm), mib(f.live), per1k(f.rss, got[i][0].rss), per1k(f.live, got[i][0].live),
				f.ready.Seconds(), f.cpu.Seconds(), load)
			if i == 0 && k > 0 {
				b.ReportMetric(mib(f.rss), fmt.Sprintf("MiB-anon-RSS-%dk", n/1000))
				b.ReportMetric(mib(f.live-got[i][0].live)/float64(n)*1000, fmt.Sprintf("MiB-heap-per-1k-at-%dk", n/1000))
			}
		}
	}
	fmt.Fprintf(&out, "restart with %d PVs + claims, leader election on, right after the previous process ended as listed, "+
		"in the same pod (same POD_NAME and POD_UID: a container restart) or a new one; "+
		"seconds from start to ready and to holding the Lease, and from creating one new claim (once ready) to its PV and to Bound:\n", sizes[0])
	for i, bin := range bins {
		for j, r := range restartRuns[i] {
			fmt.Fprintf(&out, "  %-30s run %d after %-19s ready %5.2fs  leading %6.2fs  first PV %6.2fs  first Bound %6.2fs  (load %s)\n",
				bin.name, j+1, r.after, r.ready.Seconds(), r.leading.Seconds(), r.pv.Seconds(), r.bound.Seconds(), r.load)
		}
	}
	b.Log(out.String())
	writeBenchReport(b, "cache-memory.txt", out.String())
}

// provisionerRun is cmd/provisioner started as the benchmark's process.
type provisionerRun struct {
	p       *cluster.Process
	started time.Time
	ready   time.Duration // from start to /readyz answering 200
}

// startBenchProvisioner starts bin with the benchmark's flags and args and
// waits until it is ready; env is added to its environment (a pod's
// POD_NAME and POD_UID).
func startBenchProvisioner(b *testing.B, c *cluster.Cluster, bin, share string, env []string, args ...string) (*provisionerRun, error) {
	ctx := b.Context()
	kubeconfig, err := c.ServiceAccountKubeconfig(ctx, "carve-system", "carve-provisioner")
	if err != nil {
		return nil, err
	}
	health := freeAddr(b)
	t0 := time.Now()
	p, err := c.StartProcess("carve-provisioner-"+strconv.FormatInt(t0.UnixNano(), 36), append([]string{bin,
		"--kubeconfig=" + kubeconfig, "--mount-map=bench.local:/export=" + share,
		"--leader-elect=false", "--health-address=" + health, "--metrics-address=127.0.0.1:0", "--v=1",
	}, args...), append(append([]string{"POD_NAMESPACE=carve-system", "GODEBUG=gctrace=1"}, env...), strings.Fields(os.Getenv("BENCH_PROVISIONER_ENV"))...))
	if err != nil {
		return nil, err
	}
	err = wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 5*time.Minute, true, func(context.Context) (bool, error) {
		return scenario.Ready(p, health)
	})
	if err != nil {
		p.Stop()
		return nil, err
	}
	return &provisionerRun{p: p, started: t0, ready: time.Since(t0)}, nil
}

func (r *provisionerRun) stop() { r.p.Stop() }

// kill ends the process with SIGKILL, as a node failure or an OOM kill
// would: no deferred clean-up runs.
func (r *provisionerRun) kill() {
	_ = syscall.Kill(-r.p.Pid(), syscall.SIGKILL)
	r.p.Stop()
}

// restartRun is one restart: how the previous process ended, the new one's
// time to ready, and a new claim's time to its PV and to Bound.
type restartRun struct {
	after, load               string
	ready, leading, pv, bound time.Duration
}

// leading is the time from start to the Lease being acquired, from
// client-go's log line (klog's header: Lmmdd hh:mm:ss.uuuuuu); 0 if not found.
func (r *provisionerRun) leading() time.Duration {
	data, err := os.ReadFile(r.p.LogPath)
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if !strings.Contains(l, "successfully acquired lease") || len(l) < 21 {
			continue
		}
		t, err := time.ParseInLocation("0102 15:04:05.000000", l[1:21], time.Local)
		if err != nil {
			return 0
		}
		s := r.started
		t = time.Date(s.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.Local)
		return t.Sub(s)
	}
	return 0
}

// measureRestarts starts a provisioner runs times, each right after the
// previous one ended, and times one new claim on each: what a user waits
// for after a crash or a rolling update. The previous process ends with
// SIGKILL and SIGTERM in turn (the first run starts with no Lease); after a
// SIGKILL the next run is alternately the same pod (a container restart:
// same POD_NAME and POD_UID) and a new pod (a node failure), after a SIGTERM
// alternately a new pod (a rolling update) and the same pod.
func measureRestarts(ctx context.Context, b *testing.B, client kubernetes.Interface, runs int, tag string,
	start func(podEnv []string) (*provisionerRun, error)) ([]restartRun, error) {
	var out []restartRun
	// Each binary starts from no Lease, whatever the one before left.
	lease := strings.ReplaceAll("carve.csi.dev/provisioner", "/", "-")
	if err := client.CoordinationV1().Leases("carve-system").Delete(ctx, lease, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return nil, err
	}
	pod := 0
	podEnv := func() []string {
		name := fmt.Sprintf("carve-provisioner-%s-%d", tag, pod)
		return []string{"POD_NAME=" + name, "POD_UID=" + string(uuid.NewUUID())}
	}
	env := podEnv()
	after := "no Lease"
	kills, terms := 0, 0
	for i := range runs {
		r, err := start(env)
		if err != nil {
			return out, err
		}
		rr := restartRun{after: after, ready: r.ready}
		name := fmt.Sprintf("restart-%s-%d", tag, i)
		t0 := time.Now()
		pvc := &v1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "bench"},
			Spec: v1.PersistentVolumeClaimSpec{
				AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
				StorageClassName: ptr.To("bench"),
				Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}},
			},
		}
		created, err := client.CoreV1().PersistentVolumeClaims("bench").Create(ctx, pvc, metav1.CreateOptions{})
		if err != nil {
			r.stop()
			return out, err
		}
		err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
			if rr.pv == 0 {
				if _, err := client.CoreV1().PersistentVolumes().Get(ctx, "pvc-"+string(created.UID), metav1.GetOptions{}); err == nil {
					rr.pv = time.Since(t0)
				}
			}
			got, err := client.CoreV1().PersistentVolumeClaims("bench").Get(ctx, name, metav1.GetOptions{})
			if err == nil && got.Status.Phase == v1.ClaimBound {
				rr.bound = time.Since(t0)
				return true, nil
			}
			return false, nil
		})
		if err != nil {
			r.stop()
			return out, fmt.Errorf("restart %d: claim %s not Bound after %s (log %s): %w", i+1, name, time.Since(t0), r.p.LogPath, err)
		}
		rr.leading, rr.load = r.leading(), benchfig.Load()
		b.Logf("restart %d after %s: ready %.2fs, leading %.2fs, PV %.2fs, Bound %.2fs (log %s)", i+1, after,
			rr.ready.Seconds(), rr.leading.Seconds(), rr.pv.Seconds(), rr.bound.Seconds(), r.p.LogPath)
		out = append(out, rr)
		samePod := false
		if i%2 == 0 {
			r.kill()
			samePod = kills%2 == 0
			kills++
			after = "SIGKILL"
		} else {
			r.stop()
			samePod = terms%2 == 1
			terms++
			after = "SIGTERM"
		}
		if samePod {
			after += ", same pod"
		} else {
			pod++
			env = podEnv()
			after += ", new pod"
		}
	}
	return out, nil
}

// cpu is the CPU time the process has used (utime + stime).
func (r *provisionerRun) cpu() time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", r.p.Pid()))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// liveHeap is the heap the last garbage collection found live (gctrace's
// "start->end->live MB"): what the caches hold, without the garbage the Go
// runtime has not yet returned to the system, which RSS still counts.
func (r *provisionerRun) liveHeap() int64 {
	data, err := os.ReadFile(r.p.LogPath)
	if err != nil {
		return 0
	}
	var live int64
	for _, l := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(l, "gc ") {
			continue
		}
		for _, f := range strings.Split(l, ",") {
			f = strings.TrimSpace(f)
			if parts := strings.Split(strings.TrimSuffix(f, " MB"), "->"); len(parts) == 3 && strings.HasSuffix(f, " MB") {
				if mb, err := strconv.ParseInt(parts[2], 10, 64); err == nil {
					live = mb << 20
				}
			}
		}
	}
	return live
}

// settledRSS is the resident set 10 s after readiness, when the start-up's
// garbage has been collected (the Go runtime returns freed memory lazily, so
// it is the lowest of several samples).
func (r *provisionerRun) settledRSS(ctx context.Context) int64 {
	var low int64
	for range 10 {
		select {
		case <-ctx.Done():
			return low
		case <-time.After(time.Second):
		}
		if v := currentRSS(r.p.Pid()); v > 0 && (low == 0 || v < low) {
			low = v
		}
	}
	return low
}

// currentRSS reads RssAnon in bytes: the memory a container's limit is about
// (the binary's own pages, RssFile, are page cache the kernel can drop).
func currentRSS(pid int) int64 { return procStatusBytes(pid, "RssAnon:") }

const templateClaim = "template-claim"

// provisionTemplate has carve provision one claim and returns it and its PV.
func provisionTemplate(ctx context.Context, client kubernetes.Interface) (*v1.PersistentVolumeClaim, *v1.PersistentVolume, error) {
	pvc := &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: templateClaim, Namespace: "bench", Labels: map[string]string{"app": "bench"}},
		Spec: v1.PersistentVolumeClaimSpec{
			AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			StorageClassName: ptr.To("bench"),
			Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	if _, err := client.CoreV1().PersistentVolumeClaims("bench").Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		return nil, nil, err
	}
	var pv *v1.PersistentVolume
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err := client.CoreV1().PersistentVolumeClaims("bench").Get(ctx, templateClaim, metav1.GetOptions{})
		if err != nil || got.Status.Phase != v1.ClaimBound {
			return false, nil
		}
		pvc = got
		pv, err = client.CoreV1().PersistentVolumes().Get(ctx, got.Spec.VolumeName, metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("template claim never Bound: %w", err)
	}
	return pvc, pv, nil
}

// copyPairs creates copies from to n-1 of the template claim and PV, each claim
// pre-bound to its PV (the claim's name replaces the template's everywhere
// in the PV, so the paths and indexes differ), and waits until the
// controller-manager has bound them all.
func copyPairs(ctx context.Context, client kubernetes.Interface, tmplPVC *v1.PersistentVolumeClaim, tmplPV *v1.PersistentVolume, from, n int) error {
	pvJSON, err := json.Marshal(tmplPV)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	next := make(chan int)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				claim := fmt.Sprintf("claim-%06d", i)
				pvName := fmt.Sprintf("pvc-bench-%06d", i)
				pvc := &v1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{
					Name: claim, Namespace: "bench", Labels: tmplPVC.Labels, Annotations: tmplPVC.Annotations,
				}, Spec: *tmplPVC.Spec.DeepCopy()}
				pvc.Spec.VolumeName = pvName
				created, err := client.CoreV1().PersistentVolumeClaims("bench").Create(ctx, pvc, metav1.CreateOptions{})
				if err != nil {
					errs <- err
					continue
				}
				var pv v1.PersistentVolume
				if err := json.Unmarshal([]byte(strings.NewReplacer(templateClaim, claim, tmplPV.Name, pvName).Replace(string(pvJSON))), &pv); err != nil {
					errs <- err
					continue
				}
				pv.ObjectMeta = metav1.ObjectMeta{Name: pvName, Labels: pv.Labels, Annotations: pv.Annotations, Finalizers: pv.Finalizers}
				pv.Spec.ClaimRef = &v1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1",
					Namespace: "bench", Name: claim, UID: created.UID}
				pv.Status = v1.PersistentVolumeStatus{}
				if _, err := client.CoreV1().PersistentVolumes().Create(ctx, &pv, metav1.CreateOptions{}); err != nil {
					errs <- err
				}
			}
		}()
	}
	go func() {
		defer close(next)
		for i := from; i < n; i++ {
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	// Binding tens of thousands of claims takes the controller-manager
	// longer than any fixed timeout that suits 10k: give up only when no
	// claim got Bound for 5 minutes. Each poll lists every claim, so not
	// too often.
	bound, progress := 0, time.Now()
	return wait.PollUntilContextCancel(ctx, 5*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := client.CoreV1().PersistentVolumeClaims("bench").List(ctx, metav1.ListOptions{ResourceVersion: "0"})
		if err != nil {
			return false, nil
		}
		now := 0
		for _, c := range list.Items {
			if c.Status.Phase == v1.ClaimBound && strings.HasPrefix(c.Name, "claim-") {
				now++
			}
		}
		if now > bound {
			bound, progress = now, time.Now()
		}
		if time.Since(progress) > 5*time.Minute {
			return false, fmt.Errorf("%d of %d claims Bound, none more for 5 minutes", bound, n)
		}
		return bound >= n, nil
	})
}

// writeBenchReport keeps a benchmark's figures in bin/bench for the notes.
func writeBenchReport(b *testing.B, name, text string) {
	benchfig.Write(b, name, time.Now().UTC().Format(time.RFC3339)+"\n"+text)
}
