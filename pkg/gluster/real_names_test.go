package gluster

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"

	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/volume"
	"github.com/carve-csi/carve/pkg/volume/volumetest"
)

// Issue 16: on a volume with quota enabled, a directory created in
// .carve-tmp and renamed into place right away was refused now and then
// (brick log: "quota_rename_get_size_cbk ... size key not present in dict
// [Invalid argument]"). The create path, with and without a capacity
// (limit-usage), repeated with concurrency on two quota volumes, csi-sanity's
// pathPattern, some volumes deleted at once and purged in the background:
// no failure, nothing left in .carve-tmp or under a temporary name.
func TestCreateRepeatedWithQuota(t *testing.T) {
	c := cluster(t)
	_, ctx := ktesting.NewTestContext(t)
	// The per-create logs of 500+ creates would drown the test output.
	ctx = klog.NewContext(ctx, klog.Background().V(10))
	total, workers := 520, 4
	if testing.Short() {
		total = 60
	}
	type share struct{ vol, mnt string }
	var shares []share
	vols := map[string]string{}
	for i := range 2 {
		v := c.CreateVolume(t, volName(fmt.Sprintf("rep%d-", i)), 1)
		c.EnableQuota(t, v.Name)
		mnt := c.Mount(t, v.Name)
		shares = append(shares, share{v.Name, mnt})
		vols[v.Name] = mnt
	}
	b := mapped(c, vols)
	svc := volume.New(volume.Options{GIDs: &volumetest.GIDs{}, PurgeContext: ctx}, b)

	var next, failures, withLimit, deleted atomic.Int64
	var mu sync.Mutex
	var errs []string
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= total {
					return
				}
				sh := shares[(i+w)%len(shares)]
				policy := "retain"
				if i%5 == 4 {
					policy = "delete" // created, then deleted at once, as csi-sanity does
				}
				cfg := mustParse(t, "backend", "gluster", "servers", c.Host(), "volume", sh.vol,
					"pathPattern", "sanity/${pv.metadata.name}", "onDelete", policy, "quota", "auto")
				size := int64(0)
				if i%2 == 0 {
					size = 1 << 30 // limit-usage on the new directory
				}
				pv := fmt.Sprintf("pvc-%08d-1111-4222-8333-%012d", i, i)
				res, err := svc.Create(ctx, request(cfg, pv, "sanity", pv, size))
				if err == nil && size > 0 {
					withLimit.Add(1)
				}
				if err == nil && policy == "delete" {
					var out volume.Outcome
					out, err = svc.Delete(ctx, pv, res.ID)
					if err == nil && out.Action != "deleted" {
						err = fmt.Errorf("Delete = %+v", out)
					}
					deleted.Add(1)
				}
				if err != nil {
					failures.Add(1)
					mu.Lock()
					errs = append(errs, fmt.Sprintf("%d (%s): %v", i, pv, err))
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	svc.WaitPurges()
	elapsed := time.Since(start)
	t.Logf("%d creates (%d with a quota limit, %d deleted at once) by %d workers on %d quota volumes in %s: %d failures",
		total, withLimit.Load(), deleted.Load(), workers, len(shares), elapsed.Round(time.Millisecond), failures.Load())
	for _, e := range errs {
		t.Error(e)
	}
	live := 0
	for _, sh := range shares {
		if tmp, err := os.ReadDir(filepath.Join(sh.mnt, ".carve-tmp")); err != nil || len(tmp) != 0 {
			t.Errorf("%s/.carve-tmp holds %d entries (%v)", sh.vol, len(tmp), err)
		}
		entries, err := os.ReadDir(filepath.Join(sh.mnt, "sanity"))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".carve") {
				t.Errorf("left under a temporary name: %s/sanity/%s", sh.vol, e.Name())
			}
			live++
		}
		if trash, _ := os.ReadDir(filepath.Join(sh.mnt, ".carve-trash")); len(trash) != 0 {
			t.Errorf("%s/.carve-trash holds %d entries after the purges", sh.vol, len(trash))
		}
	}
	if want := total - int(deleted.Load()); live != want {
		t.Errorf("%d volume directories, want %d", live, want)
	}
}

