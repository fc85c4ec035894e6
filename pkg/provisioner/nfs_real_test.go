package provisioner

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/carve-csi/carve/internal/testenv/ganesha"
	"github.com/carve-csi/carve/pkg/dirvol"
)

// TestRealNFSServer proves the PV a claim gets points at the data on a real
// NFS server: the controller carves through its local path, and a userspace
// NFS client (libnfs) finds the pod's file at the PV's nfs.server + nfs.path.
func TestRealNFSServer(t *testing.T) {
	root := filepath.Join(t.TempDir(), "export")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := dirvol.Declare(root); err != nil {
		t.Fatal(err)
	}
	srv := ganesha.Start(t, root)
	h := startControllerOn(t, srv.Server()+":"+srv.Export(), root)
	h.class("nfs", v1.PersistentVolumeReclaimRetain, map[string]string{
		"backend": "nfs", "server": srv.Server(), "share": srv.Export(),
	})
	pv := h.waitPV(h.claim("db", "data-mongo-0", "nfs"))
	if pv.Spec.NFS == nil || pv.Spec.NFS.Server != "127.0.0.1" || pv.Spec.NFS.Path != "/export/db/data-mongo-0" {
		t.Fatalf("PV source = %+v", pv.Spec.PersistentVolumeSource)
	}
	// What the pod writes into its volume...
	if err := os.WriteFile(filepath.Join(root, "db", "data-mongo-0", "marker-0"), []byte("mongo-0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// ...is what an NFS client of the PV's source sees.
	names, err := srv.List(pv.Spec.NFS.Path)
	if err != nil {
		t.Fatalf("nfs-ls %s: %v", pv.Spec.NFS.Path, err)
	}
	if !slices.Contains(names, "marker-0") {
		t.Fatalf("nfs-ls %s = %v, want marker-0", pv.Spec.NFS.Path, names)
	}
	data, err := srv.ReadFile(pv.Spec.NFS.Path + "/marker-0")
	if err != nil || string(data) != "mongo-0\n" {
		t.Fatalf("nfs-cat = %q, %v", data, err)
	}
	// carve's own folders are not inside any volume.
	top, err := srv.List(srv.Export())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range top {
		if n != "db" && n != ".carve-meta" && n != ".carve-tmp" && n != ".carve-share" && n != ".carve-share.id" {
			t.Errorf("unexpected entry %q at the export root", n)
		}
	}
}
