package csidriver

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/klog/v2/ktesting"
	mount "k8s.io/mount-utils"

	"github.com/carve-csi/carve/pkg/csidriver/internal/sanitytest"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/sharemount"
)

// TestCopyMetrics runs the driver (gRPC socket, metrics endpoint) on a
// share in a temp dir and scrapes the real endpoint: during a snapshot's
// copy, and after a snapshot, a restore and a clone of a volume with many
// files and a sparse one.
func TestCopyMetrics(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	share := filepath.Join(t.TempDir(), "share")
	must(t, os.Mkdir(share, 0o755))
	must(t, dirvol.Declare(share))
	sock := filepath.Join(t.TempDir(), "csi.sock")
	addr := freeAddr(t)
	d, err := New(Config{NodeID: "node-1", Endpoint: sock, MetricsAddress: addr,
		MountMap: sharemount.Map{sharemount.Key(testServer, testExport): share}}, mount.NewFakeMounter(nil))
	must(t, err)
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	sanitytest.WaitForSocket(t, sock)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(t, err)
	defer conn.Close()
	cc := csi.NewControllerClient(conn)
	metricsURL := "http://" + addr + "/metrics"

	// Before any copy every kind is there, at zero.
	m := scrape(t, metricsURL)
	for _, k := range []string{"snapshot", "restore", "clone"} {
		for _, name := range []string{"carve_copies_in_progress", "carve_copy_files_total", "carve_copy_bytes_total", "carve_copy_reflinked_bytes_total"} {
			if v, ok := m[series(name, k)]; !ok || v != 0 {
				t.Errorf("before any copy: %s = %v (present %v), want 0", series(name, k), v, ok)
			}
		}
	}

	p := classParams("pathPattern", "${pv.metadata.name}", "onDelete", "delete")
	vol, err := cc.CreateVolume(ctx, createReq("pvc-src", 1<<30, p))
	must(t, err)
	const files = 400
	var wantBytes int64
	for i := range files - 1 {
		dir := filepath.Join(share, "pvc-src", fmt.Sprint(i%20))
		must(t, os.MkdirAll(dir, 0o755))
		data := bytes.Repeat([]byte{byte(i)}, 8<<10+i)
		must(t, os.WriteFile(filepath.Join(dir, fmt.Sprint(i)), data, 0o644))
		wantBytes += int64(len(data))
	}
	// A sparse file: 512 MiB long, 8 KiB of data; only the data counts.
	f, err := os.Create(filepath.Join(share, "pvc-src", "sparse"))
	must(t, err)
	must(t, f.Truncate(512<<20))
	_, err = f.WriteAt(bytes.Repeat([]byte{1}, 8<<10), 100<<20)
	must(t, err)
	must(t, f.Close())
	wantBytes += 8 << 10

	// The snapshot is taken with the driver's metrics wrapped in a gate
	// that holds the copy after its first file, so the endpoint is scraped
	// while the copy runs.
	g := &gate{CopyObserver: d.metrics, reached: make(chan struct{}), release: make(chan struct{})}
	type result struct {
		resp *csi.CreateSnapshotResponse
		err  error
	}
	snapDone := make(chan result, 1)
	go func() {
		resp, err := d.controller.CreateSnapshot(dirvol.WithCopyObserver(ctx, g),
			&csi.CreateSnapshotRequest{Name: "snap-1", SourceVolumeId: vol.Volume.VolumeId})
		snapDone <- result{resp, err}
	}()
	select {
	case <-g.reached:
	case r := <-snapDone:
		t.Fatalf("the snapshot ended (%v) before its copy reported a file", r.err)
	case <-time.After(time.Minute):
		t.Fatal("no copy progress within a minute")
	}
	m = scrape(t, metricsURL)
	if v := m[series("carve_copies_in_progress", "snapshot")]; v != 1 {
		t.Errorf("during the copy: carve_copies_in_progress{snapshot} = %v, want 1", v)
	}
	if v := m[series("carve_copy_files_total", "snapshot")]; v < 1 || v >= files {
		t.Errorf("during the copy: %v files copied, want some of %d", v, files)
	}
	if v := m[series("carve_copy_bytes_total", "snapshot")]; v <= 0 || v >= float64(wantBytes) {
		t.Errorf("during the copy: %v bytes copied, want some of %d", v, wantBytes)
	}
	close(g.release)
	r := <-snapDone
	must(t, r.err)

	// A restore and a clone through the gRPC socket: the interceptor gives
	// their calls the metrics.
	restore := createReq("pvc-restored", 1<<30, p)
	restore.VolumeContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
		Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: r.resp.Snapshot.SnapshotId}}}
	_, err = cc.CreateVolume(ctx, restore)
	must(t, err)
	clone := createReq("pvc-clone", 1<<30, p)
	clone.VolumeContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
		Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: vol.Volume.VolumeId}}}
	_, err = cc.CreateVolume(ctx, clone)
	must(t, err)

	m = scrape(t, metricsURL)
	for _, k := range []string{"snapshot", "restore", "clone"} {
		want := map[string]float64{
			series("carve_copies_in_progress", k):                                           0,
			series("carve_copy_files_total", k):                                             files,
			series("carve_copy_bytes_total", k):                                             float64(wantBytes),
			series("carve_copy_reflinked_bytes_total", k):                                   0, // ext4 or tmpfs under t.TempDir: no reflinks
			fmt.Sprintf("carve_copy_duration_seconds_count{kind=%q,result=\"success\"}", k): 1,
		}
		for s, w := range want {
			if got, ok := m[s]; !ok || got != w {
				t.Errorf("after the copies: %s = %v (present %v), want %v", s, got, ok, w)
			}
		}
		if v := m[fmt.Sprintf("carve_copy_duration_seconds_sum{kind=%q,result=\"success\"}", k)]; v <= 0 {
			t.Errorf("%s copy took %v s", k, v)
		}
	}
	if fi, err := os.Stat(filepath.Join(share, "pvc-clone", "sparse")); err != nil || fi.Size() != 512<<20 {
		t.Errorf("cloned sparse file: %v, %v", fi, err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func series(name, kind string) string { return fmt.Sprintf("%s{kind=%q}", name, kind) }

// freeAddr returns a local TCP address nothing listens on (the kernel's
// choice of a free port, released for the driver to take).
func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// scrape reads the metrics endpoint's text exposition: series → value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	must(t, err)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("bad exposition line %q", line)
		}
		out[line[:i]] = v
	}
	must(t, sc.Err())
	return out
}

