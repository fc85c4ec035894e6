package nfs

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2/ktesting"

	"github.com/carve-csi/carve/internal/testenv/loopfs"
	"github.com/carve-csi/carve/internal/testenv/sshd"
	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/sharemount"
	"github.com/carve-csi/carve/pkg/volume"
	"github.com/carve-csi/carve/pkg/volume/volumetest"
)

// buildHelper builds cmd/carve-btrfs for the ssh server to run.
func buildHelper(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "carve-btrfs")
	cmd := exec.Command("go", "build", "-o", out, "github.com/carve-csi/carve/cmd/carve-btrfs")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build carve-btrfs: %v: %s", err, b)
	}
	return out
}

// fuseView mounts src again through bindfs, a FUSE filesystem: carve's
// view of the share as over NFS, where no btrfs ioctl or qgroup reaches
// the filesystem, so only the helper on the "server" can do that work.
func fuseView(t *testing.T, src string) string {
	t.Helper()
	if _, err := exec.LookPath("bindfs"); err != nil {
		if os.Getenv("CARVE_REQUIRE_REAL") == "1" {
			t.Fatal("CARVE_REQUIRE_REAL=1: bindfs is not installed")
		}
		t.Skip("bindfs is not installed (apt-get install bindfs)")
	}
	mnt := filepath.Join(t.TempDir(), "view")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("bindfs", src, mnt).CombinedOutput(); err != nil {
		t.Fatalf("bindfs %s %s: %v: %s", src, mnt, err, out)
	}
	loopfs.UnmountAtCleanup(t, mnt)
	return mnt
}

// sshEnv is a btrfs-layout class whose share is export on the "server"
// 127.0.0.1, reached by carve through a FUSE view of it and by the helper
// through a real sshd.
func sshEnv(t *testing.T, srv *sshd.Server, helper, export string) volumetest.Env {
	t.Helper()
	if err := dirvol.Declare(export); err != nil {
		t.Fatal(err)
	}
	view := fuseView(t, export)
	m := sharemount.Map{}
	if err := m.Set("127.0.0.1:" + export + "=" + view); err != nil {
		t.Fatal(err)
	}
	b := NewWithOptions(&sharemount.Resolver{Map: m}, Options{
		SecretData: func(_ context.Context, ns, name string) (map[string][]byte, error) {
			if ns != "carve" || name != "btrfs-ssh" {
				return nil, errors.New("no such Secret")
			}
			return map[string][]byte{"ssh-privatekey": srv.PrivateKey, "known_hosts": srv.KnownHosts}, nil
		},
		StateDir:   t.TempDir(),
		SSHOptions: srv.SSHOptions(),
	})
	return volumetest.Env{
		Backend: b,
		Params: map[string]string{"backend": "nfs", "server": "127.0.0.1", "share": export, "layout": "btrfs",
			"btrfsExecutor": "ssh", "btrfsExecutorSecretName": "btrfs-ssh", "btrfsExecutorSecretNamespace": "carve", "btrfsHelper": helper},
		LocalRoot: view,
	}
}

// mkExport makes the exported directory below a filesystem's root, so
// the filesystem also has room outside the share.
func mkExport(t *testing.T, fsRoot string) string {
	t.Helper()
	export := filepath.Join(fsRoot, "export")
	if err := os.Mkdir(export, 0o755); err != nil {
		t.Fatal(err)
	}
	return export
}

func isSubvol(p string) bool {
	var st unix.Stat_t
	return unix.Lstat(p, &st) == nil && st.Ino == 256 && st.Mode&unix.S_IFMT == unix.S_IFDIR
}

