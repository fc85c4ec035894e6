//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/carve-csi/carve/internal/benchfig"
	"github.com/carve-csi/carve/test/cluster"
	"github.com/carve-csi/carve/test/scenario"
)

// benchParams reads BENCH_CLAIMS (default 1000) and BENCH_KCM_QPS (default
// 500): the controller-manager's own client limits (default 20/30) bind
// about 4 claims/s whatever the provisioner does, so a cluster that expects
// bursts of claims must raise them too; BENCH_KCM_QPS=20 shows that effect.
func benchParams() (n int, kcmQPS string) {
	n = 1000
	if s := os.Getenv("BENCH_CLAIMS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	kcmQPS = "500"
	if s := os.Getenv("BENCH_KCM_QPS"); s != "" {
		kcmQPS = s
	}
	return n, kcmQPS
}

// shippedPath is one of the two ways carve is deployed.
type shippedPath struct {
	name   string
	class  string   // the shipped StorageClass
	app    string   // the controller pods' app.kubernetes.io/name
	images []string // the image tarballs (make images) its pods run
	deploy func(ctx context.Context, c *cluster.Cluster, n *cluster.RealNode, repo, share, tag string) error
	// imagesDir, when set, holds another build's images (BENCH_BASELINE_IMAGES).
	imagesDir string
}

var shippedPaths = []shippedPath{
	{
		name: "csi", class: "carve-nfs-csi", app: "carve-csi-controller",
		images: []string{"carve-csi-controller", "carve-csi-node", "csi-provisioner", "carve-registrar", "carve-livenessprobe", "carve-resizer", "csi-snapshotter", "test-pause"},
		deploy: scenario.DeployRealCSI,
	},
	{
		name: "classic", class: "carve-nfs", app: "carve-provisioner",
		images: []string{"carve-provisioner", "test-pause"},
		deploy: scenario.DeployRealProvisioner,
	},
}

type shippedResult struct {
	n                       int
	created, toPVs, toBound time.Duration
	wall                    time.Duration // kubectl apply to all Bound
	// peakRSS is the highest sampled RSS of each controller container
	// (pod/container), peakPod the highest sum over one pod's containers.
	peakRSS map[string]int64
	peakPod int64
	// cpu is the CPU time of all the controller pods' containers.
	cpu          time.Duration
	load0, load1 string // the host's load averages before and after
	// api is what the API server served from the first create to all
	// Bound (nil when its /metrics could not be read).
	api *apiFigures
}

// BenchmarkShippedDeployments creates BENCH_CLAIMS (default 1000) claims at
// once against each shipped deployment on a real node (containerd + kubelet):
// deploy/csi-driver (csi-provisioner + carve's CSI controller) and
// deploy/provisioner (the classic provisioner), applied unchanged except for
// images and the share (scenario.RealOverlay, RealProvisionerOverlay), each
// on a fresh cluster, one after the other. It reports seconds from the first
// create to all PVs and to all claims Bound, claims/s, the controller
// containers' peak RSS (anonymous memory from their cgroups' memory.stat,
// sampled every 250ms) and CPU time, the API server's own count and time of
// the writes a claim cost (its /metrics), and prints the two side by side
// with the host's load. A default in deploy/ that throttles provisioning
// shows up as a figure here; the benchmark fails only on errors (claims never
// bound), never on figures. BENCH_LOGS=DIR saves the controller pods' logs there.
// BENCH_BASELINE_IMAGES=DIR (the bin/images of another build, e.g. main's)
// runs the CSI path with those images first, through this tree's deploy/,
// so a change to carve's CSI controller is measured before and after in
// the same host conditions; DIR must hold csi-provisioner at the tag
// deploy/ names (builds before v6.3.0-carve.1 tagged it v6.3.0). BENCH_ROUNDS=N (default 1) runs the paths in
// turn N times (every other round in reverse) and reports each round's
// ratio and their median (bin/bench/shipped.txt). Each path starts its
// claims on a settled host (benchfig.Settle).
//
//	make bench
func BenchmarkShippedDeployments(b *testing.B) {
	n, kcmQPS := benchParams()
	rounds := 1
	if s := os.Getenv("BENCH_ROUNDS"); s != "" {
		var err error
		if rounds, err = strconv.Atoi(s); err != nil || rounds <= 0 {
			b.Fatalf("BENCH_ROUNDS=%q: want a positive number", s)
		}
	}
	results := map[string][]*shippedResult{}
	paths := shippedPaths
	if dir := os.Getenv("BENCH_BASELINE_IMAGES"); dir != "" {
		base := shippedPaths[0]
		base.name, base.imagesDir = "csi-baseline", dir
		paths = append([]shippedPath{base}, paths...)
	}
	// The paths take turns, round after round: the host's load moves over
	// a run, and a round's paths see about the same. Every other round runs
	// them in reverse, so no path always follows the same one's teardown.
	for i := range rounds {
		order := slices.Clone(paths)
		if i%2 == 1 {
			slices.Reverse(order)
		}
		for _, p := range order {
			name := p.name
			if rounds > 1 {
				name = fmt.Sprintf("%s/round-%d", p.name, i+1)
			}
			b.Run(name, func(b *testing.B) {
				results[p.name] = append(results[p.name], runShipped(b, p, n, kcmQPS))
			})
		}
	}
	csis, classics := results["csi"], results["classic"]
	if len(csis) != rounds || len(classics) != rounds {
		return
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "shipped deployments side by side: %d claims at once, kube-controller-manager --kube-api-qps=%s --kube-api-burst=%s, %d round(s), %s\n",
		n, kcmQPS, kcmQPS, rounds, time.Now().UTC().Format("2006-01-02"))
	var toPV, toBound []float64
	for i := range rounds {
		csi, classic := csis[i], classics[i]
		if rounds > 1 {
			fmt.Fprintf(&sb, "round %d:\n", i+1)
		}
		writeShippedRound(&sb, n, csi, classic, results["csi-baseline"], i)
		toPV = append(toPV, classic.toPVs.Seconds()/csi.toPVs.Seconds())
		toBound = append(toBound, classic.toBound.Seconds()/csi.toBound.Seconds())
	}
	if rounds > 1 {
		fmt.Fprintf(&sb, "csi/classic claims/s over %d rounds: to PV %s (median %.2f), to Bound %s (median %.2f)\n",
			rounds, fmtRatios(toPV), median(toPV), fmtRatios(toBound), median(toBound))
	}
	b.ReportMetric(median(toBound), "csi/classic-to-Bound")
	b.Log("\n" + sb.String())
	writeBenchReport(b, "shipped.txt", sb.String())
}

// writeShippedRound prints one round's CSI and classic figures side by side,
// and the baseline's of that round when there is one.
func writeShippedRound(sb *strings.Builder, n int, csi, classic *shippedResult, baselines []*shippedResult, i int) {
	ratio := func(a, c float64) string {
		if c == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", a/c)
	}
	fmt.Fprintf(sb, "%-28s %10s %10s %12s\n", "", "csi", "classic", "csi/classic")
	row := func(name string, a, c float64) {
		fmt.Fprintf(sb, "%-28s %10.1f %10.1f %12s\n", name, a, c, ratio(a, c))
	}
	row("s to all PVs", csi.toPVs.Seconds(), classic.toPVs.Seconds())
	row("s to all Bound", csi.toBound.Seconds(), classic.toBound.Seconds())
	row("claims/s to PV", float64(n)/csi.toPVs.Seconds(), float64(n)/classic.toPVs.Seconds())
	row("claims/s to Bound", float64(n)/csi.toBound.Seconds(), float64(n)/classic.toBound.Seconds())
	row("peak RSS MiB, busiest pod", mib(csi.peakPod), mib(classic.peakPod))
	row("CPU s, all controller pods", csi.cpu.Seconds(), classic.cpu.Seconds())
	row("s from apply to all Bound", csi.wall.Seconds(), classic.wall.Seconds())
	if csi.api != nil && classic.api != nil {
		// The server's side of each path: how many PV writes a claim cost
		// and how long the server took over the PV creates.
		row("PV writes per claim", csi.api.writesPerClaim("persistentvolumes", n), classic.api.writesPerClaim("persistentvolumes", n))
		row("events per claim", csi.api.perClaim("POST", "events", n), classic.api.perClaim("POST", "events", n))
		row("server ms per PV create", csi.api.meanMS("POST", "persistentvolumes"), classic.api.meanMS("POST", "persistentvolumes"))
	}
	if i < len(baselines) {
		base := baselines[i]
		row("baseline s to all PVs", base.toPVs.Seconds(), classic.toPVs.Seconds())
		row("baseline s to all Bound", base.toBound.Seconds(), classic.toBound.Seconds())
		row("baseline claims/s to PV", float64(n)/base.toPVs.Seconds(), float64(n)/classic.toPVs.Seconds())
		row("baseline claims/s to Bound", float64(n)/base.toBound.Seconds(), float64(n)/classic.toBound.Seconds())
		row("baseline CPU s, controllers", base.cpu.Seconds(), classic.cpu.Seconds())
		fmt.Fprintf(sb, "host load average (1m 5m 15m) csi-baseline %s → %s\n", base.load0, base.load1)
	}
	fmt.Fprintf(sb, "host load average (1m 5m 15m) csi %s → %s, classic %s → %s\n", csi.load0, csi.load1, classic.load0, classic.load1)
}

func fmtRatios(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(s, " ")
}

// median of v (the mean of the middle two for an even count).
func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func mib(v int64) float64 { return float64(v) / (1 << 20) }

func runShipped(b *testing.B, p shippedPath, n int, kcmQPS string) *shippedResult {
	t0 := time.Now()
	tars, tag := realImages(b)
	if p.imagesDir != "" {
		var err error
		if tars, tag, err = scenario.RealImages(p.imagesDir); err != nil {
			b.Fatalf("BENCH_BASELINE_IMAGES: %v", err)
		}
	}
	tars = slices.DeleteFunc(tars, func(t string) bool {
		return !slices.Contains(p.images, strings.TrimSuffix(filepath.Base(t), ".tar"))
	})
	c := cluster.StartForTest(b, cluster.Options{
		Nodes:                 -1,
		ControllerManagerArgs: []string{"--kube-api-qps=" + kcmQPS, "--kube-api-burst=" + kcmQPS},
	})
	ctx := b.Context()
	node, err := c.AddRealNode(ctx, cluster.RealNodeOptions{Images: tars})
	if err != nil {
		if errors.Is(err, cluster.ErrNoRealNode) {
			skipOrFailReal(b, err.Error())
		}
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if b.Failed() {
			c.MarkFailed()
		}
		node.Stop()
	})
	b.Cleanup(func() {
		dumpPods(b, c, "carve-system")
		if b.Failed() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			out, _ := c.Kubectl(ctx, "-n", "carve-system", "logs", "-l", "app.kubernetes.io/name="+p.app, "--all-containers", "--tail=300", "--prefix")
			_ = os.WriteFile(filepath.Join(c.LogDir, "bench-"+p.app+".log"), []byte(out), 0o644)
		}
	})
	repo, err := filepath.Abs("../..")
	if err != nil {
		b.Fatal(err)
	}
	share, err := node.SharedDir("export")
	if err != nil {
		b.Fatal(err)
	}
	tDeploy := time.Now()
	if err := p.deploy(ctx, c, node, repo, share, tag); err != nil {
		b.Fatal(err)
	}
	waitLeader(ctx, b, c)
	b.Logf("%s: deployed from deploy/ in %s (cluster and node included)", p.name, time.Since(t0).Round(time.Second))

	// Start from a quiet host: the deployment's start-up and the previous
	// path's teardown are not this path's figures.
	busy, waited := benchfig.Settle(ctx, 0.3, time.Minute)
	b.Logf("%s: host CPUs %.0f%% busy over the last second, after waiting %s for them to settle",
		p.name, 100*busy, waited.Round(time.Second))

	mem, err := newMemSampler(ctx, c, p.app)
	if err != nil {
		b.Logf("no memory figures: %v", err)
	}
	rc := rest.CopyConfig(c.RESTConfig)
	rc.QPS, rc.Burst = 2000, 4000
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench"}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}

	api0, err := scrapeAPIFigures(ctx, c.Client)
	if err != nil {
		b.Logf("no API server figures: %v", err)
	}
	b.ResetTimer()
	r := &shippedResult{n: n, load0: benchfig.Load()}
	start := time.Now()
	if err := createClaims(ctx, client, "bench", p.class, n); err != nil {
		b.Fatal(err)
	}
	r.created = time.Since(start)
	lastLog := time.Now()
	for r.toBound == 0 {
		if time.Since(start) > 20*time.Minute {
			b.Fatalf("%s: claims not all Bound after 20 minutes", p.name)
		}
		pvs, err := client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{ResourceVersion: "0"})
		if err != nil {
			b.Fatal(err)
		}
		if r.toPVs == 0 && len(pvs.Items) >= n {
			r.toPVs = time.Since(start)
		}
		bound := 0
		for _, pv := range pvs.Items {
			if pv.Status.Phase == v1.VolumeBound {
				bound++
			}
		}
		if bound >= n {
			r.toBound = time.Since(start)
		}
		if time.Since(lastLog) > 15*time.Second {
			b.Logf("%s: after %s: %d PVs, %d Bound", p.name, time.Since(start).Round(time.Second), len(pvs.Items), bound)
			lastLog = time.Now()
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.StopTimer()
	r.wall = time.Since(tDeploy) - waited
	r.load1 = benchfig.Load()
	if mem != nil {
		r.peakRSS, r.peakPod, r.cpu = mem.stop()
	}
	// After the controllers' figures are taken: reading and parsing the
	// server's metrics is the benchmark's own work.
	if api0 != nil {
		if api1, err := scrapeAPIFigures(ctx, c.Client); err != nil {
			b.Logf("no API server figures: %v", err)
		} else {
			r.api = api1.since(api0)
			b.Logf("%s: API server writes per claim (server's mean latency): %s", p.name, r.api.writes(n))
		}
	}

	b.ReportMetric(r.toPVs.Seconds(), "s-to-PVs")
	b.ReportMetric(r.toBound.Seconds(), "s-to-Bound")
	b.ReportMetric(float64(n)/r.toPVs.Seconds(), "claims/s-to-PV")
	b.ReportMetric(float64(n)/r.toBound.Seconds(), "claims/s-to-Bound")
	if mem != nil {
		b.ReportMetric(mib(r.peakPod), "MiB-peak-RSS-pod")
		b.ReportMetric(r.cpu.Seconds(), "CPU-s-controllers")
	}
	var cpu []string
	if mem != nil {
		for _, k := range slices.Sorted(maps.Keys(mem.cpu)) {
			cpu = append(cpu, fmt.Sprintf("%s %.1fs", k, mem.cpu[k].Seconds()))
		}
	}
	if mem != nil {
		var per []string
		for _, k := range slices.Sorted(maps.Keys(mem.cpuOf)) {
			per = append(per, fmt.Sprintf("%s %.1fs", k, mem.cpuOf[k].Seconds()))
		}
		b.Logf("%s: CPU per pod/container: %s", p.name, strings.Join(per, ", "))
	}
	var rss []string
	for _, k := range slices.Sorted(maps.Keys(r.peakRSS)) {
		rss = append(rss, fmt.Sprintf("%s %.0f MiB", k, mib(r.peakRSS[k])))
	}
	b.Logf("%s: %d claims created in %.1fs; PVs after %.1fs (%.1f/s); Bound after %.1fs (%.1f/s); kcm QPS %s; controller CPU %.1fs (%s); peak RSS: %s; host load %s → %s",
		p.name, n, r.created.Seconds(), r.toPVs.Seconds(), float64(n)/r.toPVs.Seconds(), r.toBound.Seconds(),
		float64(n)/r.toBound.Seconds(), kcmQPS, r.cpu.Seconds(), strings.Join(cpu, ", "), strings.Join(rss, ", "), r.load0, r.load1)
	if dir := os.Getenv("BENCH_LOGS"); dir != "" {
		out, err := c.Kubectl(ctx, "-n", "carve-system", "logs", "-l", "app.kubernetes.io/name="+p.app, "--all-containers", "--tail=-1", "--prefix", "--timestamps")
		if err != nil {
			b.Logf("logs: %v", err)
		}
		_ = os.WriteFile(filepath.Join(dir, "bench-"+p.name+".log"), []byte(out), 0o644)
	}
	return r
}

