package chart

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSnapshotCRDsGenerated regenerates deploy/snapshot-controller/crds
// (hack/gen-snapshot-crds.sh, from the external-snapshotter client module
// hack/tools/external-snapshotter pins) into a temporary directory and
// requires the committed files to be the same bytes: the CRDs are never
// edited by hand and follow the pinned release.
func TestSnapshotCRDsGenerated(t *testing.T) {
	repo, err := Repo()
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	cmd := exec.CommandContext(t.Context(), "bash", filepath.Join(repo, "hack/gen-snapshot-crds.sh"), out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hack/gen-snapshot-crds.sh: %v\n%s", err, b)
	}
	committed := filepath.Join(repo, "deploy/snapshot-controller/crds")
	want, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	have, err := os.ReadDir(committed)
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != 3 {
		t.Fatalf("the script wrote %d files, want the 3 snapshot.storage.k8s.io CRDs", len(want))
	}
	if len(have) != len(want) {
		t.Errorf("%s has %d files, the script writes %d", committed, len(have), len(want))
	}
	for _, e := range want {
		gen, err := os.ReadFile(filepath.Join(out, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(committed, e.Name()))
		if err != nil {
			t.Errorf("%s: %v (run hack/gen-snapshot-crds.sh)", e.Name(), err)
			continue
		}
		if !bytes.Equal(got, gen) {
			t.Errorf("%s differs from hack/gen-snapshot-crds.sh's output: run it and commit the result", e.Name())
		}
		if !strings.Contains(string(gen), "kind: CustomResourceDefinition") || !strings.Contains(string(gen), "group: snapshot.storage.k8s.io") {
			t.Errorf("%s: not a snapshot.storage.k8s.io CRD", e.Name())
		}
	}
}
