package adopt

import (
	"maps"
	"os"
	"regexp"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/carve-csi/carve/pkg/kubeview"
	"github.com/carve-csi/carve/pkg/volid"
)

// TestDocsStaticPV keeps docs/adopt.md's static PV example true: the PV and
// its claim decode, name each other, and every volume ID the page shows is
// one carve accepts, with the attributes carve itself would write.
func TestDocsStaticPV(t *testing.T) {
	data, err := os.ReadFile("../../docs/adopt.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	_, section, ok := strings.Cut(doc, "## Static PVs")
	if !ok {
		t.Fatal("docs/adopt.md has no section on static PVs")
	}
	_, block, _ := strings.Cut(section, "```yaml\n")
	block, _, _ = strings.Cut(block, "```")
	parts := strings.Split(block, "\n---\n")
	if len(parts) != 2 {
		t.Fatalf("the example has %d documents, want a PV and a claim", len(parts))
	}
	var pv v1.PersistentVolume
	var claim v1.PersistentVolumeClaim
	if err := yaml.UnmarshalStrict([]byte(parts[0]), &pv); err != nil {
		t.Fatalf("the example PV: %v", err)
	}
	if err := yaml.UnmarshalStrict([]byte(parts[1]), &claim); err != nil {
		t.Fatalf("the example claim: %v", err)
	}
	id, ok, err := kubeview.VolumeID(&pv)
	if !ok || err != nil {
		t.Fatalf("the example PV is not carve's: %v %v", ok, err)
	}
	if !maps.Equal(pv.Spec.CSI.VolumeAttributes, kubeview.VolumeAttributes(id)) {
		t.Errorf("the example's volumeAttributes %v, carve writes %v", pv.Spec.CSI.VolumeAttributes, kubeview.VolumeAttributes(id))
	}
	if ref := pv.Spec.ClaimRef; ref == nil || ref.Namespace != claim.Namespace || ref.Name != claim.Name || claim.Spec.VolumeName != pv.Name ||
		pv.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimRetain {
		t.Errorf("the example PV and claim do not name each other, or the PV is not Retain: %+v %+v", pv.Spec.ClaimRef, claim.Spec)
	}
	// Inline IDs: the Gluster examples (the format line has <placeholders>).
	parsed := 0
	for _, h := range regexp.MustCompile("`(1#[^`<]+)`").FindAllStringSubmatch(section, -1) {
		if _, err := volid.Parse(h[1]); err != nil {
			t.Errorf("docs/adopt.md shows volume ID %q: %v", h[1], err)
		}
		parsed++
	}
	if parsed < 2 {
		t.Errorf("the section shows %d example volume IDs inline, want the two Gluster ones", parsed)
	}
}
