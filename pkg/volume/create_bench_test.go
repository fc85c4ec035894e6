package volume_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"k8s.io/klog/v2/ktesting"

	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/volume"
)

// BenchmarkCreateOneShare creates 1000 volumes on one local share with 1
// and with 32 callers (the provisioner's default --threadiness) and reports
// creates per second: the share's decisions are serialised (one lock per
// share), so this is what one share allows a provisioner whatever the API
// server does. It reports figures; it never fails on them.
func BenchmarkCreateOneShare(b *testing.B) {
	for _, workers := range []int{1, 32} {
		b.Run(fmt.Sprintf("callers=%d", workers), func(b *testing.B) {
			_, ctx := ktesting.NewTestContext(b)
			root := filepath.Join(b.TempDir(), "share")
			if err := os.Mkdir(root, 0o755); err != nil {
				b.Fatal(err)
			}
			if err := dirvol.Declare(root); err != nil {
				b.Fatal(err)
			}
			svc := volume.New(volume.Options{PurgeContext: ctx}, plainDir{root: root})
			cfg, err := params.Parse(map[string]string{"backend": "nfs", "server": "plain", "share": "/plain"})
			if err != nil {
				b.Fatal(err)
			}
			const n = 1000
			next := make(chan int)
			var wg sync.WaitGroup
			b.ResetTimer()
			t0 := time.Now()
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range next {
						name := fmt.Sprintf("pvc-%04d", i)
						req := volume.Request{Name: name, Namespace: "ns", Claim: name, Config: cfg, SizeBytes: 1 << 30,
							Vars: params.Vars{Namespace: "ns", Name: name, PVName: name}}
						if _, err := svc.Create(ctx, req); err != nil {
							b.Error(err)
						}
					}
				}()
			}
			for i := range n {
				next <- i
			}
			close(next)
			wg.Wait()
			b.ReportMetric(n/time.Since(t0).Seconds(), "creates/s")
		})
	}
}
