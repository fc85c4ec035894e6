package csidriver

import (
	"testing"

	"google.golang.org/grpc/codes"
)

func TestClaimUID(t *testing.T) {
	for name, want := range map[string]string{
		"pvc-0b1c2d3e-aaaa-bbbb-cccc-0123456789ab": "0b1c2d3e-aaaa-bbbb-cccc-0123456789ab",
		"sanity-volume-1":                          "",
		"pvc-":                                     "",
	} {
		if got := claimUID(name); got != want {
			t.Errorf("claimUID(%q) = %q, want %q", name, got, want)
		}
	}
}

// Mode volume has no path to render: the request needs no claim metadata,
// and carries the claim UID from the CSI name for the volume's name.
func TestVolumeRequestVolumePerClaim(t *testing.T) {
	h := newHarness(t, nil)
	p := map[string]string{"backend": "gluster", "servers": "g1,g2,g3", "mode": "volume",
		"brickRootPaths": "g1:/b,g2:/b,g3:/b"}
	req := createReq("pvc-0b1c2d3e-aaaa-bbbb-cccc-0123456789ab", 1<<30, p)
	vreq, err := h.d.controller.volumeRequest(req, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if !vreq.Config.VolumePerClaim() || vreq.ClaimUID != "0b1c2d3e-aaaa-bbbb-cccc-0123456789ab" ||
		vreq.Name != req.Name || vreq.SizeBytes != 1<<30 || vreq.Namespace != "" {
		t.Errorf("request %+v", vreq)
	}
	with := claim(p, "ns", "data", req.Name)
	if vreq, err = h.d.controller.volumeRequest(createReq(req.Name, 1, with), 1); err != nil || vreq.Namespace != "ns" || vreq.Claim != "data" {
		t.Errorf("with claim metadata: %+v, %v", vreq, err)
	}
	// Subdir mode still needs the claim metadata its default pattern uses.
	sub := map[string]string{"backend": "gluster", "servers": "g1", "volume": "gv0"}
	_, err = h.d.controller.CreateVolume(h.ctx, createReq(req.Name, 1, sub))
	wantCode(t, err, codes.InvalidArgument, "--extra-create-metadata")
}