func quotaAt(t *testing.T, p string) *dirvol.Quota {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	q, err := dirvol.SubvolumeQuota(fd)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// The btrfs layout over ssh (btrfsExecutor ssh): carve reaches the share
// through a view on which no btrfs call works, and carve-btrfs, built
// here, does them on the server through a real sshd on 127.0.0.1.
func TestBtrfsOverSSH(t *testing.T) {
	srv := sshd.Start(t)
	helper := buildHelper(t)

	t.Run("SizeSnapshotsRestoresClones", func(t *testing.T) {
		_, ctx := ktesting.NewTestContext(t)
		fs := loopfs.Btrfs(t, 512<<20)
		export := mkExport(t, fs)
		env := sshEnv(t, srv, helper, export)
		svc := testService(ctx, env.Backend)
		cfg, err := params.Parse(env.Params)
		if err != nil {
			t.Fatal(err)
		}
		res, err := createClaim(t, ctx, svc, env.Params, "c", 8<<20)
		if err != nil {
			t.Fatal(err)
		}
		if !isSubvol(filepath.Join(export, "ns", "c")) {
			t.Fatal("the claim is not a subvolume on the server")
		}
		vol := filepath.Join(env.LocalRoot, res.ID.DirPath())
		n, err := write(filepath.Join(vol, "f"), 16<<20)
		if !errors.Is(err, unix.EDQUOT) || n > 8<<20 {
			t.Fatalf("16 MiB into an 8 MiB claim: %d bytes, %v", n, err)
		}
		t.Logf("16 MiB into an 8 MiB claim through carve's view: %d bytes written, then %v", n, err)
		if got, err := svc.Expand(ctx, res.ID, 24<<20); err != nil || got != 24<<20 {
			t.Fatalf("Expand: %d %v", got, err)
		}
		if n, err := write(filepath.Join(vol, "g"), 8<<20); err != nil {
			t.Fatalf("8 MiB more after expanding to 24 MiB: %d %v", n, err)
		}
		share, err := svc.Share(ctx, res.ID)
		if err != nil {
			t.Fatal(err)
		}
		// Read through the helper: the view has no qgroups.
		if q, err := share.Quota(res.ID.Dir); err != nil || q == nil || q.LimitBytes != 24<<20 {
			t.Fatalf("quota after Expand, through the helper: %+v %v", q, err)
		}
		if q := quotaAt(t, filepath.Join(export, "ns", "c")); q == nil || q.LimitBytes != 24<<20 {
			t.Fatalf("quota after Expand on the server: %+v", q)
		}

		// A snapshot is a read-only subvolume; a restore and a clone are
		// writable subvolumes with the claim's size.
		if err := os.WriteFile(filepath.Join(vol, "marker"), []byte("before"), 0o644); err != nil {
			t.Fatal(err)
		}
		snap, err := svc.CreateSnapshot(ctx, "snap-1", res.ID)
		if err != nil {
			t.Fatal(err)
		}
		data := filepath.Join(export, ".carve-snapshots", snap.ID.Entry, "data")
		if !snap.Stats.Subvolume || !isSubvol(data) {
			t.Fatalf("snapshot %+v: subvolume on the server %v", snap.Stats, isSubvol(data))
		}
		if err := os.WriteFile(filepath.Join(data, "x"), nil, 0o644); !errors.Is(err, unix.EROFS) {
			t.Fatalf("write into the snapshot on the server: %v, want EROFS", err)
		}
		if err := os.WriteFile(filepath.Join(vol, "marker"), []byte("after"), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			claim string
			src   *volume.Source
			want  string
		}{
			{"restored", &volume.Source{Snapshot: &snap.ID}, "before"},
			{"cloned", &volume.Source{Volume: &res.ID}, "after"},
		} {
			r := volume.Request{Name: "pvc-" + tc.claim, Namespace: "ns", Claim: tc.claim, Config: cfg, SizeBytes: 32 << 20,
				Source: tc.src, Vars: params.Vars{Namespace: "ns", Name: tc.claim, PVName: "pvc-" + tc.claim}}
			got, err := svc.Create(ctx, r)
			if err != nil {
				t.Fatalf("%s: %v", tc.claim, err)
			}
			if b, err := os.ReadFile(filepath.Join(env.LocalRoot, got.ID.DirPath(), "marker")); err != nil || string(b) != tc.want {
				t.Errorf("%s: marker %q %v, want %q", tc.claim, b, err, tc.want)
			}
			p := filepath.Join(export, "ns", tc.claim)
			if q := quotaAt(t, p); !isSubvol(p) || q == nil || q.LimitBytes != 32<<20 {
				t.Errorf("%s on the server: subvolume %v, quota %+v, want a 32 MiB limit", tc.claim, isSubvol(p), q)
			}
		}

		// Deleting the snapshot: a read-only subvolume, which carve cannot
		// empty file by file through its view; the helper drops it.
		if err := svc.DeleteSnapshot(ctx, snap.ID); err != nil {
			t.Fatal(err)
		}
		svc.WaitPurges()
		if _, err := os.Lstat(data); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("snapshot data after delete: %v", err)
		}
		if left, _ := os.ReadDir(filepath.Join(export, ".carve-trash")); len(left) != 0 {
			t.Errorf("trash after purge: %v", left)
		}
	})

	// A restarted controller has seen no StorageClass yet: calls that carry
	// only a volume ID learn the share's executor from carve's classes.
	t.Run("AfterRestart", func(t *testing.T) {
		_, ctx := ktesting.NewTestContext(t)
		fs := loopfs.Btrfs(t, 512<<20)
		export := mkExport(t, fs)
		env := sshEnv(t, srv, helper, export)
		first := env.Backend.(*Backend)
		svc := testService(ctx, first)
		res, err := createClaim(t, ctx, svc, env.Params, "c", 8<<20)
		if err != nil {
			t.Fatal(err)
		}
		listed := 0
		opts := first.opts
		opts.Classes = func(context.Context) ([]map[string]string, error) {
			listed++
			other := map[string]string{"backend": "nfs", "server": "127.0.0.1", "share": "/elsewhere", "layout": "btrfs",
				"btrfsExecutor": "ssh", "btrfsExecutorSecretName": "x", "btrfsExecutorSecretNamespace": "y"}
			return []map[string]string{{"backend": "nfs", "share": "no server"}, other, env.Params}, nil
		}
		restarted := NewWithOptions(first.resolver, opts)
		svc = testService(ctx, restarted)
		if got, err := svc.Expand(ctx, res.ID, 24<<20); err != nil || got != 24<<20 {
			t.Fatalf("Expand after a restart: %d %v", got, err)
		}
		if q := quotaAt(t, filepath.Join(export, "ns", "c")); q == nil || q.LimitBytes != 24<<20 {
			t.Fatalf("quota on the server after Expand after a restart: %+v", q)
		}
		snap, err := svc.CreateSnapshot(ctx, "snap-1", res.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !snap.Stats.Subvolume {
			t.Fatalf("snapshot after a restart: %+v, want a subvolume snapshot", snap.Stats)
		}
		if listed != 1 {
			t.Errorf("StorageClasses listed %d times, want once", listed)
		}
		if err := svc.DeleteSnapshot(ctx, snap.ID); err != nil {
			t.Fatal(err)
		}
		svc.WaitPurges()
	})

	t.Run("SymlinksRefusedOnTheServer", func(t *testing.T) {
		_, ctx := ktesting.NewTestContext(t)
		fs := loopfs.Btrfs(t, 256<<20)
		export := mkExport(t, fs)
		// A subvolume outside the share, which a planted symlink points at.
		if err := os.Mkdir(filepath.Join(fs, "outside"), 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("btrfs", "subvolume", "create", filepath.Join(fs, "outside", "victim")).CombinedOutput(); err != nil {
			t.Fatalf("btrfs subvolume create: %v: %s", err, out)
		}
		env := sshEnv(t, srv, helper, export)
		b := env.Backend.(*Backend)
		svc := testService(ctx, b)
		res, err := createClaim(t, ctx, svc, env.Params, "victim", 8<<20)
		if err != nil {
			t.Fatal(err)
		}
		// The volume's parent replaced by a symlink to outside the share.
		if err := os.Rename(filepath.Join(export, "ns"), filepath.Join(export, "ns-moved")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("../outside", filepath.Join(export, "ns")); err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Expand(ctx, res.ID, 16<<20); !errors.Is(err, backend.ErrConflict) || !errors.Is(err, dirvol.ErrUnsafe) {
			t.Errorf("Expand through a planted symlink: %v, want a conflict (unsafe path)", err)
		}
		// carve's own resolution refused above; the helper refuses too, as
		// when the symlink is planted between carve's check and its call.
		runner := b.btrfs[sharemount.Key("127.0.0.1", export)].runner
		for _, args := range [][]string{
			{"limit", "ns/victim", "1048576"},
			{"create", "ns", "new"},
			{"snapshot", "ns/victim", "ns-moved", "copy", "rw"},
			{"snapshot", "ns-moved/victim", "ns", "copy", "rw"},
		} {
			out, err := runner.RunBtrfs(ctx, append([]string{"--"}, args...))
			var a dirvol.BtrfsAnswer
			if jerr := json.Unmarshal(out, &a); jerr != nil || err == nil || a.Error == nil || a.Error.Kind != "unsafe" {
				t.Errorf("helper %v through the symlink: %s %v, want an unsafe error", args, out, err)
			}
		}
		for _, args := range [][]string{
			{"limit", "../outside/victim", "1048576"},
			{"remove", "ns-moved", "victim"},
			{"remove", "", "ns-moved"},
		} {
			out, err := runner.RunBtrfs(ctx, append([]string{"--"}, args...))
			var a dirvol.BtrfsAnswer
			if jerr := json.Unmarshal(out, &a); jerr != nil || err == nil || a.Error == nil || a.Error.Kind != "invalid" {
				t.Errorf("helper %v: %s %v, want the request refused", args, out, err)
			}
		}
		if q := quotaAt(t, filepath.Join(fs, "outside", "victim")); q != nil && q.LimitBytes != 0 {
			t.Errorf("the subvolume outside the share got a limit: %+v", q)
		}
		for _, p := range []string{filepath.Join(fs, "outside", "new"), filepath.Join(fs, "outside", "copy"), filepath.Join(export, "ns-moved", "copy")} {
			if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s was made: %v", p, err)
			}
		}
		if !isSubvol(filepath.Join(export, "ns-moved", "victim")) {
			t.Error("the moved volume is gone")
		}
	})

	refused := func(t *testing.T, export string, extra map[string]string) error {
		t.Helper()
		_, ctx := ktesting.NewTestContext(t)
		env := sshEnv(t, srv, helper, export)
		for k, v := range extra {
			env.Params[k] = v
		}
		_, err := createClaim(t, ctx, testService(ctx, env.Backend), env.Params, "c", 1<<20)
		if _, serr := os.Lstat(filepath.Join(export, "ns", "c")); !errors.Is(serr, os.ErrNotExist) {
			t.Errorf("something was carved: %v", serr)
		}
		return err
	}
	t.Run("NotBtrfs", func(t *testing.T) {
		export := mkExport(t, t.TempDir())
		err := refused(t, export, nil)
		if !errors.Is(err, backend.ErrConflict) || !errors.Is(err, dirvol.ErrLayout) || !strings.Contains(err.Error(), "is not (use layout directory") {
			t.Fatalf("btrfs layout over ssh on a share that is not btrfs: %v", err)
		}
		t.Logf("refused: %v", err)
	})
	t.Run("QuotaOff", func(t *testing.T) {
		export := mkExport(t, loopfs.BtrfsNoQuota(t, 256<<20))
		err := refused(t, export, nil)
		if !errors.Is(err, backend.ErrConflict) || !errors.Is(err, dirvol.ErrLayout) || !strings.Contains(err.Error(), "quota is off") ||
			!strings.Contains(err.Error(), export) {
			t.Fatalf("btrfs layout over ssh with quota off: %v", err)
		}
		t.Logf("refused: %v", err)
	})
	t.Run("HelperMissing", func(t *testing.T) {
		export := mkExport(t, loopfs.Btrfs(t, 256<<20))
		err := refused(t, export, map[string]string{"btrfsHelper": "/nonexistent/carve-btrfs"})
		if !errors.Is(err, backend.ErrUnavailable) || !strings.Contains(err.Error(), "/nonexistent/carve-btrfs") {
			t.Fatalf("helper not installed: %v", err)
		}
		t.Logf("refused: %v", err)
	})

	// The core's policy holds with the helper doing every btrfs call.
	t.Run("Conformance", func(t *testing.T) {
		if testing.Short() {
			t.Skip("-short: every ssh call costs a process start on both ends; 14 cases")
		}
		volumetest.Run(t, func(t *testing.T) volumetest.Env {
			return sshEnv(t, srv, helper, mkExport(t, loopfs.Btrfs(t, 512<<20)))
		})
	})
}
