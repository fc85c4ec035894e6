// Package volumetest is the conformance suite every carve backend passes:
// the same claims, conflicts and deletions, through the same volume service.
package volumetest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/klog/v2/ktesting"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/volume"
)

// Env is one backend under test.
type Env struct {
	Backend backend.Backend
	// Params are StorageClass parameters that reach the backend's share;
	// cases add pathPattern, onDelete and ownership.
	Params map[string]string
	// LocalRoot is where the share's content is visible to the test.
	LocalRoot string
}

// FakeCluster plays the PV informer: which PVs point where, and whether
// their claims still exist.
type FakeCluster struct {
	mu   sync.Mutex
	refs map[string][]volume.Ref
}

// Set replaces the PVs known at a location.
func (f *FakeCluster) Set(location string, refs ...volume.Ref) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refs == nil {
		f.refs = map[string][]volume.Ref{}
	}
	f.refs[location] = refs
}

// Referrers implements volume.Referrers.
func (f *FakeCluster) Referrers(_ context.Context, loc string) ([]volume.Ref, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]volume.Ref(nil), f.refs[loc]...), nil
}

// Nested implements volume.Referrers.
func (f *FakeCluster) Nested(_ context.Context, loc string) ([]volume.Ref, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []volume.Ref
	for l, refs := range f.refs {
		if strings.HasPrefix(l, loc+"/") {
			out = append(out, refs...)
		}
	}
	return out, nil
}

// GIDs is a simple in-memory volume.GIDAllocator for tests.
type GIDs struct {
	mu   sync.Mutex
	used map[int64]bool
}

// Allocate implements volume.GIDAllocator.
func (g *GIDs) Allocate(_ context.Context, min, max int64) (int64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.used == nil {
		g.used = map[int64]bool{}
	}
	for i := min; i <= max; i++ {
		if !g.used[i] {
			g.used[i] = true
			return i, nil
		}
	}
	return 0, errors.New("full")
}

// Reserve implements volume.GIDAllocator.
func (g *GIDs) Reserve(gid int64) { g.mu.Lock(); g.used[gid] = true; g.mu.Unlock() }

// Release implements volume.GIDAllocator.
func (g *GIDs) Release(gid int64) { g.mu.Lock(); delete(g.used, gid); g.mu.Unlock() }

type fixture struct {
	t       *testing.T
	ctx     context.Context
	env     Env
	cluster *FakeCluster
	svc     *volume.Service
}

func newFixture(t *testing.T, newEnv func(t *testing.T) Env) *fixture {
	_, ctx := ktesting.NewTestContext(t)
	env := newEnv(t)
	cluster := &FakeCluster{}
	svc := volume.New(volume.Options{Referrers: cluster, GIDs: &GIDs{}, PurgeContext: ctx}, env.Backend)
	return &fixture{t: t, ctx: ctx, env: env, cluster: cluster, svc: svc}
}

func (f *fixture) config(extra ...string) *params.Config {
	f.t.Helper()
	p := map[string]string{}
	for k, v := range f.env.Params {
		p[k] = v
	}
	for i := 0; i+1 < len(extra); i += 2 {
		p[extra[i]] = extra[i+1]
	}
	cfg, err := params.Parse(p)
	if err != nil {
		f.t.Fatalf("Parse: %v", err)
	}
	return cfg
}

func req(cfg *params.Config, pv, ns, claim string) volume.Request {
	return volume.Request{Name: pv, Namespace: ns, Claim: claim, Config: cfg,
		Vars: params.Vars{Namespace: ns, Name: claim, PVName: pv}}
}

func (f *fixture) create(r volume.Request) *volume.Result {
	f.t.Helper()
	res, err := f.svc.Create(f.ctx, r)
	if err != nil {
		f.t.Fatalf("Create(%s): %v", r.Name, err)
	}
	return res
}

func (f *fixture) local(res *volume.Result, name ...string) string {
	return filepath.Join(append([]string{f.env.LocalRoot, res.ID.DirPath()}, name...)...)
}