// Issue 9, D4: claims with the longest names Kubernetes accepts (a 63
// character namespace, a 253 character claim) are carved with a quota limit,
// archived (with a record naming the claim) and deleted (trash and purge)
// on a real Gluster FUSE mount.
func TestLongClaimNames(t *testing.T) {
	c := cluster(t)
	_, ctx := ktesting.NewTestContext(t)
	v := c.CreateVolume(t, volName("long"), 1)
	c.EnableQuota(t, v.Name)
	mnt := c.Mount(t, v.Name)
	svc := volume.New(volume.Options{GIDs: &volumetest.GIDs{}, PurgeContext: ctx}, mapped(c, map[string]string{v.Name: mnt}))

	ns := "ns-" + strings.Repeat("n", 60)
	for _, tc := range []struct {
		policy, pattern, claim string
	}{
		{"archive", "", "data-" + strings.Repeat("a", 248)},
		{"archive", "team/${pvc.metadata.namespace}/${pv.metadata.name}/${pvc.metadata.name}", "data-" + strings.Repeat("b", 248)},
		{"delete", "", "data-" + strings.Repeat("d", 248)},
		{"delete", "", "data-" + strings.Repeat("e", 235)},  // 240
		{"archive", "", "data-" + strings.Repeat("f", 225)}, // 230
	} {
		t.Run(fmt.Sprintf("%s-%d", tc.policy, len(tc.claim)), func(t *testing.T) {
			kv := []string{"backend", "gluster", "servers", c.Host(), "volume", v.Name, "onDelete", tc.policy, "quota", "gluster"}
			if tc.pattern != "" {
				kv = append(kv, "pathPattern", tc.pattern)
			}
			pv := fmt.Sprintf("pvc-%s-%d", tc.policy, len(tc.claim))
			const size = 64 << 20
			res, err := svc.Create(ctx, request(mustParse(t, kv...), pv, ns, tc.claim, size))
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			path := "/" + res.ID.DirPath()
			if !strings.HasSuffix(path, "/"+tc.claim) {
				t.Fatalf("carved %s", path)
			}
			if got := hardLimit(t, c, v.Name, path); got != size {
				t.Errorf("hard limit of the claim = %d, want %d", got, size)
			}
			if err := os.WriteFile(filepath.Join(mnt, path, "data"), []byte("kept"), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := svc.Delete(ctx, pv, res.ID)
			if err != nil {
				t.Fatalf("Delete: %v", err)
			}
			svc.WaitPurges()
			if _, err := os.Stat(filepath.Join(mnt, path)); !os.IsNotExist(err) {
				t.Errorf("directory still there after %s: %v", tc.policy, err)
			}
			if got := hardLimit(t, c, v.Name, path); got != -1 {
				t.Errorf("quota entry survives: %d", got)
			}
			switch tc.policy {
			case "archive":
				if out.Action != "archived" || out.Where == "" {
					t.Fatalf("Delete = %+v", out)
				}
				for _, seg := range strings.Split(out.Where, "/") {
					if len(seg) > 250 {
						t.Errorf("archive entry segment of %d bytes: %s", len(seg), out.Where)
					}
				}
				if b, err := os.ReadFile(filepath.Join(mnt, out.Where, "data")); err != nil || string(b) != "kept" {
					t.Errorf("archived data = %q, %v", b, err)
				}
				var rec dirvol.ArchiveRecord
				b, err := os.ReadFile(filepath.Join(mnt, out.Where+".json"))
				if err == nil {
					err = json.Unmarshal(b, &rec)
				}
				if err != nil || rec.Dir != res.ID.DirPath() || rec.Record == nil || rec.Record.Claim != tc.claim ||
					rec.Record.Namespace != ns || rec.Record.PV != pv {
					t.Errorf("archive record = %+v, %v", rec, err)
				}
			case "delete":
				if out.Action != "deleted" {
					t.Fatalf("Delete = %+v", out)
				}
			}
		})
	}
	for _, d := range []string{".carve-tmp", ".carve-trash"} {
		if entries, _ := os.ReadDir(filepath.Join(mnt, d)); len(entries) != 0 {
			t.Errorf("%s holds %d entries", d, len(entries))
		}
	}
}