// waitLeader waits (up to 2 minutes) until a Lease in carve-system has a
// holder, so the figures measure provisioning, not the first election.
func waitLeader(ctx context.Context, b *testing.B, c *cluster.Cluster) {
	err := poll(ctx, 2*time.Minute, func(ctx context.Context) (bool, error) {
		leases, err := c.Client.CoordinationV1().Leases("carve-system").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		held := false
		for _, l := range leases.Items {
			if l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "" {
				b.Logf("lease %s held by %s", l.Name, *l.Spec.HolderIdentity)
				held = true
			}
		}
		return held, nil
	})
	if err != nil {
		b.Logf("no leader elected in carve-system: %v", err)
	}
}

// memSampler samples the RSS of the controller pods' containers from their
// cgroups on the real node (cgroup v1 memory.stat total_rss, or v2 anon) and
// their CPU time between its start and stop.
type memSampler struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	peak   map[string]int64 // pod/container → bytes
	pods   map[string][]string
	// targets hold each container's CPU time at the start.
	targets []memTarget
	// cpu is the CPU time used per container name (summed over pods),
	// cpuOf per pod/container: a standby replica's share shows there.
	cpu, cpuOf map[string]time.Duration
}

type memTarget struct {
	pod, container, dir, cpuDir string
	cpu0                        int64
}

