package gluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/klog/v2/ktesting"
	mount "k8s.io/mount-utils"

	"github.com/carve-csi/carve/internal/testenv/glusterd"
	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/sharemount"
	"github.com/carve-csi/carve/pkg/volid"
	"github.com/carve-csi/carve/pkg/volume"
	"github.com/carve-csi/carve/pkg/volume/volumetest"
)

// One glusterd for the whole test binary: starting one takes seconds and it
// is a host singleton anyway.
var (
	clusterOnce sync.Once
	shared      *glusterd.Cluster
	sharedErr   error
	startedIn   time.Duration
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		if err := shared.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "close glusterd fixture: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// cluster returns the shared glusterd, starting it on first use. It skips
// the test when root or the binaries are missing (fails under
// CARVE_REQUIRE_REAL=1).
func cluster(t testing.TB) *glusterd.Cluster {
	t.Helper()
	clusterOnce.Do(func() {
		// Mostly the wait for the host lock: glustersanity and the dirvol
		// churn test hold it for minutes on a busy 2-core machine.
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		start := time.Now()
		shared, sharedErr = glusterd.StartCluster(ctx, glusterd.Options{})
		startedIn = time.Since(start)
	})
	if sharedErr != nil {
		if errors.Is(sharedErr, glusterd.ErrUnavailable) && os.Getenv("CARVE_REQUIRE_REAL") != "1" {
			t.Skipf("skipping real glusterd test: %v (set CARVE_REQUIRE_REAL=1 to fail instead)", sharedErr)
		}
		t.Fatal(sharedErr)
	}
	return shared
}

var volSeq struct {
	sync.Mutex
	n int
}

// volName returns a volume name unique on this host.
func volName(kind string) string {
	volSeq.Lock()
	defer volSeq.Unlock()
	volSeq.n++
	return fmt.Sprintf("carvegl-%d-%s%d", os.Getpid(), kind, volSeq.n)
}

// mapped returns a backend reaching volumes through --mount-map entries.
func mapped(c *glusterd.Cluster, vols map[string]string) *Backend {
	m := sharemount.Map{}
	for v, p := range vols {
		m[sharemount.Key(c.Host(), v)] = p
	}
	return New(Options{Resolver: &sharemount.Resolver{Map: m}})
}

func mustParse(t *testing.T, kv ...string) *params.Config {
	t.Helper()
	in := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		in[kv[i]] = kv[i+1]
	}
	cfg, err := params.Parse(in)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func request(cfg *params.Config, pv, ns, claim string, size int64) volume.Request {
	return volume.Request{Name: pv, Namespace: ns, Claim: claim, Config: cfg, SizeBytes: size,
		ClaimUID: strings.TrimPrefix(pv, "pvc-"), Vars: params.Vars{Namespace: ns, Name: claim, PVName: pv}}
}

// hardLimit returns the quota hard limit on path, or -1 without one.
func hardLimit(t *testing.T, c *glusterd.Cluster, vol, path string) int64 {
	t.Helper()
	cli := NewCLI(&LocalExecutor{}, nil)
	limits, err := cli.QuotaList(context.Background(), vol)
	if err != nil {
		t.Fatalf("quota list %s: %v", vol, err)
	}
	for _, l := range limits {
		if l.Path == path {
			return l.HardLimit
		}
	}
	return -1
}

// dfSize is what df shows as the size of the filesystem at p.
func dfSize(t *testing.T, p string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(p, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks) * st.Bsize
}

// waitDF waits until df at p shows want (within 2%): the FUSE client
// refreshes quota-deem-statfs figures asynchronously.
func waitDF(t *testing.T, p string, want int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := dfSize(t, p)
		if got >= want*98/100 && got <= want*102/100 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("df %s shows %d bytes, want about %d", p, got, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// The shared conformance suite on a real 1-brick volume, reached like
// --mount-map deployments reach it. Each case needs an empty share: it gets
// a fresh directory of the volume, FUSE-mounted on its own (a volume per
// case would double the package's test time).
func TestConformance(t *testing.T) {
	c := cluster(t)
	v := c.CreateVolume(t, volName("conf"), 1)
	root := c.Mount(t, v.Name)
	n := 0
	volumetest.Run(t, func(t *testing.T) volumetest.Env {
		n++
		dir := fmt.Sprintf("case%d", n)
		if err := os.Mkdir(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
		mnt := c.Mount(t, v.Name+"/"+dir)
		return volumetest.Env{
			Backend:   mapped(c, map[string]string{v.Name: mnt}),
			Params:    map[string]string{"backend": "gluster", "servers": c.Host(), "volume": v.Name},
			LocalRoot: mnt,
		}
	})
}

func TestSubdirQuota(t *testing.T) {
	c := cluster(t)
	_, ctx := ktesting.NewTestContext(t)
	v := c.CreateVolume(t, volName("quota"), 1)
	c.EnableQuota(t, v.Name)
	mnt := c.Mount(t, v.Name)
	b := mapped(c, map[string]string{v.Name: mnt})
	svc := volume.New(volume.Options{GIDs: &volumetest.GIDs{}, PurgeContext: ctx}, b)

	const size = 64 << 20
	for _, policy := range []string{"archive", "delete"} {
		t.Run(policy, func(t *testing.T) {
			cfg := mustParse(t, "backend", "gluster", "servers", c.Host(), "volume", v.Name, "onDelete", policy, "quota", "gluster")
			res, err := svc.Create(ctx, request(cfg, "pvc-"+policy, "ns", policy, size))
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Warnings) != 0 {
				t.Errorf("warnings with quota: %q", res.Warnings)
			}
			path := "/" + res.ID.DirPath()
			if got := hardLimit(t, c, v.Name, path); got != size {
				t.Fatalf("hard limit of %s = %d, want %d", path, got, size)
			}
			// df on the claim's own mount, as in the pod, shows the claim's size.
			t.Run("df", func(t *testing.T) {
				sub := c.Mount(t, v.Name+path)
				waitDF(t, sub, size)
				// Expansion raises the limit, and df follows.
				if err := b.SetLimit(ctx, res.ID, 2*size); err != nil {
					t.Fatal(err)
				}
				if got := hardLimit(t, c, v.Name, path); got != 2*size {
					t.Fatalf("hard limit after expansion = %d, want %d", got, 2*size)
				}
				waitDF(t, sub, 2*size)
			})
			out, err := svc.Delete(ctx, "pvc-"+policy, res.ID)
			if err != nil {
				t.Fatal(err)
			}
			svc.WaitPurges()
			if want := map[string]backend.Action{"archive": backend.ActionArchived, "delete": backend.ActionDeleted}[policy]; out.Action != want {
				t.Errorf("Delete = %+v", out)
			}
			if got := hardLimit(t, c, v.Name, path); got != -1 {
				t.Errorf("quota entry of %s survives %s: %d", path, policy, got)
			}
			if _, err := os.Stat(filepath.Join(mnt, res.ID.DirPath())); !os.IsNotExist(err) {
				t.Errorf("directory still there after %s: %v", policy, err)
			}
			if policy == "archive" {
				if _, err := os.Stat(filepath.Join(mnt, out.Where)); err != nil {
					t.Errorf("archived directory: %v", err)
				}
			}
		})
	}
}

func TestSubdirWithoutQuota(t *testing.T) {
	c := cluster(t)
	_, ctx := ktesting.NewTestContext(t)
	v := c.CreateVolume(t, volName("noquota"), 1)
	mnt := c.Mount(t, v.Name)
	svc := volume.New(volume.Options{}, mapped(c, map[string]string{v.Name: mnt}))

	res, err := svc.Create(ctx, request(mustParse(t, "backend", "gluster", "servers", c.Host(), "volume", v.Name), "pvc-a", "ns", "a", 1<<30))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "not enforced") || !strings.Contains(res.Warnings[0], "quota "+v.Name+" enable") {
		t.Errorf("warnings = %q, want one saying the size is not enforced", res.Warnings)
	}
	_, err = svc.Create(ctx, request(mustParse(t, "backend", "gluster", "servers", c.Host(), "volume", v.Name, "quota", "gluster"), "pvc-b", "ns", "b", 1<<30))
	if !errors.Is(err, backend.ErrInvalid) || !strings.Contains(err.Error(), "quota is not enabled") {
		t.Errorf("quota: gluster without quota: %v", err)
	}
}

func TestVolumeMode(t *testing.T) {
	c := cluster(t)
	_, ctx := ktesting.NewTestContext(t)
	root := filepath.Join(c.BrickRoot(), fmt.Sprintf("volmode-%d", os.Getpid()))
	var roots []string
	for _, r := range []string{"r1", "r2", "r3"} {
		dir := filepath.Join(root, r)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		roots = append(roots, c.Host()+":"+dir)
	}
	mountsDir := t.TempDir()
	b := New(Options{Resolver: &sharemount.Resolver{MountsDir: mountsDir, Mounter: mount.New("")}})
	gids := &volumetest.GIDs{}
	svc := volume.New(volume.Options{GIDs: gids}, b)
	cli := NewCLI(&LocalExecutor{}, nil)

	const size = 256 << 20
	uid := fmt.Sprintf("%08x-0000-4000-8000-000000000001", os.Getpid())
	cfg := mustParse(t, "backend", "gluster", "servers", c.Host(), "mode", "volume", "brickRootPaths", strings.Join(roots, ","),
		"forceCreate", "true", "volumeOptions", "performance.quick-read off", "quota", "gluster", "onDelete", "delete",
		"volumeNamePrefix", "carvet")
	req := request(cfg, "pvc-"+uid, "db", "data-mongo-0", size)
	start := time.Now()
	res, err := svc.Create(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("volume mode Create took %s", time.Since(start).Round(time.Millisecond))
	name := res.ID.Share
	t.Cleanup(func() { // only if the test failed before deleting it
		if _, err := cli.VolumeInfo(context.Background(), name); err == nil {
			_, _ = cli.Run(context.Background(), "volume", "stop", name, "force")
			_, _ = cli.Run(context.Background(), "volume", "delete", name)
		}
	})
	if want := VolumeName("carvet", "db", "data-mongo-0", uid, req.Name); name != want || len(res.ID.Dir) != 0 {
		t.Fatalf("ID = %s, want whole volume %s", res.ID, want)
	}
	if _, err := volid.Parse(res.ID.String()); err != nil {
		t.Fatalf("ID does not round-trip: %v", err)
	}
	vol, err := cli.VolumeInfo(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if vol.Status != StatusStarted || vol.ReplicaCount != 3 || len(vol.Bricks) != 3 || vol.Type != "Replicate" {
		t.Fatalf("volume = %+v, want a started replica-3 volume", vol)
	}
	for i, br := range vol.Bricks {
		want := filepath.Join(root, fmt.Sprintf("r%d", i+1), name)
		if br.Path != want {
			t.Errorf("brick %d = %s, want %s", i, br.Path, want)
		}
		if fi, err := os.Stat(want); err != nil || !fi.IsDir() {
			t.Errorf("brick directory %s: %v", want, err)
		}
	}
	for k, want := range map[string]string{"performance.quick-read": "off", OptPV: req.Name, OptClaim: "db/data-mongo-0",
		"storage.owner-gid": fmt.Sprint(res.GID), "features.quota": "on", "features.quota-deem-statfs": "on"} {
		if got, _ := vol.Option(k); got != want {
			t.Errorf("option %s = %q, want %q", k, got, want)
		}
	}
	if got := hardLimit(t, c, name, "/"); got != size {
		t.Errorf("quota on / = %d, want %d", got, size)
	}
	if res.GID < params.DefaultGIDMin || len(res.Warnings) != 0 {
		t.Errorf("gid %d, warnings %q", res.GID, res.Warnings)
	}
	t.Run("MountedRoot", func(t *testing.T) {
		mnt := c.Mount(t, name)
		fi, err := os.Stat(mnt)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode()&os.ModeSetgid == 0 || fi.Mode().Perm() != 0o770 || int64(st.Gid) != res.GID {
			t.Errorf("root = %v gid %d, want drwxrws--- gid %d", fi.Mode(), st.Gid, res.GID)
		}
		waitDF(t, mnt, size)
		if got, err := b.ExpandVolume(ctx, res.ID, 2*size); err != nil || got != 2*size {
			t.Fatalf("ExpandVolume = %d, %v", got, err)
		}
		if got := hardLimit(t, c, name, "/"); got != 2*size {
			t.Errorf("quota on / after expansion = %d", got)
		}
	})

	// A retry finds the same volume; another PV never deletes it.
	again, err := svc.Create(ctx, req)
	if err != nil || again.ID.String() != res.ID.String() || again.GID != res.GID || again.CapacityBytes != 2*size {
		t.Fatalf("retry = %+v, %v; want %+v with the expanded size", again, err, res)
	}
	if got := hardLimit(t, c, name, "/"); got != 2*size {
		t.Errorf("quota on / after a retry = %d, want the expanded %d", got, 2*size)
	}
	if out, err := svc.Delete(ctx, "pvc-someone-else", res.ID); err != nil || out.Action != "kept-in-use" {
		t.Fatalf("Delete by another PV = %+v, %v", out, err)
	}

	start = time.Now()
	out, err := svc.Delete(ctx, req.Name, res.ID)
	if err != nil || out.Action != "deleted" || out.Where != "" {
		t.Fatalf("Delete = %+v, %v", out, err)
	}
	t.Logf("volume mode Delete took %s", time.Since(start).Round(time.Millisecond))
	if _, err := cli.VolumeInfo(ctx, name); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("volume still there: %v", err)
	}
	for _, br := range vol.Bricks {
		if _, err := os.Stat(br.Path); !os.IsNotExist(err) {
			t.Errorf("brick %s not removed: %v", br.Path, err)
		}
	}
	// Nothing of the volume stays mounted (glusterd's quota helper mount included).
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err != nil || strings.Contains(string(mi), name) {
		t.Errorf("a mount of %s survives its deletion (%v):\n%s", name, err, mi)
	}
	if out, err := svc.Delete(ctx, req.Name, res.ID); err != nil || out.Action != "absent" {
		t.Errorf("second Delete = %+v, %v", out, err)
	}
}

func TestVolumeModeArchive(t *testing.T) {
	c := cluster(t)
	_, ctx := ktesting.NewTestContext(t)
	root := filepath.Join(c.BrickRoot(), fmt.Sprintf("volarch-%d", os.Getpid()))
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	svc := volume.New(volume.Options{}, New(Options{}))
	cli := NewCLI(&LocalExecutor{}, nil)
	cfg := mustParse(t, "backend", "gluster", "servers", c.Host(), "mode", "volume", "replica", "1",
		"brickRootPaths", c.Host()+":"+root, "forceCreate", "true", "onDelete", "archive")
	res, err := svc.Create(ctx, request(cfg, "pvc-arch", "ns", "arch", 1<<30))
	if err != nil {
		t.Fatal(err)
	}
	name := res.ID.Share
	t.Cleanup(func() {
		_, _ = cli.Run(context.Background(), "volume", "stop", name, "force")
		_, _ = cli.Run(context.Background(), "volume", "delete", name)
	})
	// No mounts directory and no quota: both said in warnings.
	if len(res.Warnings) != 2 {
		t.Errorf("warnings = %q, want the root-mode and the no-quota warning", res.Warnings)
	}
	out, err := svc.Delete(ctx, "pvc-arch", res.ID)
	if err != nil || out.Action != "archived" || out.Where != name {
		t.Fatalf("Delete = %+v, %v", out, err)
	}
	vol, err := cli.VolumeInfo(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if at, ok := vol.Option(OptArchived); vol.Status != StatusStopped || !ok || at == "" {
		t.Errorf("archived volume: status %s, %s=%q", vol.StatusStr, OptArchived, at)
	}
}

func TestFailures(t *testing.T) {
	c := cluster(t)
	_, ctx := ktesting.NewTestContext(t)

	t.Run("MissingVolume", func(t *testing.T) {
		b := New(Options{Resolver: &sharemount.Resolver{MountsDir: t.TempDir(), Mounter: mount.New("")}})
		missing := volName("missing")
		_, err := b.Share(ctx, []string{c.Host()}, missing)
		if !errors.Is(err, backend.ErrNotFound) || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "does not exist") {
			t.Errorf("Share of a missing volume: %v", err)
		}
		id := volid.ID{Backend: "gluster", Servers: []string{c.Host()}, Share: missing, Dir: []string{"ns", "a"}, OnDelete: "delete"}
		if err := b.SetLimit(ctx, id, 1<<20); !errors.Is(err, backend.ErrNotFound) || !strings.Contains(err.Error(), missing) {
			t.Errorf("SetLimit on a missing volume: %v", err)
		}
	})

	t.Run("GlusterdStopped", func(t *testing.T) {
		c.RequireOwned(t)
		v := c.CreateVolume(t, volName("down"), 1)
		c.EnableQuota(t, v.Name)
		mnt := c.Mount(t, v.Name)
		svc := volume.New(volume.Options{}, mapped(c, map[string]string{v.Name: mnt}))
		req := request(mustParse(t, "backend", "gluster", "servers", c.Host(), "volume", v.Name), "pvc-down", "ns", "down", 32<<20)

		if err := c.StopGlusterd(); err != nil {
			t.Fatal(err)
		}
		_, err := svc.Create(ctx, req)
		if !errors.Is(err, backend.ErrUnavailable) || !strings.Contains(err.Error(), "glusterd") {
			t.Errorf("Create with glusterd stopped: %v; want ErrUnavailable naming glusterd", err)
		}
		t.Logf("error with glusterd stopped: %v", err)
		if err := c.RestartGlusterd(); err != nil {
			t.Fatal(err)
		}
		res, err := svc.Create(ctx, req)
		if err != nil {
			t.Fatalf("retry after restart: %v", err)
		}
		if got := hardLimit(t, c, v.Name, "/"+res.ID.DirPath()); got != 32<<20 {
			t.Errorf("hard limit after the retry = %d", got)
		}
	})
}

// TestCLIEndsOptions: every argument after carve's own options reaches
// glusterd as a word, never as a CLI option. Without "--", `volume info
// --version` prints the CLI's version and exits 0.
func TestCLIEndsOptions(t *testing.T) {
	cluster(t)
	_, ctx := ktesting.NewTestContext(t)
	cli := NewCLI(&LocalExecutor{}, nil)
	for _, name := range []string{"--version", "--remote-host=203.0.113.1"} {
		_, err := cli.VolumeInfo(ctx, name)
		if !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("volume info %s: %v; want glusterd's \"does not exist\"", name, err)
		}
	}
}