// Run runs every case against fresh environments from newEnv.
func Run(t *testing.T, newEnv func(t *testing.T) Env) {
	t.Run("CreateIsIdempotent", func(t *testing.T) {
		f := newFixture(t, newEnv)
		cfg := f.config()
		a := f.create(req(cfg, "pvc-1", "db", "data-mongo-0"))
		if a.Reattached || a.GID < params.DefaultGIDMin {
			t.Errorf("first create: reattached=%v gid=%d", a.Reattached, a.GID)
		}
		if got := a.ID.DirPath(); got != "db/data-mongo-0" {
			t.Errorf("dir = %q", got)
		}
		if err := os.WriteFile(f.local(a, "marker"), []byte("m"), 0o644); err != nil {
			t.Fatal(err)
		}
		b := f.create(req(cfg, "pvc-1", "db", "data-mongo-0"))
		if b.ID.String() != a.ID.String() || b.Reattached || b.GID != a.GID {
			t.Errorf("second create = %+v, want same volume %+v", b, a)
		}
		if _, err := os.Stat(f.local(a, "marker")); err != nil {
			t.Errorf("data lost: %v", err)
		}
	})

	t.Run("ReattachRetainedData", func(t *testing.T) {
		f := newFixture(t, newEnv)
		cfg := f.config()
		a := f.create(req(cfg, "pvc-old", "db", "data-mongo-0"))
		if err := os.WriteFile(f.local(a, "marker"), []byte("m0"), 0o644); err != nil {
			t.Fatal(err)
		}
		// Claim deleted, PV Released: not live.
		f.cluster.Set(a.ID.Location(), volume.Ref{PV: "pvc-old", Namespace: "db", Live: false})
		b := f.create(req(cfg, "pvc-new", "db", "data-mongo-0"))
		if !b.Reattached || b.ID.String() != a.ID.String() || b.GID != a.GID {
			t.Errorf("re-attach = %+v, want reattached to %s with gid %d", b, a.ID, a.GID)
		}
		if !strings.Contains(b.Message, "re-attached") {
			t.Errorf("message %q", b.Message)
		}
		if data, err := os.ReadFile(f.local(b, "marker")); err != nil || string(data) != "m0" {
			t.Errorf("marker = %q, %v", data, err)
		}
	})

	t.Run("LivePVBlocksSecondClaim", func(t *testing.T) {
		f := newFixture(t, newEnv)
		cfg := f.config()
		a := f.create(req(cfg, "pvc-a", "db", "data"))
		f.cluster.Set(a.ID.Location(), volume.Ref{PV: "pvc-a", Namespace: "db", Live: true})
		_, err := f.svc.Create(f.ctx, req(cfg, "pvc-b", "db", "data"))
		if !errors.Is(err, backend.ErrConflict) || !strings.Contains(err.Error(), "pvc-a") {
			t.Fatalf("second claim: %v, want ErrConflict naming pvc-a", err)
		}
		// And a PV that is not yet visible in the cluster (just provisioned) counts too.
		c := f.create(req(cfg, "pvc-c", "db", "other"))
		_, err = f.svc.Create(f.ctx, req(cfg, "pvc-d", "db", "other"))
		if !errors.Is(err, backend.ErrConflict) || !strings.Contains(err.Error(), c.ID.DirPath()) {
			t.Fatalf("claim racing an unseen PV: %v, want ErrConflict", err)
		}
	})

	t.Run("NeverAcrossNamespaces", func(t *testing.T) {
		f := newFixture(t, newEnv)
		cfg := f.config("pathPattern", "${pvc.metadata.name}")
		a := f.create(req(cfg, "pvc-a", "tenant-a", "data"))
		f.cluster.Set(a.ID.Location(), volume.Ref{PV: "pvc-a", Namespace: "tenant-a", Live: false})
		_, err := f.svc.Create(f.ctx, req(cfg, "pvc-b", "tenant-b", "data"))
		if !errors.Is(err, backend.ErrConflict) || !strings.Contains(err.Error(), "tenant-a") {
			t.Fatalf("cross-namespace re-attach: %v, want ErrConflict", err)
		}
		// Same namespace with a Released PV of that namespace: allowed.
		b := f.create(req(cfg, "pvc-c", "tenant-a", "data"))
		if !b.Reattached {
			t.Error("same-namespace re-attach refused")
		}
	})

	t.Run("UnknownDataNeedsNamespacedPattern", func(t *testing.T) {
		f := newFixture(t, newEnv)
		// A directory carve has no record of and no PV for (copied in by hand).
		if err := os.MkdirAll(filepath.Join(f.env.LocalRoot, "data"), 0o755); err != nil {
			t.Fatal(err)
		}
		_, err := f.svc.Create(f.ctx, req(f.config("pathPattern", "${pvc.metadata.name}"), "pvc-x", "ns", "data"))
		if !errors.Is(err, backend.ErrConflict) || !strings.Contains(err.Error(), "pvc.metadata.namespace") {
			t.Fatalf("un-namespaced re-attach: %v", err)
		}
		if err := os.MkdirAll(filepath.Join(f.env.LocalRoot, "ns", "data"), 0o755); err != nil {
			t.Fatal(err)
		}
		if res := f.create(req(f.config(), "pvc-y", "ns", "data")); !res.Reattached || res.GID != -1 {
			t.Errorf("namespaced re-attach = %+v (foreign dir: no GID to advertise)", res)
		}
	})

	t.Run("SymlinkNeverFollowed", func(t *testing.T) {
		f := newFixture(t, newEnv)
		cfg := f.config("pathPattern", "${pvc.metadata.namespace}/${pvc.metadata.name}/data")
		a := f.create(req(cfg, "pvc-a", "ns", "a"))
		outside := t.TempDir()
		// The pod of claim "a" cannot reach ns/b, but someone with the
		// namespace directory could: ns/b -> outside.
		if err := os.Symlink(outside, filepath.Join(f.env.LocalRoot, "ns", "b")); err != nil {
			t.Fatal(err)
		}
		_, err := f.svc.Create(f.ctx, req(cfg, "pvc-b", "ns", "b"))
		if !errors.Is(err, backend.ErrConflict) {
			t.Fatalf("create through symlink: %v, want ErrConflict", err)
		}
		if entries, _ := os.ReadDir(outside); len(entries) != 0 {
			t.Fatalf("created outside the share: %v", entries)
		}
		_ = a
	})

	t.Run("ExplicitOwnership", func(t *testing.T) {
		f := newFixture(t, newEnv)
		res := f.create(req(f.config("uid", "999", "gid", "999", "mode", "0750"), "pvc-o", "ns", "o"))
		if res.GID != 999 {
			t.Errorf("gid = %d, want 999", res.GID)
		}
		fi, err := os.Stat(f.local(res))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o750 {
			t.Errorf("mode = %v, want 0750", fi.Mode())
		}
	})

	t.Run("DeletePolicies", func(t *testing.T) {
		f := newFixture(t, newEnv)
		keep := f.create(req(f.config("onDelete", "delete"), "pvc-keep", "ns", "keep"))
		if err := os.WriteFile(f.local(keep, "f"), []byte("keep"), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, policy := range []string{"retain", "archive", "delete"} {
			res := f.create(req(f.config("onDelete", policy), "pvc-"+policy, "ns", policy))
			if err := os.WriteFile(f.local(res, "f"), []byte(policy), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := f.svc.Delete(f.ctx, "pvc-"+policy, res.ID)
			if err != nil {
				t.Fatalf("Delete(%s): %v", policy, err)
			}
			f.svc.WaitPurges()
			_, statErr := os.Stat(f.local(res))
			switch policy {
			case "retain":
				if out.Action != backend.ActionRetained || statErr != nil {
					t.Errorf("retain: %+v, dir %v", out, statErr)
				}
			case "archive":
				data, err := os.ReadFile(filepath.Join(f.env.LocalRoot, out.Where, "f"))
				if out.Action != backend.ActionArchived || !os.IsNotExist(statErr) || err != nil || string(data) != "archive" {
					t.Errorf("archive: %+v, dir %v, archived data %q %v", out, statErr, data, err)
				}
			case "delete":
				trash, _ := os.ReadDir(filepath.Join(f.env.LocalRoot, ".carve-trash"))
				if out.Action != backend.ActionDeleted || !os.IsNotExist(statErr) || len(trash) != 0 {
					t.Errorf("delete: %+v, dir %v, trash %v", out, statErr, trash)
				}
			}
			// Deleting again (a retry) is fine.
			if _, err := f.svc.Delete(f.ctx, "pvc-"+policy, res.ID); err != nil {
				t.Errorf("second Delete(%s): %v", policy, err)
			}
		}
		if data, err := os.ReadFile(f.local(keep, "f")); err != nil || string(data) != "keep" {
			t.Errorf("other claim's data changed: %q %v", data, err)
		}
	})

	t.Run("DeleteKeepsDataOfLivePV", func(t *testing.T) {
		f := newFixture(t, newEnv)
		cfg := f.config("onDelete", "delete")
		old := f.create(req(cfg, "pvc-old", "ns", "d"))
		f.cluster.Set(old.ID.Location(), volume.Ref{PV: "pvc-old", Namespace: "ns"})
		f.create(req(cfg, "pvc-new", "ns", "d")) // re-attached
		f.cluster.Set(old.ID.Location(), volume.Ref{PV: "pvc-old", Namespace: "ns"}, volume.Ref{PV: "pvc-new", Namespace: "ns", Live: true})
		out, err := f.svc.Delete(f.ctx, "pvc-old", old.ID)
		if err != nil || out.Action != backend.ActionKeptInUse || out.Where != "pvc-new" {
			t.Fatalf("Delete of the old PV = %+v, %v; want kept for pvc-new", out, err)
		}
		if _, err := os.Stat(f.local(old)); err != nil {
			t.Errorf("directory of a live PV removed: %v", err)
		}
	})

	t.Run("VolumesNeverNest", func(t *testing.T) {
		f := newFixture(t, newEnv)
		inner := f.config("onDelete", "delete")
		outer := f.config("onDelete", "delete", "pathPattern", "${pvc.metadata.namespace}")
		in := f.create(req(inner, "pvc-inner", "nest", "inner"))
		f.cluster.Set(in.ID.Location(), volume.Ref{PV: "pvc-inner", Namespace: "nest", Live: true})
		if err := os.WriteFile(f.local(in, "f"), []byte("live"), 0o644); err != nil {
			t.Fatal(err)
		}
		// A class rendering the parent must not adopt it.
		_, err := f.svc.Create(f.ctx, req(outer, "pvc-outer", "nest", "outer"))
		if !errors.Is(err, backend.ErrConflict) || !strings.Contains(err.Error(), "pvc-inner") {
			t.Fatalf("outer over a live inner volume: %v, want ErrConflict naming pvc-inner", err)
		}
		// A delete naming the parent (no carve record) removes nothing.
		parent := in.ID
		parent.Dir = parent.Dir[:1]
		if out, err := f.svc.Delete(f.ctx, "", parent); err != nil || out.Action != backend.ActionKeptUnrecorded {
			t.Fatalf("Delete of the parent = %+v, %v; want kept-unrecorded", out, err)
		}
		f.svc.WaitPurges()
		if data, err := os.ReadFile(f.local(in, "f")); err != nil || string(data) != "live" {
			t.Fatalf("inner volume's data after deleting its parent: %q %v", data, err)
		}
		// The other order: nothing is carved inside an existing volume.
		out := f.create(req(outer, "pvc-outer2", "other", "x"))
		_, err = f.svc.Create(f.ctx, req(inner, "pvc-inner2", "other", "y"))
		if !errors.Is(err, backend.ErrConflict) || !strings.Contains(err.Error(), "pvc-outer2") {
			t.Fatalf("inner inside an outer volume: %v, want ErrConflict naming pvc-outer2", err)
		}
		if _, err := os.Stat(filepath.Join(f.local(out), "y")); err == nil {
			t.Fatal("a volume was carved inside another volume")
		}
	})

	t.Run("RecordOutsideVolume", func(t *testing.T) {
		f := newFixture(t, newEnv)
		res := f.create(req(f.config(), "pvc-r", "ns", "r"))
		sh, err := dirvol.Open(f.env.LocalRoot)
		if err != nil {
			t.Fatal(err)
		}
		info, err := sh.Lookup(res.ID.Dir)
		if err != nil || info.Meta == nil || info.Meta.PV != "pvc-r" || time.Since(info.Meta.Updated) > time.Hour {
			t.Fatalf("record = %+v, %v", info, err)
		}
		entries, _ := os.ReadDir(f.local(res))
		if len(entries) != 0 {
			t.Errorf("carve wrote into the volume: %v", entries)
		}
	})
	runSnapshots(t, newEnv)
}
