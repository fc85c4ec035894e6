package csidriver

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestSnapshotRPCs(t *testing.T) {
	h := newHarness(t, nil)
	cs := &ControllerServer{d: h.d}
	p := classParams("pathPattern", "${pv.metadata.name}", "onDelete", "delete")
	vol, err := cs.CreateVolume(h.ctx, createReq("pvc-src", 1<<20, p))
	if err != nil {
		t.Fatal(err)
	}
	srcID := vol.Volume.VolumeId
	if err := os.WriteFile(filepath.Join(h.share, "pvc-src", "f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 5 {
		snap, err := cs.CreateSnapshot(h.ctx, &csi.CreateSnapshotRequest{Name: fmt.Sprint("snap-", i), SourceVolumeId: srcID})
		if err != nil {
			t.Fatalf("CreateSnapshot %d: %v", i, err)
		}
		if !snap.Snapshot.ReadyToUse || snap.Snapshot.SizeBytes != 1<<20 || snap.Snapshot.SourceVolumeId != srcID {
			t.Errorf("snapshot %d = %+v", i, snap.Snapshot)
		}
		ids = append(ids, snap.Snapshot.SnapshotId)
	}

	// Pages of 2 list all five once, in order.
	var got []string
	token := ""
	for range 10 {
		resp, err := cs.ListSnapshots(h.ctx, &csi.ListSnapshotsRequest{MaxEntries: 2, StartingToken: token, SourceVolumeId: srcID})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range resp.Entries {
			got = append(got, e.Snapshot.SnapshotId)
		}
		if token = resp.NextToken; token == "" {
			break
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Errorf("paged list = %v, want %v", got, ids)
	}
	if _, err := cs.ListSnapshots(h.ctx, &csi.ListSnapshotsRequest{StartingToken: "bogus"}); status.Code(err) != codes.Aborted {
		t.Errorf("bad token: %v, want Aborted", err)
	}
	if _, err := cs.CreateSnapshot(h.ctx, &csi.CreateSnapshotRequest{Name: "x", SourceVolumeId: srcID,
		Parameters: map[string]string{"speed": "fast"}}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("unknown snapshot parameter: %v, want InvalidArgument", err)
	}

	// Restore: the claim gets the data; a smaller one is OutOfRange; a
	// missing snapshot NotFound.
	restore := createReq("pvc-restored", 1<<20, p)
	restore.VolumeContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
		Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: ids[0]}}}
	rv, err := cs.CreateVolume(h.ctx, restore)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if rv.Volume.ContentSource.GetSnapshot().GetSnapshotId() != ids[0] {
		t.Errorf("restored volume's content source = %v", rv.Volume.ContentSource)
	}
	if data, err := os.ReadFile(filepath.Join(h.share, "pvc-restored", "f")); err != nil || string(data) != "data" {
		t.Errorf("restored data = %q, %v", data, err)
	}
	small := createReq("pvc-small", 1<<10, p)
	small.VolumeContentSource = restore.VolumeContentSource
	if _, err := cs.CreateVolume(h.ctx, small); status.Code(err) != codes.OutOfRange {
		t.Errorf("restore into a smaller volume: %v, want OutOfRange", err)
	}
	missing := createReq("pvc-missing", 1<<20, p)
	missing.VolumeContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
		Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: "snap1#nfs#10.0.0.5#/export#nope"}}}
	if _, err := cs.CreateVolume(h.ctx, missing); status.Code(err) != codes.NotFound {
		t.Errorf("restore from a missing snapshot: %v, want NotFound", err)
	}

	// An ID no volume can have names no source: NotFound (the service
	// refuses Gluster volumes per claim with InvalidArgument, volumetest).
	whole := "1#nfs#10.0.0.5#/export##delete"
	if _, err := cs.CreateSnapshot(h.ctx, &csi.CreateSnapshotRequest{Name: "w", SourceVolumeId: whole}); status.Code(err) != codes.NotFound {
		t.Errorf("snapshot of an NFS volume without a directory: %v, want NotFound", err)
	}

	for _, id := range ids {
		if _, err := cs.DeleteSnapshot(h.ctx, &csi.DeleteSnapshotRequest{SnapshotId: id}); err != nil {
			t.Fatalf("DeleteSnapshot: %v", err)
		}
	}
	if resp, err := cs.ListSnapshots(h.ctx, &csi.ListSnapshotsRequest{SnapshotId: ids[0]}); err != nil || len(resp.Entries) != 0 {
		t.Errorf("list of a deleted snapshot = %v, %v", resp, err)
	}
	if data, err := os.ReadFile(filepath.Join(h.share, "pvc-src", "f")); err != nil || string(data) != "data" {
		t.Errorf("the source volume changed when its snapshots were deleted: %q, %v", data, err)
	}
}
