package gluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/klog/v2"
	mount "k8s.io/mount-utils"

	"github.com/carve-csi/carve/internal/benchfig"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/sharemount"
	"github.com/carve-csi/carve/pkg/volume"
	"github.com/carve-csi/carve/pkg/volume/volumetest"
)

// BenchmarkGlusterCreate measures claim creation on a real glusterd with
// real FUSE mounts, as carve does it now and as it did before
// (`before`: a gluster process per command and a `volume info` per claim):
//
//   - subdir cold: the first claim on a fresh volume with quota enabled
//     (the share's FUSE mount, the first CLI start, the first quota check);
//   - subdir warm: the next claims, p50 and p99;
//   - volume mode: a volume per claim with quota, created and started.
//
// The two ways run interleaved, claim by claim, so that the shared host's
// load weighs on both alike. Figures are printed and written to
// bin/bench/gluster-create.txt; nothing is asserted about them.
// CARVE_BENCH_GLUSTER_CLAIMS sets the number of warm claims (default 30).
//
//	go test -run '^$' -bench BenchmarkGlusterCreate -benchtime 1x ./pkg/gluster
func BenchmarkGlusterCreate(b *testing.B) {
	c := cluster(b)
	ctx := klog.NewContext(context.Background(), klog.Background().V(1)) // quiet: the figures are the output
	warm := 30
	if n, err := fmt.Sscan(os.Getenv("CARVE_BENCH_GLUSTER_CLAIMS"), &warm); n != 1 || err != nil || warm < 1 {
		warm = 30
	}
	const volumes = 3
	type way struct {
		name   string
		before bool
		cli    timedExecutor
		subdir []time.Duration // [0] is the cold one
		inCLI  []time.Duration // of which waiting for the gluster CLI
		whole  []time.Duration
	}
	ways := []*way{
		{name: "before", before: true},
		{name: "now"},
	}
	load := []string{benchfig.Load()}
	mountsDir := b.TempDir()
	brickRoot := filepath.Join(c.BrickRoot(), fmt.Sprintf("bench-%d", os.Getpid()))
	if err := os.MkdirAll(brickRoot, 0o755); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unmountUnder(b, mountsDir) }) // before the volumes go (cleanups run last first)

	type svc struct {
		*way
		vol string
		be  *Backend
		s   *volume.Service
	}
	var svcs []svc
	for _, w := range ways {
		v := c.CreateVolume(b, volName("bench"), 1)
		c.EnableQuota(b, v.Name)
		w.cli.inner = benchExecutor(w.before)
		be := benchBackend(Options{Resolver: &sharemount.Resolver{MountsDir: filepath.Join(mountsDir, w.name), Mounter: mount.New("")},
			NewExecutor: func(context.Context, []string, ExecutorSpec) (Executor, error) { return &w.cli, nil }}, w.before)
		b.Cleanup(be.Close)
		svcs = append(svcs, svc{way: w, vol: v.Name, be: be, s: volume.New(volume.Options{GIDs: &volumetest.GIDs{}}, be)})
	}
	b.ResetTimer()
	for i := 0; i <= warm; i++ {
		for _, s := range svcs {
			cfg := mustParseTB(b, "backend", "gluster", "servers", c.Host(), "volume", s.vol, "onDelete", "delete", "quota", "gluster")
			uid := fmt.Sprintf("%08x-0000-4000-8000-%012x", os.Getpid(), i)
			s.cli.take()
			start := time.Now()
			if _, err := s.s.Create(ctx, request(cfg, "pvc-"+uid, "bench", fmt.Sprintf("c%d", i), 64<<20)); err != nil {
				b.Fatalf("%s: subdir claim %d: %v", s.name, i, err)
			}
			s.subdir = append(s.subdir, time.Since(start))
			s.inCLI = append(s.inCLI, s.cli.take())
		}
	}
	load = append(load, benchfig.Load())
	for i := range volumes {
		for _, s := range svcs {
			cfg := mustParseTB(b, "backend", "gluster", "servers", c.Host(), "mode", "volume", "replica", "1",
				"brickRootPaths", c.Host()+":"+brickRoot, "forceCreate", "true", "quota", "gluster", "onDelete", "delete",
				"volumeNamePrefix", "carvebench"+s.name)
			uid := fmt.Sprintf("%08x-0000-4000-9000-%012x", os.Getpid(), i)
			req := request(cfg, "pvc-"+uid, "bench", fmt.Sprintf("v%d", i), 64<<20)
			start := time.Now()
			res, err := s.s.Create(ctx, req)
			if err != nil {
				b.Fatalf("%s: volume claim %d: %v", s.name, i, err)
			}
			s.whole = append(s.whole, time.Since(start))
			if _, err := s.s.Delete(ctx, req.Name, res.ID); err != nil {
				b.Fatalf("%s: delete volume claim %d: %v", s.name, i, err)
			}
		}
	}
	b.StopTimer()
	load = append(load, benchfig.Load())

	ms := func(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }
	var out strings.Builder
	fmt.Fprintf(&out, "Gluster create latency (%s, %s; real glusterd and FUSE mounts on this host)\n", glusterVersion(), time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&out, "load average (1 5 15 min) at start / after subdir / at end: %s\n", strings.Join(load, " / "))
	fmt.Fprintf(&out, "before: a gluster process per command and a volume info per claim; now: one CLI session, quota state remembered\n\n")
	fmt.Fprintf(&out, "%-8s %14s %14s %16s %16s %16s\n", "", "subdir cold", "warm p50", fmt.Sprintf("warm p99 (n=%d)", warm), "warm CLI p50", "volume mode p50")
	for _, w := range ways {
		warmD := slices.Clone(w.subdir[1:])
		cliD := slices.Clone(w.inCLI[1:])
		vol := slices.Clone(w.whole)
		fmt.Fprintf(&out, "%-8s %14s %14s %16s %16s %16s\n", w.name, ms(w.subdir[0]), ms(percentile(warmD, 50)), ms(percentile(warmD, 99)),
			ms(percentile(cliD, 50)), ms(percentile(vol, 50)))
	}
	fmt.Fprintf(&out, "(warm CLI: the part of a warm claim spent waiting for the gluster CLI)\n")
	for _, w := range ways {
		var vs []string
		for _, d := range w.whole {
			vs = append(vs, ms(d))
		}
		fmt.Fprintf(&out, "%s volume mode, each: %s\n", w.name, strings.Join(vs, ", "))
	}
	fmt.Print("\n" + out.String())
	benchfig.Write(b, "gluster-create.txt", out.String())
}

