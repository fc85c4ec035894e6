package dirvol

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"

	"github.com/carve-csi/carve/internal/testenv/glusterd"
)

// Issue 16 at the engine's level, on real glusterd with quota enabled: while
// quota limits change all the time (each change reconfigures the brick, and
// the marker translator then lags behind new directories), Create is run
// back to back by two workers, 600 times. Gluster's quota translator refuses
// to move a directory across parents until the marker wrote its size xattr
// ("quota_rename_get_size_cbk: size key not present in dict", EINVAL); the
// old mechanism (mkdir in .carve-tmp, rename into place) is run alongside,
// back to back, as a control; its refusals are counted, not asserted (they
// depend on the marker's lag). Create must never fail and leave nothing behind.
func TestCreateOnGlusterWithQuotaChurn(t *testing.T) {
	c := glusterd.Start(t)
	_, ctx := ktesting.NewTestContext(t)
	ctx = klog.NewContext(ctx, klog.Background().V(10))
	v := c.CreateVolume(t, fmt.Sprintf("carvedv-%d-churn", os.Getpid()), 1)
	c.EnableQuota(t, v.Name)
	mnt := c.Mount(t, v.Name)
	s, err := Open(mnt)
	if err != nil {
		t.Fatal(err)
	}
	total := 600
	if testing.Short() {
		total = 100
	}
	churnCtx, stopChurn := context.WithCancel(context.Background())
	var churns atomic.Int64
	churnDone := make(chan struct{})
	fresh := make(chan string, total)
	go func() { // a first limit-usage on each volume just carved, all the time
		defer close(churnDone)
		for i := 0; ; i++ {
			var p string
			select {
			case p = <-fresh:
			case <-churnCtx.Done():
				return
			}
			if _, err := c.Gluster(churnCtx, "volume", "quota", v.Name, "limit-usage", "/"+p, fmt.Sprint(1+i%5)+"GB"); err == nil {
				churns.Add(1)
			}
		}
	}()

	var next, failures, controlEINVAL, controlRuns atomic.Int64
	var mu sync.Mutex
	var errs []string
	start := time.Now()
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= total {
					return
				}
				dir := []string{"sanity", fmt.Sprintf("pvc-%d", i)}
				ok, err := s.Create(ctx, dir, Owner{UID: 0, GID: int64(2000 + i), Mode: 0o2770}, Meta{PV: dir[1]})
				if err != nil || !ok {
					failures.Add(1)
					mu.Lock()
					errs = append(errs, fmt.Sprintf("Create(%s) = %v, %v", strings.Join(dir, "/"), ok, err))
					mu.Unlock()
					continue
				}
				fresh <- strings.Join(dir, "/")
			}
		}()
	}
	controlDone := make(chan struct{})
	go func() { // the control: the mechanism of 8b04fbe, back to back
		defer close(controlDone)
		for i := 0; churnCtx.Err() == nil; i++ {
			controlRuns.Add(1)
			if errors.Is(oldCreate(mnt, fmt.Sprintf("old-%d", i)), unix.EINVAL) {
				controlEINVAL.Add(1)
			}
		}
	}()
	wg.Wait()
	elapsed := time.Since(start)
	stopChurn()
	<-churnDone
	<-controlDone
	t.Logf("%d Creates by 2 workers in %s with %d quota limit changes and a control loop alongside: %d failures; "+
		"control (mkdir in .carve-tmp, rename across parents): %d of %d refused with EINVAL",
		total, elapsed.Round(time.Millisecond), churns.Load(), failures.Load(), controlEINVAL.Load(), controlRuns.Load())
	for _, e := range errs {
		t.Error(e)
	}
	if entries, err := os.ReadDir(filepath.Join(mnt, tmpDir)); err != nil || len(entries) != 0 {
		t.Errorf("%s holds %d entries (%v)", tmpDir, len(entries), err)
	}
	entries, err := os.ReadDir(filepath.Join(mnt, "sanity"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), newPrefix) {
			t.Errorf("left under a temporary name: sanity/%s", e.Name())
		}
		if strings.HasPrefix(e.Name(), "pvc-") {
			n++
		}
	}
	if n != total {
		t.Errorf("%d volume directories, want %d", n, total)
	}
}

// oldCreate is 8b04fbe's Create without its safety checks: mkdir in
// .carve-tmp, chown, chmod, rename into sanity/. It returns the rename's error.
func oldCreate(root, name string) error {
	tmp, err := unix.Open(filepath.Join(root, tmpDir+"-control"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if errors.Is(err, unix.ENOENT) {
		_ = unix.Mkdir(filepath.Join(root, tmpDir+"-control"), 0o700)
		tmp, err = unix.Open(filepath.Join(root, tmpDir+"-control"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	}
	if err != nil {
		return err
	}
	defer unix.Close(tmp)
	parent, err := unix.Open(filepath.Join(root, "sanity"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	if err := unix.Mkdirat(tmp, name, 0); err != nil {
		return err
	}
	fd, err := unix.Openat(tmp, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err == nil {
		_ = unix.Fchown(fd, 0, 3000)
		_ = unix.Fchmod(fd, 0o2770)
		unix.Close(fd)
	}
	err = renameNoReplace(tmp, name, parent, name)
	if err != nil {
		_ = unix.Unlinkat(tmp, name, unix.AT_REMOVEDIR)
	}
	return err
}
