package glusterd

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/carve-csi/carve/internal/hostlock"
	"github.com/carve-csi/carve/internal/testenv/internal/realenv"
)

// TestCloseLeavesRunDir: a volume with a quota limit makes glusterd spawn
// bricks, a quota daemon and quota helper clients, each with a pid file or
// socket in RunDir; Close must remove those and leave RunDir as it was.
func TestCloseLeavesRunDir(t *testing.T) {
	ctx := context.Background()
	c, err := StartCluster(ctx, Options{WorkDir: t.TempDir(), Logf: t.Logf})
	if err != nil {
		realenv.SkipOrFatal(t, err)
	}
	if !c.owned {
		_ = c.Close()
		t.Skip("a glusterd this test did not start is running: its files are not the fixture's to remove")
	}
	closed := false
	defer func() {
		if !closed {
			_ = c.Close()
		}
	}()
	before := c.initialRun
	added := 0
	// A subtest, so the volume's cleanup (stop, delete) runs before Close.
	t.Run("VolumeWithQuota", func(t *testing.T) {
		v := c.CreateVolume(t, fmt.Sprintf("carvetest-%d-rundir", os.Getpid()), 1)
		c.EnableQuota(t, v.Name)
		c.MustGluster(t, "volume", "quota", v.Name, "limit-usage", "/", "10MB")
		c.MustGluster(t, "volume", "quota", v.Name, "list")
		during, err := runFiles()
		if err != nil {
			t.Fatal(err)
		}
		for n := range during {
			if !before[n] {
				added++
			}
		}
	})
	if added == 0 {
		t.Fatalf("no pid file or socket appeared in %s while a volume with quota ran: the check would prove nothing", RunDir)
	}
	closed = true
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// Under the host lock nobody else's fixture can add files meanwhile.
	lock, err := hostlock.AcquireLock(ctx, hostlock.LockPath("glusterd"), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	after, err := runFiles()
	if err != nil {
		t.Fatal(err)
	}
	for n := range after {
		if !before[n] {
			t.Errorf("%s/%s was left behind (%d appeared during the run)", RunDir, n, added)
		}
	}
	mounts, err := glusterMounts()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		if !c.initialMounts[m] {
			t.Errorf("glusterfs mount %s was left behind", m)
		}
	}
}
