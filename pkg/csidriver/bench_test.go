package csidriver

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/klog/v2"
	mount "k8s.io/mount-utils"

	"github.com/carve-csi/carve/internal/benchfig"
	"github.com/carve-csi/carve/pkg/csidriver/internal/sanitytest"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/sharemount"
)

// benchDriver serves the controller on a unix socket with the NFS backend on
// a local declared share, and returns a client of it. The benchmarks measure
// carve's CreateVolume and DeleteVolume, gRPC included, not an NFS server.
func benchDriver(b *testing.B) (*Driver, csi.ControllerClient, string) {
	b.Helper()
	dir := b.TempDir()
	share := filepath.Join(dir, "share")
	if err := os.Mkdir(share, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := dirvol.Declare(share); err != nil {
		b.Fatal(err)
	}
	sock := filepath.Join(dir, "csi.sock")
	d, err := New(Config{
		Name:     DefaultName,
		NodeID:   "bench-node",
		Endpoint: "unix://" + sock,
		Mode:     ModeController,
		MountMap: sharemount.Map{sharemount.Key("127.0.0.1", "/exports"): share},
		Version:  "bench",
	}, mount.New(""))
	if err != nil {
		b.Fatal(err)
	}
	// Quiet: the figures are the output.
	ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), klog.Background().V(1)))
	served := make(chan error, 1)
	go func() { served <- d.Serve(ctx) }()
	b.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			b.Errorf("Serve: %v", err)
		}
	})
	sanitytest.WaitForSocket(b, sock)
	addr, dial := sanitytest.Address(sock)
	conn, err := grpc.NewClient(addr, dial, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return d, csi.NewControllerClient(conn), share
}

func benchCreateRequest(name, onDelete string) *csi.CreateVolumeRequest {
	return &csi.CreateVolumeRequest{
		Name:          name,
		CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 20},
		VolumeCapabilities: []*csi.VolumeCapability{{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
		}},
		Parameters: map[string]string{
			"backend": "nfs", "server": "127.0.0.1", "share": "/exports",
			"pathPattern": "bench/${pv.metadata.name}", "onDelete": onDelete,
		},
	}
}

func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

// writeFigures logs lines and keeps them in bin/bench/NAME (make bench).
func writeFigures(b *testing.B, name string, lines []string) {
	for _, l := range lines {
		b.Log(l)
	}
	benchfig.Write(b, name, strings.Join(lines, "\n")+"\n")
}

// BenchmarkCSICreateVolume: BENCH_CSI_CALLS (default 2000) CreateVolume
// calls for new volumes over gRPC at concurrency 1, 16 and 64; it reports
// calls per second and the p50/p99 latency of a call
// (bin/bench/csi-create.txt). Figures only, no timed assertion.
func BenchmarkCSICreateVolume(b *testing.B) {
	calls := envInt(b, "BENCH_CSI_CALLS", 2000)
	_, client, _ := benchDriver(b)
	lines := []string{fmt.Sprintf("# %s CSI CreateVolume, NFS backend on a local share, %d new volumes per concurrency", time.Now().UTC().Format(time.RFC3339), calls)}
	for _, conc := range []int{1, 16, 64} {
		lat := make([]time.Duration, calls)
		next := make(chan int)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var firstErr error
		start := time.Now()
		for w := 0; w < conc; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					t0 := time.Now()
					_, err := client.CreateVolume(context.Background(), benchCreateRequest(fmt.Sprintf("pvc-c%d-%d", conc, i), "retain"))
					lat[i] = time.Since(t0)
					if err != nil {
						mu.Lock()
						if firstErr == nil {
							firstErr = err
						}
						mu.Unlock()
					}
				}
			}()
		}
		for i := 0; i < calls; i++ {
			next <- i
		}
		close(next)
		wg.Wait()
		elapsed := time.Since(start)
		if firstErr != nil {
			b.Fatalf("CreateVolume at concurrency %d: %v", conc, firstErr)
		}
		slices.Sort(lat)
		rate := float64(calls) / elapsed.Seconds()
		p50, p99 := lat[calls/2], lat[calls*99/100]
		b.ReportMetric(rate, fmt.Sprintf("calls/s@%d", conc))
		lines = append(lines, fmt.Sprintf("concurrency %2d: %7.0f calls/s, p50 %v, p99 %v", conc, rate,
			p50.Round(10*time.Microsecond), p99.Round(10*time.Microsecond)))
	}
	lines = append(lines, "load average: "+benchfig.Load())
	writeFigures(b, "csi-create.txt", lines)
}

// BenchmarkCSIDeleteManyFiles: DeleteVolume (onDelete: delete) of a volume
// holding BENCH_DELETE_FILES (default 100,000) files; it reports how long
// the call took (the PV can go then) and how long the background purge ran
// (bin/bench/csi-delete.txt).
func BenchmarkCSIDeleteManyFiles(b *testing.B) {
	files := envInt(b, "BENCH_DELETE_FILES", 100000)
	d, client, share := benchDriver(b)
	resp, err := client.CreateVolume(context.Background(), benchCreateRequest("pvc-many", "delete"))
	if err != nil {
		b.Fatal(err)
	}
	dir := filepath.Join(share, "bench", "pvc-many")
	t0 := time.Now()
	for i := 0; i < files; i++ {
		sub := filepath.Join(dir, strconv.Itoa(i/1000))
		if i%1000 == 0 {
			if err := os.Mkdir(sub, 0o755); err != nil {
				b.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(sub, strconv.Itoa(i)), []byte("x"), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	fill := time.Since(t0)
	t0 = time.Now()
	if _, err := client.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: resp.Volume.VolumeId}); err != nil {
		b.Fatal(err)
	}
	call := time.Since(t0)
	d.WaitPurges()
	purge := time.Since(t0)
	if left := sanitytest.Entries(b, filepath.Join(share, ".carve-trash")); len(left) > 0 {
		b.Fatalf("trash left after the purge: %v", left)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		b.Fatalf("volume directory still there after DeleteVolume: %v", err)
	}
	b.ReportMetric(call.Seconds(), "s/delete-call")
	b.ReportMetric(purge.Seconds(), "s/purge")
	writeFigures(b, "csi-delete.txt", []string{
		fmt.Sprintf("# %s CSI DeleteVolume (onDelete: delete) of a volume with %d files (written in %v)", time.Now().UTC().Format(time.RFC3339), files, fill.Round(time.Millisecond)),
		fmt.Sprintf("DeleteVolume returned after %v; background purge done after %v", call.Round(time.Millisecond), purge.Round(time.Millisecond)),
		"load average: " + benchfig.Load(),
	})
}
