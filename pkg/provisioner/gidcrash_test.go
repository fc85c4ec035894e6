package provisioner

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/kubeview"
)

// TestGIDsRecordedOnShareAreNotReused: a directory carved with GID 2000 just
// before a crash (record on the share, no PV) keeps that GID out of the
// table after the restart, so a new claim gets 2001 and the crashed claim,
// carved again, keeps 2000. The kill itself is test/e2e's
// TestGIDUniqueAfterKill, on the real control plane.
func TestGIDsRecordedOnShareAreNotReused(t *testing.T) {
	root := filepath.Join(t.TempDir(), "export")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := dirvol.Declare(root); err != nil {
		t.Fatal(err)
	}
	share, err := dirvol.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	_, err = share.Create(context.Background(), []string{"db", "crashed"}, dirvol.Owner{GID: 2000, Mode: 0o2770},
		dirvol.Meta{PV: "pvc-before-the-crash", Namespace: "db", Claim: "crashed", GID: 2000, Updated: time.Now()})
	if err != nil {
		t.Fatal(err)
	}

	h := startControllerOn(t, "10.0.0.5:/export", root)
	h.class("carve-nfs", v1.PersistentVolumeReclaimRetain, nfsParams())
	fresh := h.waitPV(h.claim("db", "fresh", "carve-nfs"))
	if g := fresh.Annotations[kubeview.AnnGID]; g == "2000" {
		t.Fatalf("a new claim got GID 2000, recorded on the share for the crashed volume")
	}
	again := h.waitPV(h.claim("db", "crashed", "carve-nfs"))
	if again.Annotations[kubeview.AnnGID] != "2000" || again.Annotations[kubeview.AnnGID] == fresh.Annotations[kubeview.AnnGID] {
		t.Errorf("GIDs: crashed claim %s, new claim %s; want 2000 and another", again.Annotations[kubeview.AnnGID], fresh.Annotations[kubeview.AnnGID])
	}
}
