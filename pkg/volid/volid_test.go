package volid

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/carve-csi/carve/pkg/params"
)

func TestRoundTrip(t *testing.T) {
	ids := []ID{
		{Backend: "nfs", Servers: []string{"10.0.0.5"}, Share: "/export", Dir: []string{"db", "data-mongo-0"}, OnDelete: "retain"},
		{Backend: "nfs", Servers: []string{"[fd00::1]"}, Share: "/", Dir: []string{"a#b%c"}, OnDelete: "archive"},
		{Backend: "gluster", Servers: []string{"g1", "g2", "g3"}, Share: "gv0", Dir: []string{"ns", "claim"}, OnDelete: "delete"},
		{Backend: "gluster", Servers: []string{"g1"}, Share: "carve_ns_claim_1a2b", OnDelete: "delete"},
	}
	for _, id := range ids {
		s := id.String()
		got, err := Parse(s)
		if err != nil {
			t.Fatalf("Parse(%q): %v", s, err)
		}
		if !reflect.DeepEqual(got, id) {
			t.Errorf("Parse(%q) = %+v, want %+v", s, got, id)
		}
	}
	if s := ids[0].String(); s != "1#nfs#10.0.0.5#/export#db/data-mongo-0#retain" {
		t.Errorf("encoding changed: %q", s)
	}
}

func TestLocationIgnoresPolicy(t *testing.T) {
	a := ID{Backend: "nfs", Servers: []string{"s"}, Share: "/e", Dir: []string{"d"}, OnDelete: "retain"}
	b := a
	b.OnDelete = "delete"
	if a.Location() != b.Location() {
		t.Error("location depends on onDelete")
	}
	b.Dir = []string{"e"}
	if a.Location() == b.Location() {
		t.Error("different directories share a location")
	}
}

func TestParseRejects(t *testing.T) {
	for _, s := range []string{
		"", "fake-vol-id", "2#nfs#s#/e#d#retain", "1#nfs#s#/e#d", "1#nfs#s#/e#d#retain#x",
		"1#ceph#s#/e#d#retain", "1#nfs##/e#d#retain", "1#nfs#s#e#d#retain", "1#nfs#s#/e/../x#d#retain",
		"1#nfs#s#/e##retain", "1#nfs#s#/e#../etc#retain", "1#nfs#s#/e#a/../../b#retain", "1#nfs#s#/e#a//b#retain",
		"1#nfs#s#/e#.carve-trash/x#retain", "1#nfs#s#/e#d#shred", "1#nfs#s#/e#d#", "1#nfs#s p#/e#d#retain",
		"1#nfs#s#/e#d%2F..%2F..#retain", "1#nfs#s#/e#d%zz#retain", "1#nfs#s#/e#%64#retain",
		"1#gluster#g#gv/0#d#retain", "1#nfs#s#/e#a%00b#retain",
		// Names that mount(8), ssh or gluster would read as options.
		"1#nfs#-oremount#/export#d#retain", "1#gluster#g1,-oremount#gv0#d#retain", "1#gluster#g#-gv0#d#retain",
	} {
		if _, err := Parse(s); err == nil {
			t.Errorf("Parse(%q) succeeded", s)
		} else if !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%q): %v is not ErrMalformed", s, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("1#nfs#10.0.0.5#/export#db/data-mongo-0#retain")
	f.Add("1#gluster#g1,g2#gv0#ns/c#delete")
	f.Add("1#nfs#s#/e#a%23b#archive")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := Parse(s)
		if err != nil {
			return
		}
		// Whatever decodes is valid, canonical and safe to join under a share.
		if err := id.Validate(); err != nil {
			t.Fatalf("Parse(%q) returned invalid %+v: %v", s, id, err)
		}
		if id.String() != s {
			t.Fatalf("Parse(%q) is not canonical: %q", s, id.String())
		}
		for _, seg := range id.Dir {
			if seg == ".." || seg == "." || seg == "" {
				t.Fatalf("unsafe segment %q from %q", seg, s)
			}
		}
	})
}

// The host and Gluster volume rules are params', applied to IDs unchanged.
func TestHostRuleIsParams(t *testing.T) {
	for _, h := range []string{"g1", "10.0.0.1", "[fd00::1]", "a_b", "-oremount", "-", "g 1", "g/1", "g1;rm", strings.Repeat("a", 254)} {
		perr := params.CheckHost(h)
		verr := ID{Backend: "nfs", Servers: []string{h}, Share: "/e", Dir: []string{"d"}, OnDelete: "retain"}.Validate()
		if (perr == nil) != (verr == nil) {
			t.Errorf("host %q: params %v, volid %v", h, perr, verr)
		}
		if verr != nil && !errors.Is(verr, ErrMalformed) {
			t.Errorf("host %q: %v is not ErrMalformed", h, verr)
		}
	}
	if err := params.CheckHost("-oremount"); err == nil {
		t.Error("params accepts a host starting with '-'")
	}
}