// timedExecutor adds up the time its commands take.
type timedExecutor struct {
	inner Executor
	mu    sync.Mutex
	total time.Duration
}

func (e *timedExecutor) Run(ctx context.Context, args []string) ([]byte, error) {
	start := time.Now()
	out, err := e.inner.Run(ctx, args)
	e.mu.Lock()
	e.total += time.Since(start)
	e.mu.Unlock()
	return out, err
}

// take returns the time added up since the last take.
func (e *timedExecutor) take() time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.total
	e.total = 0
	return t
}

func (e *timedExecutor) Close() {
	if c, ok := e.inner.(interface{ Close() }); ok {
		c.Close()
	}
}

// percentile sorts ds and returns its p-th percentile (nearest rank).
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := (len(ds)*p + 99) / 100
	return ds[max(i-1, 0)]
}

func mustParseTB(tb testing.TB, kv ...string) *params.Config {
	tb.Helper()
	in := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		in[kv[i]] = kv[i+1]
	}
	cfg, err := params.Parse(in)
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// unmountUnder unmounts the share mounts the backends made under dir.
func unmountUnder(tb testing.TB, dir string) {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		tb.Error(err)
		return
	}
	for _, line := range strings.Split(string(mi), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			if err := mount.New("").Unmount(f[4]); err != nil {
				tb.Errorf("unmount %s: %v", f[4], err)
			}
		}
	}
}

func glusterVersion() string {
	out, err := exec.Command("gluster", "--version").Output()
	if err != nil {
		return "gluster ?"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return line
}
