package params

import (
	"errors"
	"strings"
	"testing"
)

func nfsParams(extra ...string) map[string]string {
	m := map[string]string{"backend": "nfs", "server": "10.0.0.5", "share": "/export"}
	for i := 0; i+1 < len(extra); i += 2 {
		m[extra[i]] = extra[i+1]
	}
	return m
}

func TestParseDefaults(t *testing.T) {
	c, err := Parse(nfsParams())
	if err != nil {
		t.Fatal(err)
	}
	if c.Backend != "nfs" || c.Server != "10.0.0.5" || c.Share != "/export" {
		t.Errorf("backend/server/share = %q/%q/%q", c.Backend, c.Server, c.Share)
	}
	if c.OnDelete != OnDeleteRetain {
		t.Errorf("onDelete = %q, want retain", c.OnDelete)
	}
	if c.VolumeType != VolumeTypeNFS {
		t.Errorf("volumeType = %q, want nfs", c.VolumeType)
	}
	if !c.AllocateGID() || c.GIDMin != 2000 || c.GIDMax != 2147483647 {
		t.Errorf("gid allocation = %v %d..%d", c.AllocateGID(), c.GIDMin, c.GIDMax)
	}
	if c.DirMode() != 0o2770 {
		t.Errorf("mode = %#o, want 02770", c.DirMode())
	}
	if c.PathPattern.String() != DefaultPathPattern || !c.PathPattern.Namespaced() {
		t.Errorf("pattern = %q namespaced=%v", c.PathPattern, c.PathPattern.Namespaced())
	}
}

func TestParseExplicit(t *testing.T) {
	c, err := Parse(nfsParams("uid", "999", "gid", "999", "mode", "0750", "onDelete", "Archive",
		"pathPattern", "${pvc.metadata.name}", "volumeType", "csi",
		"csi.storage.k8s.io/pvc/name", "data-mongo-0"))
	if err != nil {
		t.Fatal(err)
	}
	if *c.UID != 999 || *c.GID != 999 || c.DirMode() != 0o750 || c.AllocateGID() {
		t.Errorf("ownership = %d:%d %#o alloc=%v", *c.UID, *c.GID, c.DirMode(), c.AllocateGID())
	}
	if c.OnDelete != OnDeleteArchive || c.VolumeType != VolumeTypeCSI || c.PathPattern.Namespaced() {
		t.Errorf("onDelete=%q volumeType=%q namespaced=%v", c.OnDelete, c.VolumeType, c.PathPattern.Namespaced())
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		name   string
		in     map[string]string
		expect string // must appear in the message
	}{
		{"unknown key named", nfsParams("archiveOnDelet", "true"), `unknown parameter "archiveOnDelet"`},
		{"one key in two cases", nfsParams("Server", "x"), "Server and server differ only in case"},
		{"no backend", map[string]string{"server": "a", "share": "/x"}, "backend is required"},
		{"bad backend", nfsParams("backend", "ceph"), `backend="ceph"`},
		{"no server", map[string]string{"backend": "nfs", "share": "/x"}, "server is required"},
		{"no share", map[string]string{"backend": "nfs", "server": "a"}, "share is required"},
		{"server like an option", nfsParams("server", "-oremount"), "must not start with '-'"},
		{"server with a space", nfsParams("server", "a b"), "contains"},
		{"relative share", nfsParams("share", "export"), "clean absolute path"},
		{"dotdot share", nfsParams("share", "/export/../etc"), "clean absolute path"},
		{"onDelete", nfsParams("onDelete", "shred"), "retain, archive, delete"},
		{"uid text", nfsParams("uid", "mongo"), `uid="mongo"`},
		{"negative gid", nfsParams("gid", "-1"), `gid="-1"`},
		{"mode decimal", nfsParams("mode", "999"), "octal"},
		{"mode too big", nfsParams("mode", "17777"), "octal"},
		{"gidMin low", nfsParams("gidMin", "100"), "at least 2000"},
		{"gid range", nfsParams("gidMin", "5000", "gidMax", "4000"), "greater than"},
		{"gid and range", nfsParams("gid", "3000", "gidMin", "4000"), "exclude each other"},
		{"volumeType", nfsParams("volumeType", "iscsi"), "nfs or csi"},
		{"pattern var", nfsParams("pathPattern", "${pvc.spec.foo}"), "unknown variable"},
		{"pattern abs", nfsParams("pathPattern", "/${pvc.metadata.name}"), "relative"},
		{"pattern dotdot", nfsParams("pathPattern", "../${pvc.metadata.name}"), `".."`},
		{"pattern empty seg", nfsParams("pathPattern", "a//${pvc.metadata.name}"), "empty path segment"},
		{"pattern unquoted", nfsParams("pathPattern", "${pvc.metadata.labels[app]}"), "quote the key"},
		{"pattern open", nfsParams("pathPattern", "${pvc.metadata.name"), "unterminated"},
		{"pattern reserved", nfsParams("pathPattern", ".carve-trash/${pvc.metadata.name}"), "reserved"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.in)
			if err == nil {
				t.Fatalf("Parse(%v) succeeded", tc.in)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v is not ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.expect) {
				t.Errorf("error %q does not mention %q", err, tc.expect)
			}
		})
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	_, err := Parse(map[string]string{"backend": "nfs", "typo1": "a", "typo2": "b"})
	for _, want := range []string{"typo1", "typo2", "server is required", "share is required"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %q", err, want)
		}
	}
}
