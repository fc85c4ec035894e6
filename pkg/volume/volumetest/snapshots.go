package volumetest

import (
	"errors"
	"os"
	"testing"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/params"
	"github.com/carve-csi/carve/pkg/volume"
)

func (f *fixture) write(res *volume.Result, name, data string) {
	f.t.Helper()
	if err := os.WriteFile(f.local(res, name), []byte(data), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) read(res *volume.Result, name string) string {
	f.t.Helper()
	data, err := os.ReadFile(f.local(res, name))
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(data)
}

func sized(r volume.Request, bytes int64, src *volume.Source) volume.Request {
	r.SizeBytes, r.Source = bytes, src
	return r
}

// runSnapshots: snapshots, restores and clones through the volume service.
func runSnapshots(t *testing.T, newEnv func(t *testing.T) Env) {
	t.Run("SnapshotRestoreClone", func(t *testing.T) {
		f := newFixture(t, newEnv)
		cfg := f.config()
		src := f.create(sized(req(cfg, "pvc-src", "db", "src"), 1<<20, nil))
		f.write(src, "before", "1")
		snap, err := f.svc.CreateSnapshot(f.ctx, "snap-1", src.ID)
		if err != nil {
			t.Fatalf("CreateSnapshot: %v", err)
		}
		if snap.SizeBytes != 1<<20 || snap.SourceID != src.ID.String() {
			t.Errorf("snapshot = %+v", snap)
		}
		again, err := f.svc.CreateSnapshot(f.ctx, "snap-1", src.ID)
		if err != nil || again.ID.String() != snap.ID.String() {
			t.Errorf("retry = %+v, %v; want %s", again, err, snap.ID)
		}
		f.write(src, "after", "2")

		restored := f.create(sized(req(cfg, "pvc-restored", "db", "restored"), 1<<20, &volume.Source{Snapshot: &snap.ID}))
		if got := f.read(restored, "before"); got != "1" {
			t.Errorf("restored before = %q", got)
		}
		if _, err := os.Stat(f.local(restored, "after")); !os.IsNotExist(err) {
			t.Errorf("the restore holds a file written after the snapshot: %v", err)
		}
		retry := f.create(sized(req(cfg, "pvc-restored", "db", "restored"), 1<<20, &volume.Source{Snapshot: &snap.ID}))
		if retry.ID.String() != restored.ID.String() {
			t.Errorf("retried restore = %s, want %s", retry.ID, restored.ID)
		}
		if _, err := f.svc.Create(f.ctx, req(cfg, "pvc-restored", "db", "restored")); !errors.Is(err, backend.ErrExists) {
			t.Errorf("retry without the source: %v, want ErrExists", err)
		}

		clone := f.create(sized(req(cfg, "pvc-clone", "db", "clone"), 2<<20, &volume.Source{Volume: &src.ID}))
		if f.read(clone, "before") != "1" || f.read(clone, "after") != "2" {
			t.Errorf("clone holds %q, %q", f.read(clone, "before"), f.read(clone, "after"))
		}

		list, err := f.svc.Snapshots(f.ctx, &src.ID)
		if err != nil || len(list) != 1 || list[0].ID.String() != snap.ID.String() {
			t.Errorf("Snapshots(src) = %+v, %v", list, err)
		}
		// Deleting the snapshot touches no volume.
		if err := f.svc.DeleteSnapshot(f.ctx, snap.ID); err != nil {
			t.Fatalf("DeleteSnapshot: %v", err)
		}
		f.svc.WaitPurges()
		if err := f.svc.DeleteSnapshot(f.ctx, snap.ID); err != nil {
			t.Errorf("second DeleteSnapshot: %v", err)
		}
		for _, v := range []*volume.Result{src, restored, clone} {
			if f.read(v, "before") != "1" {
				t.Errorf("%s lost data when the snapshot was deleted", v.ID.DirPath())
			}
		}
		if _, err := f.svc.GetSnapshot(f.ctx, snap.ID); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("GetSnapshot after delete: %v, want ErrNotFound", err)
		}
		if _, err := f.svc.Create(f.ctx, sized(req(cfg, "pvc-late", "db", "late"), 1<<20, &volume.Source{Snapshot: &snap.ID})); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("restore of a deleted snapshot: %v, want ErrNotFound", err)
		}
	})

	t.Run("SnapshotNameIsIdentity", func(t *testing.T) {
		f := newFixture(t, newEnv)
		cfg := f.config()
		a := f.create(req(cfg, "pvc-a", "ns", "a"))
		b := f.create(req(cfg, "pvc-b", "ns", "b"))
		if _, err := f.svc.CreateSnapshot(f.ctx, "snap", a.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.CreateSnapshot(f.ctx, "snap", b.ID); !errors.Is(err, backend.ErrExists) {
			t.Errorf("same name, other volume: %v, want ErrExists", err)
		}
		missing := a.ID
		missing.Dir = []string{"ns", "missing"}
		if _, err := f.svc.CreateSnapshot(f.ctx, "other", missing); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("snapshot of a missing volume: %v, want ErrNotFound", err)
		}
		whole := a.ID
		whole.Dir = nil
		if _, err := f.svc.CreateSnapshot(f.ctx, "whole", whole); !errors.Is(err, backend.ErrInvalid) {
			t.Errorf("snapshot of a whole volume: %v, want ErrInvalid", err)
		}
	})

	t.Run("RestoreRules", func(t *testing.T) {
		f := newFixture(t, newEnv)
		cfg := f.config()
		src := f.create(sized(req(cfg, "pvc-src", "team-a", "src"), 1<<20, nil))
		f.write(src, "secret", "a")
		snap, err := f.svc.CreateSnapshot(f.ctx, "snap", src.ID)
		if err != nil {
			t.Fatal(err)
		}
		fromSnap := &volume.Source{Snapshot: &snap.ID}
		fromVol := &volume.Source{Volume: &src.ID}
		for name, s := range map[string]*volume.Source{"snapshot": fromSnap, "volume": fromVol} {
			// Never into another namespace's claim, unless the class allows it.
			if _, err := f.svc.Create(f.ctx, sized(req(cfg, "pvc-b-"+name, "team-b", "b-"+name), 1<<20, s)); !errors.Is(err, backend.ErrInvalid) {
				t.Errorf("%s of team-a into team-b: %v, want ErrInvalid", name, err)
			}
			if _, err := os.Stat(f.env.LocalRoot + "/team-b/b-" + name); !os.IsNotExist(err) {
				t.Errorf("a refused %s restore left a directory: %v", name, err)
			}
			open := f.config(params.RestoreAcrossNamespaces, "true")
			res := f.create(sized(req(open, "pvc-b2-"+name, "team-b", "b2-"+name), 1<<20, s))
			if f.read(res, "secret") != "a" {
				t.Errorf("%s across namespaces with the class's consent: not filled", name)
			}
			// At least the source's size.
			if _, err := f.svc.Create(f.ctx, sized(req(cfg, "pvc-small-"+name, "team-a", "small-"+name), 1<<10, s)); !errors.Is(err, backend.ErrTooSmall) {
				t.Errorf("%s into a smaller claim: %v, want ErrTooSmall", name, err)
			}
		}
		// Only new directories are filled: retained data is never overwritten.
		old := f.create(req(cfg, "pvc-old", "team-a", "old"))
		f.write(old, "mine", "x")
		f.cluster.Set(old.ID.Location(), volume.Ref{PV: "pvc-old", Namespace: "team-a"})
		if _, err := f.svc.Create(f.ctx, sized(req(cfg, "pvc-new", "team-a", "old"), 1<<20, fromSnap)); !errors.Is(err, backend.ErrConflict) {
			t.Errorf("restore into an existing directory: %v, want ErrConflict", err)
		}
		if f.read(old, "mine") != "x" {
			t.Error("retained data changed")
		}
		// A source on another share is refused.
		other := snap.ID
		other.Share = "/elsewhere"
		if other.Backend == params.BackendGluster {
			other.Share = "elsewhere"
		}
		if _, err := f.svc.Create(f.ctx, sized(req(cfg, "pvc-x", "team-a", "x"), 1<<20, &volume.Source{Snapshot: &other})); !errors.Is(err, backend.ErrInvalid) {
			t.Errorf("restore from another share: %v, want ErrInvalid", err)
		}
	})
}
