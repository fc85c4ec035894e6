package params

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func glusterParams(extra ...string) map[string]string {
	m := map[string]string{"backend": "gluster", "servers": "g1,g2.example,10.0.0.3", "volume": "gv0"}
	for i := 0; i+1 < len(extra); i += 2 {
		if extra[i+1] == "<unset>" {
			delete(m, extra[i])
			continue
		}
		m[extra[i]] = extra[i+1]
	}
	return m
}

func volumeModeParams(extra ...string) map[string]string {
	return glusterParams(append([]string{"volume", "<unset>", "mode", "volume",
		"brickRootPaths", "g1:/bricks, g2:/bricks ,10.0.0.3:/data/bricks"}, extra...)...)
}

func TestParseGlusterSubdirDefaults(t *testing.T) {
	c, err := Parse(glusterParams())
	if err != nil {
		t.Fatal(err)
	}
	g := c.Gluster
	if g == nil {
		t.Fatal("Gluster config missing")
	}
	if !reflect.DeepEqual(g.Servers, []string{"g1", "g2.example", "10.0.0.3"}) || g.Volume != "gv0" || c.Share != "gv0" {
		t.Errorf("servers/volume/share = %q/%q/%q", g.Servers, g.Volume, c.Share)
	}
	if g.Mode != GlusterModeSubdir || g.Quota != QuotaAuto || g.Executor != ExecutorLocal || c.VolumePerClaim() {
		t.Errorf("mode/quota/executor = %q/%q/%q", g.Mode, g.Quota, g.Executor)
	}
	if c.VolumeType != VolumeTypeCSI {
		t.Errorf("volumeType = %q, want csi", c.VolumeType)
	}
	if c.DirMode() != 0o2770 || c.PathPattern.String() != DefaultPathPattern || c.OnDelete != OnDeleteRetain {
		t.Errorf("shared defaults changed: mode %#o pattern %q onDelete %q", c.DirMode(), c.PathPattern, c.OnDelete)
	}
}

func TestParseGlusterModeWordsAndOctal(t *testing.T) {
	c, err := Parse(glusterParams("mode", "Subdir"))
	if err != nil || c.Gluster.Mode != GlusterModeSubdir || c.Mode != nil {
		t.Fatalf("mode=Subdir: %+v %v", c, err)
	}
	// An octal mode is still the directory permission for gluster.
	c, err = Parse(glusterParams("mode", "0750", "quota", "GLUSTER", "executor", "ssh",
		"executorSecretName", "gluster-ssh", "executorSecretNamespace", "carve-system"))
	if err != nil {
		t.Fatal(err)
	}
	if c.DirMode() != 0o750 || c.Gluster.Mode != GlusterModeSubdir || c.Gluster.Quota != QuotaGluster {
		t.Errorf("dir mode %#o, gluster mode %q, quota %q", c.DirMode(), c.Gluster.Mode, c.Gluster.Quota)
	}
	if c.Gluster.Executor != ExecutorSSH || c.Gluster.ExecutorSecretName != "gluster-ssh" || c.Gluster.ExecutorSecretNamespace != "carve-system" {
		t.Errorf("executor = %+v", c.Gluster)
	}
}

func TestParseGlusterVolumeMode(t *testing.T) {
	c, err := Parse(volumeModeParams("replica", "3", "volumeOptions", "group db-workload, performance.quick-read off",
		"volumeNamePrefix", "mongo", "forceCreate", "true", "onDelete", "delete", "gid", "999"))
	if err != nil {
		t.Fatal(err)
	}
	g := c.Gluster
	if !c.VolumePerClaim() || g.Replica != 3 || g.VolumeNamePrefix != "mongo" || !g.ForceCreate || g.Volume != "" {
		t.Errorf("volume mode config = %+v", g)
	}
	want := []BrickRoot{{"g1", "/bricks"}, {"g2", "/bricks"}, {"10.0.0.3", "/data/bricks"}}
	if !reflect.DeepEqual(g.BrickRootPaths, want) {
		t.Errorf("bricks = %v, want %v", g.BrickRootPaths, want)
	}
	wantOpts := []VolumeOption{{"group", "db-workload"}, {"performance.quick-read", "off"}}
	if !reflect.DeepEqual(g.VolumeOptions, wantOpts) {
		t.Errorf("options = %v, want %v", g.VolumeOptions, wantOpts)
	}
	c, err = Parse(volumeModeParams("brickRootPaths", "[fd00::1]:/b"+",h2:/b", "replica", "2"))
	if err != nil || c.Gluster.BrickRootPaths[0] != (BrickRoot{"[fd00::1]", "/b"}) || c.Gluster.VolumeNamePrefix != DefaultVolumeNamePrefix {
		t.Fatalf("IPv6 brick root: %+v %v", c, err)
	}
}