// gate passes a copy's reports on and holds the copy after its first file
// until released.
type gate struct {
	dirvol.CopyObserver
	once             sync.Once
	reached, release chan struct{}
}

func (g *gate) CopyStarted(kind dirvol.CopyKind) dirvol.CopyProgress {
	return &gateProgress{CopyProgress: g.CopyObserver.CopyStarted(kind), g: g}
}

type gateProgress struct {
	dirvol.CopyProgress
	g *gate
}

func (p *gateProgress) Copied(files, bytes, reflinked int64) {
	p.CopyProgress.Copied(files, bytes, reflinked)
	if files > 0 {
		p.g.once.Do(func() {
			close(p.g.reached)
			<-p.g.release
		})
	}
}

// TestCopyMetricsFailedCopy: a copy that fails is no longer in progress and
// is timed under result "error".
func TestCopyMetricsFailedCopy(t *testing.T) {
	m := newMetrics()
	p := m.CopyStarted(dirvol.CopyClone)
	p.Copied(1, 10, 0)
	p.Finished(dirvol.CopyStats{Files: 1, Bytes: 10, Elapsed: time.Second}, dirvol.ErrUnsupportedFile)
	var out dto.Metric
	must(t, m.copies.WithLabelValues("clone").Write(&out))
	if v := out.GetGauge().GetValue(); v != 0 {
		t.Errorf("in progress = %v, want 0", v)
	}
	h, err := m.copyDuration.GetMetricWithLabelValues("clone", "error")
	must(t, err)
	out.Reset()
	must(t, h.(prometheus.Histogram).Write(&out))
	if c, s := out.GetHistogram().GetSampleCount(), out.GetHistogram().GetSampleSum(); c != 1 || s != 1 {
		t.Errorf("error copies: count %d, sum %v; want 1, 1", c, s)
	}
}