func newMemSampler(ctx context.Context, c *cluster.Cluster, app string) (*memSampler, error) {
	pods, err := c.Client.CoreV1().Pods("carve-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + app})
	if err != nil {
		return nil, err
	}
	var targets []memTarget
	for _, pod := range pods.Items {
		for _, cs := range pod.Status.ContainerStatuses {
			id := cs.ContainerID[strings.Index(cs.ContainerID, "://")+3:]
			dir := findCgroup([]string{"/sys/fs/cgroup/memory", "/sys/fs/cgroup"}, string(pod.UID), id)
			if dir == "" {
				return nil, fmt.Errorf("no memory cgroup for %s/%s (pod%s/%s)", pod.Name, cs.Name, pod.UID, id)
			}
			cpuDir := findCgroup([]string{"/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup"}, string(pod.UID), id)
			targets = append(targets, memTarget{pod.Name, cs.Name, dir, cpuDir, cgroupCPU(cpuDir)})
		}
	}
	if len(targets) == 0 {
		return nil, fmt.Errorf("no %s pods", app)
	}
	ctx, cancel := context.WithCancel(ctx)
	m := &memSampler{cancel: cancel, peak: map[string]int64{}, pods: map[string][]string{}, targets: targets}
	for _, t := range targets {
		m.pods[t.pod] = append(m.pods[t.pod], t.pod+"/"+t.container)
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, t := range targets {
				v := cgroupRSS(t.dir)
				k := t.pod + "/" + t.container
				m.mu.Lock()
				m.peak[k] = max(m.peak[k], v)
				m.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return m, nil
}

// stop ends sampling and returns each container's peak, the highest sum
// of one pod's container peaks, and the CPU time all the controller pods
// used since the start.
func (m *memSampler) stop() (map[string]int64, int64, time.Duration) {
	m.cancel()
	m.wg.Wait()
	var cpu int64
	m.cpu, m.cpuOf = map[string]time.Duration{}, map[string]time.Duration{}
	for _, t := range m.targets {
		d := cgroupCPU(t.cpuDir) - t.cpu0
		cpu += d
		m.cpu[t.container] += time.Duration(d)
		m.cpuOf[t.pod+"/"+t.container] = time.Duration(d)
	}
	var podPeak int64
	for _, keys := range m.pods {
		var sum int64
		for _, k := range keys {
			sum += m.peak[k]
		}
		podPeak = max(podPeak, sum)
	}
	return m.peak, podPeak, time.Duration(cpu)
}

// findCgroup finds a container's memory cgroup as the kubelet (cgroupfs
// driver) and containerd lay it out: kubepods[/<qos>]/pod<uid>/<id>.
func findCgroup(roots []string, podUID, id string) string {
	for _, root := range roots {
		for _, pat := range []string{"kubepods/pod%s/%s", "kubepods/*/pod%s/%s"} {
			m, _ := filepath.Glob(filepath.Join(root, fmt.Sprintf(pat, podUID, id)))
			if len(m) > 0 {
				return m[0]
			}
		}
	}
	return ""
}

// cgroupRSS reads a cgroup's anonymous memory: total_rss (v1) or anon (v2).
func cgroupRSS(dir string) int64 {
	f, err := os.Open(filepath.Join(dir, "memory.stat"))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && (k == "total_rss" || k == "anon") {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// cgroupCPU reads a cgroup's CPU time in nanoseconds: cpuacct.usage (v1) or
// cpu.stat usage_usec (v2).
func cgroupCPU(dir string) int64 {
	if dir == "" {
		return 0
	}
	if data, err := os.ReadFile(filepath.Join(dir, "cpuacct.usage")); err == nil {
		n, _ := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
		return n
	}
	data, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(l, " "); ok && k == "usage_usec" {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n * 1000
		}
	}
	return 0
}

// loadavg is the host's 1, 5 and 15 minute load averages: the machine may be
// shared, and the figures depend on it.
