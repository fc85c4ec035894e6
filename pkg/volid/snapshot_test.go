package volid

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestSnapshotRoundTrip(t *testing.T) {
	ids := []SnapshotID{
		{Backend: "nfs", Servers: []string{"10.0.0.5"}, Share: "/export", Entry: "snapshot-1a2b"},
		{Backend: "gluster", Servers: []string{"g1", "g2"}, Share: "gv0", Entry: "h-0123456789abcdef"},
	}
	for _, id := range ids {
		s := id.String()
		got, err := ParseSnapshot(s)
		if err != nil {
			t.Fatalf("ParseSnapshot(%q): %v", s, err)
		}
		if !reflect.DeepEqual(got, id) {
			t.Errorf("ParseSnapshot(%q) = %+v, want %+v", s, got, id)
		}
		if _, err := Parse(s); err == nil {
			t.Errorf("a snapshot ID parses as a volume ID: %q", s)
		}
	}
	if s := ids[0].String(); s != "snap1#nfs#10.0.0.5#/export#snapshot-1a2b" {
		t.Errorf("encoding changed: %q", s)
	}
	vol := ID{Backend: "nfs", Servers: []string{"10.0.0.5"}, Share: "/export", Dir: []string{"d"}, OnDelete: "retain"}
	if _, err := ParseSnapshot(vol.String()); err == nil {
		t.Error("a volume ID parses as a snapshot ID")
	}
	if vol.ShareLocation() != ids[0].ShareLocation() {
		t.Error("a volume and a snapshot on one share have different share locations")
	}
}

func TestParseSnapshotRejects(t *testing.T) {
	for _, s := range []string{
		"", "reallyfakesnapshotid", "snap2#nfs#s#/e#x", "snap1#nfs#s#/e", "snap1#nfs#s#/e#x#y",
		"snap1#nfs#s#/e#", "snap1#nfs#s#/e#..", "snap1#nfs#s#/e#.new-1", "snap1#nfs#s#/e#a%2Fb",
		"snap1#nfs#s#/e#" + strings.Repeat("a", 129), "snap1#ceph#s#/e#x", "snap1#nfs#-o#/e#x", "snap1#nfs#s#e#x",
		"snap1#nfs#s#/e#%61",
	} {
		if _, err := ParseSnapshot(s); err == nil {
			t.Errorf("ParseSnapshot(%q) succeeded", s)
		} else if !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseSnapshot(%q): %v is not ErrMalformed", s, err)
		}
	}
}

func FuzzSnapshotID(f *testing.F) {
	f.Add("snap1#nfs#10.0.0.5#/export#snapshot-1")
	f.Add("snap1#gluster#g1,g2#gv0#h-0123")
	f.Add("snap1#nfs#s#/e#a.b_c-d")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseSnapshot(s)
		if err != nil {
			return
		}
		if err := id.Validate(); err != nil {
			t.Fatalf("ParseSnapshot(%q) returned invalid %+v: %v", s, id, err)
		}
		if id.String() != s {
			t.Fatalf("ParseSnapshot(%q) is not canonical: %q", s, id.String())
		}
		if strings.ContainsAny(id.Entry, "/\x00") || strings.HasPrefix(id.Entry, ".") {
			t.Fatalf("unsafe entry %q from %q", id.Entry, s)
		}
	})
}