func TestParseGlusterErrors(t *testing.T) {
	cases := []struct {
		name   string
		in     map[string]string
		expect string
	}{
		{"no servers", glusterParams("servers", "<unset>"), "servers is required"},
		{"bad server", glusterParams("servers", "g1,g 2"), `contains ' '`},
		{"empty server", glusterParams("servers", "g1,,g2"), `server ""`},
		{"server like an option", glusterParams("servers", "g1,-oremount"), "must not start with '-'"},
		{"brick host like an option", glusterParams("mode", "volume", "brickRootPaths", "-x:/b"), "must not start with '-'"},
		{"dup server", glusterParams("servers", "g1,g1"), "twice"},
		{"no volume", glusterParams("volume", "<unset>"), "volume is required"},
		{"volume chars", glusterParams("volume", "gv.0"), `contains '.'`},
		{"volume dash", glusterParams("volume", "-gv"), "start with '-'"},
		{"server is nfs", glusterParams("server", "g1"), "server does not apply to backend gluster"},
		{"share is nfs", glusterParams("share", "/x"), "share does not apply to backend gluster"},
		{"gluster key on nfs", nfsParams("servers", "a"), "servers applies to backend gluster only"},
		{"mode word on nfs", nfsParams("mode", "volume"), "applies to backend gluster only"},
		{"mode junk", glusterParams("mode", "dirs"), "octal"},
		{"quota", glusterParams("quota", "simple"), "auto"},
		{"executor", glusterParams("executor", "kubeexec"), "local"},
		{"ssh without secret", glusterParams("executor", "ssh"), "executorSecretName"},
		{"secret without ssh", glusterParams("executorSecretName", "s"), "only with executor ssh"},
		{"volumeType nfs", glusterParams("volumeType", "nfs"), "in-tree glusterfs plugin"},
		{"replica in subdir", glusterParams("replica", "3"), "applies to mode volume only"},
		{"bricks in subdir", glusterParams("brickRootPaths", "h:/b"), "applies to mode volume only"},
		{"options in subdir", glusterParams("volumeOptions", "group db-workload"), "applies to mode volume only"},
		{"volume in volume mode", volumeModeParams("volume", "gv0"), "applies to mode subdir only"},
		{"no bricks", glusterParams("volume", "<unset>", "mode", "volume"), "brickRootPaths is required"},
		{"bricks multiple", volumeModeParams("replica", "2"), "not a multiple"},
		{"replica zero", volumeModeParams("replica", "0"), "between 1 and"},
		{"brick relative", volumeModeParams("brickRootPaths", "h1:bricks", "replica", "1"), "HOST:/ABSOLUTE/PATH"},
		{"brick root", volumeModeParams("brickRootPaths", "h1:/", "replica", "1"), "other than /"},
		{"brick dotdot", volumeModeParams("brickRootPaths", "h1:/b/../c", "replica", "1"), "clean absolute"},
		{"brick dup", volumeModeParams("brickRootPaths", "h1:/b,h1:/b", "replica", "2"), "twice"},
		{"option shape", volumeModeParams("volumeOptions", "performance.quick-read"), `want "KEY VALUE"`},
		{"option reserved", volumeModeParams("volumeOptions", "user.carve.pv x"), "carve sets"},
		{"option owner", volumeModeParams("volumeOptions", "storage.owner-gid 0"), "carve sets"},
		{"prefix underscore", volumeModeParams("volumeNamePrefix", "a_b"), "must not contain '_'"},
		{"prefix long", volumeModeParams("volumeNamePrefix", strings.Repeat("a", 33)), "longer than 32"},
		{"forceCreate", volumeModeParams("forceCreate", "yes please"), "true or false"},
		{"pattern in volume mode", volumeModeParams("pathPattern", "${pvc.metadata.name}"), "does not apply in mode volume"},
		{"unknown key", glusterParams("volname", "x"), `unknown parameter "volname"`},
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
