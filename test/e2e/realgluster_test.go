//go:build e2e

package e2e

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/carve-csi/carve/internal/testenv/glusterd"
	"github.com/carve-csi/carve/test/scenario"
)

// TestRealNodeStatefulSetGluster is the real-node story on GlusterFS:
// deploy/csi-driver as shipped plus the Gluster settings its comments
// document (scenario.DeployRealGluster), a real glusterd with a quota-enabled
// volume, the claims carved as directories with a quota each, and every
// publish a FUSE mount (mount -t glusterfs HOST:/VOLUME/DIR) made inside the
// node plugin's container, through which the StatefulSet's containers write.
func TestRealNodeStatefulSetGluster(t *testing.T) {
	g := glusterd.Start(t)
	vol := g.CreateVolume(t, "carve-real", 1)
	g.EnableQuota(t, vol.Name)
	// The controller's view of the volume: the host's FUSE mount, as a user
	// mounts it on the node and maps it in by hostPath.
	mount := g.Mount(t, vol.Name)
	c, n, tag := startRealNode(t)
	ctx := t.Context()
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	nfsShare, err := n.SharedDir("export")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	t.Cleanup(func() { dumpPods(t, c, "carve-system") })
	gl := scenario.RealGluster{Host: g.Host(), Volume: vol.Name, Mount: mount}
	if err := scenario.DeployRealGluster(ctx, c, n, repo, nfsShare, tag, gl); err != nil {
		t.Fatal(err)
	}
	t.Logf("carve deployed from deploy/csi-driver with Gluster %s:%s, node plugin registered, in %s", gl.Host, gl.Volume, time.Since(t0).Round(time.Second))

	s := &realStory{t: t, c: c, ns: "web", share: mount, class: "carve-gluster", fsType: "fuse.glusterfs"}
	t.Cleanup(func() { dumpPods(t, c, s.ns) })
	s.run(ctx)
	// The quota is the claim's size, and df inside the pod shows it
	// (carve sets quota-deem-statfs).
	out, err := c.Kubectl(ctx, "-n", s.ns, "exec", realSTS+"-0", "--", "df", "-kP", "/data")
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(lastLine(out)); len(f) < 2 || f[1] != "16384" {
		t.Fatalf("df -k /data in %s-0: want a size of 16384 KiB (the claim's 16Mi quota), got %q", realSTS, out)
	}
	t.Logf("df -k /data in %s-0: %s", realSTS, lastLine(out))
	// No client outlives its mount: the pods deleted on the way took theirs.
	targets, procs, rss := fuseClients(vol.Name)
	t.Logf("Gluster FUSE clients: %d mounts, %d processes (auto_unmount adds one per mount), %d MiB RSS in all",
		len(targets), procs, rss>>20)
	if len(targets) != 5 {
		t.Errorf("glusterfs clients of %s serve %d targets, want the 5 pods': %q", vol.Name, len(targets), slices.Sorted(maps.Keys(targets)))
	}
}

// fuseClients finds the glusterfs client processes serving the kubelet's
// targets of volume vol: the targets, the processes and their resident
// memory.
func fuseClients(vol string) (targets map[string]bool, n int, rss int64) {
	targets = map[string]bool{}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		cmd, err := os.ReadFile(filepath.Join(p, "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(cmd), "\x00"), "\x00")
		if filepath.Base(args[0]) != "glusterfs" || !strings.Contains(string(cmd), vol) ||
			!strings.Contains(string(cmd), "/var/lib/kubelet/pods/") {
			continue
		}
		n++
		targets[args[len(args)-1]] = true
		status, _ := os.ReadFile(filepath.Join(p, "status"))
		for _, l := range strings.Split(string(status), "\n") {
			if f := strings.Fields(l); len(f) == 3 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				rss += kb << 10
			}
		}
	}
	return targets, n, rss
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
