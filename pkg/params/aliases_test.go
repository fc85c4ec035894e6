package params

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
)

func mustParse(t *testing.T, in map[string]string) *Config {
	t.Helper()
	c, err := Parse(in)
	if err != nil {
		t.Fatalf("Parse(%v): %v", in, err)
	}
	return c
}

func wantErr(t *testing.T, in map[string]string, contains ...string) {
	t.Helper()
	_, err := Parse(in)
	if err == nil {
		t.Fatalf("Parse(%v) succeeded", in)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("error %v is not ErrInvalid", err)
	}
	for _, c := range contains {
		if !strings.Contains(err.Error(), c) {
			t.Errorf("error %q does not mention %q", err, c)
		}
	}
}

func TestAliasesAccepted(t *testing.T) {
	pattern := func(want string) func(*Config) string {
		return func(c *Config) string {
			if got := c.PathPattern.String(); got != want {
				return "pathPattern " + got + ", want " + want
			}
			return ""
		}
	}
	dirMode := func(want uint32, explicit bool) func(*Config) string {
		return func(c *Config) string {
			if c.DirMode() != want || (c.Mode != nil) != explicit {
				return "unexpected mode"
			}
			return ""
		}
	}
	onDelete := func(want OnDeletePolicy) func(*Config) string {
		return func(c *Config) string {
			if c.OnDelete != want {
				return "onDelete " + string(c.OnDelete) + ", want " + string(want)
			}
			return ""
		}
	}
	replica := func(n int) func(*Config) string {
		return func(c *Config) string {
			if !c.VolumePerClaim() || c.Gluster.Replica != n {
				return "not mode volume with the replica wanted"
			}
			return ""
		}
	}
	twoBricks := "g1:/bricks,g2:/bricks"
	heketi := func(extra ...string) map[string]string {
		return glusterParams(append([]string{"volume", "<unset>", "brickRootPaths", twoBricks}, extra...)...)
	}
	for _, tc := range []struct {
		name  string
		in    map[string]string
		check func(*Config) string
	}{
		// csi-driver-nfs
		{"subDir", nfsParams("subDir", "${pvc.metadata.namespace}/${pvc.metadata.name}"), pattern("${pvc.metadata.namespace}/${pvc.metadata.name}")},
		{"subDir pv name", nfsParams("subDir", "${pv.metadata.name}"), pattern("${pv.metadata.name}")},
		{"subDir any case", nfsParams("SUBDIR", "x-${pvc.metadata.name}"), pattern("x-${pvc.metadata.name}")},
		{"mountPermissions", nfsParams("mountPermissions", "0777"), dirMode(0o777, true)},
		{"mountPermissions no leading 0", nfsParams("mountPermissions", "2775"), dirMode(0o2775, true)},
		{"mountPermissions 0 is carve's default", nfsParams("mountPermissions", "0"), dirMode(0o2770, false)},
		{"csi-driver-nfs onDelete archive", nfsParams("onDelete", "archive"), onDelete(OnDeleteArchive)},
		// nfs-subdir-external-provisioner
		{"archiveOnDelete false", nfsParams("archiveOnDelete", "false"), onDelete(OnDeleteDelete)},
		{"archiveOnDelete true", nfsParams("archiveOnDelete", "true"), onDelete(OnDeleteArchive)},
		{"archiveOnDelete ParseBool", nfsParams("archiveondelete", "0"), onDelete(OnDeleteDelete)},
		{"nfs-subdir onDelete delete", nfsParams("onDelete", "delete"), onDelete(OnDeleteDelete)},
		{"nfs-subdir onDelete retain", nfsParams("onDelete", "retain"), onDelete(OnDeleteRetain)},
		{"nfs-subdir pattern", nfsParams("pathPattern", "${.PVC.namespace}-${.PVC.name}"), pattern("${pvc.metadata.namespace}-${pvc.metadata.name}")},
		{"nfs-subdir pattern leading slash", nfsParams("pathPattern", "/${.PVC.namespace}/${.PVC.name}/"), pattern("${pvc.metadata.namespace}/${pvc.metadata.name}")},
		{"nfs-subdir labels", nfsParams("pathPattern", "${.PVC.labels.app}/${.PVC.name}"), pattern("${pvc.metadata.labels['app']}/${pvc.metadata.name}")},
		{"nfs-subdir annotation with a slash", nfsParams("pathPattern", "${.PVC.namespace}/${.PVC.annotations.nfs.io/storage-path}"),
			pattern("${pvc.metadata.namespace}/${pvc.metadata.annotations['nfs.io/storage-path']}")},
		{"nfs-subdir label with a quote", nfsParams("pathPattern", "${.PVC.labels.it's}"), pattern(`${pvc.metadata.labels["it's"]}`)},
		// in-tree glusterfs / heketi
		{"volumetype replicate:2", heketi("volumetype", "replicate:2"), replica(2)},
		{"volumetype replicate", glusterParams("volume", "<unset>", "brickRootPaths", "g1:/b,g2:/b,g3:/b", "volumetype", "replicate"), replica(3)},
		{"volumetype none", heketi("volumetype", "none"), replica(1)},
		{"volumetype any case", heketi("volumeType", "Replicate:2"), replica(2)},
		{"volumeoptions", heketi("volumetype", "replicate:2", "volumeoptions", "group metadata-cache, nl-cache on"), func(c *Config) string {
			if !reflect.DeepEqual(c.Gluster.VolumeOptions, []VolumeOption{{"group", "metadata-cache"}, {"nl-cache", "on"}}) {
				return "volume options"
			}
			return ""
		}},
		{"volumenameprefix", heketi("volumetype", "replicate:2", "volumenameprefix", "custom"), func(c *Config) string {
			if c.Gluster.VolumeNamePrefix != "custom" {
				return "prefix " + c.Gluster.VolumeNamePrefix
			}
			return ""
		}},
		{"gidmin gidmax", glusterParams("gidmin", "40000", "gidmax", "50000"), func(c *Config) string {
			if c.GIDMin != 40000 || c.GIDMax != 50000 {
				return "gid range"
			}
			return ""
		}},
		// carve's own volumeType is not heketi's
		{"volumeType csi", nfsParams("volumetype", "CSI"), func(c *Config) string {
			if c.VolumeType != VolumeTypeCSI {
				return "volumeType " + c.VolumeType
			}
			return ""
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if msg := tc.check(mustParse(t, tc.in)); msg != "" {
				t.Error(msg)
			}
		})
	}
}

func TestKeysAnyCase(t *testing.T) {
	c := mustParse(t, map[string]string{"BACKEND": "nfs", "Server": "10.0.0.5", "SHARE": "/export",
		"pathpattern": "${pvc.metadata.name}", "ondelete": "archive", "UID": "7", "gidmin": "3000", "GIDMAX": "4000",
		"MODE": "0750", "VolumeType": "csi"})
	if c.Backend != BackendNFS || c.Server != "10.0.0.5" || c.Share != "/export" || c.PathPattern.String() != "${pvc.metadata.name}" ||
		c.OnDelete != OnDeleteArchive || *c.UID != 7 || c.GIDMin != 3000 || c.GIDMax != 4000 || c.DirMode() != 0o750 || c.VolumeType != VolumeTypeCSI {
		t.Errorf("config = %+v", c)
	}
	g := mustParse(t, map[string]string{"backend": "gluster", "SERVERS": "g1,g2", "Mode": "Volume", "brickrootpaths": "g1:/b,g2:/b",
		"REPLICA": "2", "volumeOptions": "nl-cache on", "VOLUMENAMEPREFIX": "db", "forcecreate": "true", "Executor": "ssh",
		"executorsecretname": "k", "EXECUTORSECRETNAMESPACE": "ns", "QUOTA": "none"}).Gluster
	if g.Replica != 2 || len(g.BrickRootPaths) != 2 || g.VolumeNamePrefix != "db" || !g.ForceCreate || g.Executor != ExecutorSSH ||
		g.ExecutorSecretName != "k" || g.ExecutorSecretNamespace != "ns" || g.Quota != QuotaNone || len(g.VolumeOptions) != 1 {
		t.Errorf("gluster config = %+v", g)
	}
	// Keys the CSI external-provisioner adds are left alone.
	mustParse(t, nfsParams("csi.storage.k8s.io/pvc/name", "x", "csi.storage.k8s.io/provisioner-secret-name", "y"))
}

func TestRefusedKeys(t *testing.T) {
	for _, r := range RefusedKeys {
		for _, k := range []string{r.Key, strings.ToUpper(r.Key)} {
			t.Run(k, func(t *testing.T) {
				wantErr(t, glusterParams(k, "x"), k+" ("+AnchorHeketi+") is not supported", r.Instead)
			})
		}
	}
	wantErr(t, glusterParams("resturl", "http://heketi:8080"), "gluster CLI", "executorSecretName")
}

func TestAliasValuesRefused(t *testing.T) {
	heketi := func(extra ...string) map[string]string {
		return glusterParams(append([]string{"volume", "<unset>", "brickRootPaths", "g1:/b,g2:/b"}, extra...)...)
	}
	for _, tc := range []struct {
		name     string
		in       map[string]string
		contains []string
	}{
		{"mountPermissions text", nfsParams("mountPermissions", "rwx"), []string{`mountPermissions="rwx" (csi-driver-nfs)`, "octal"}},
		{"mountPermissions too big", nfsParams("mountPermissions", "17777"), []string{"mountPermissions", "octal"}},
		{"archiveOnDelete", nfsParams("archiveOnDelete", "maybe"), []string{`archiveOnDelete="maybe" (nfs-subdir-external-provisioner)`, "true (archive) or false (delete)"}},
		{"disperse", heketi("volumetype", "disperse:4:2"), []string{`volumetype="disperse:4:2"`, "does not create dispersed"}},
		{"replicate count", heketi("volumetype", "replicate:x"), []string{"volumetype", "replicate:N"}},
		{"replicate zero", heketi("volumetype", "replicate:0"), []string{"volumetype", "replicate:N"}},
		{"volumetype unknown", heketi("volumetype", "stripe"), []string{`volumetype="stripe"`, "nfs or csi", "replicate:N or none"}},
		{"volumetype without bricks", glusterParams("volume", "<unset>", "volumetype", "replicate:3"),
			[]string{"volumetype", "brickRootPaths is required", "heketi chose bricks"}},
		{"volumetype on nfs", nfsParams("volumetype", "replicate:3", "brickRootPaths", "a:/b"), []string{"applies to backend gluster only", "volumetype (kubernetes.io/glusterfs) as mode: volume, replica: 3"}},
		{"nfs-subdir unknown variable", nfsParams("pathPattern", "${.PVC.uid}"), []string{"pathPattern", "${.PVC.uid}", "nfs-subdir-external-provisioner"}},
		{"nfs-subdir unterminated", nfsParams("pathPattern", "${.PVC.name"), []string{"pathPattern", "unterminated"}},
		{"nfs-subdir empty label", nfsParams("pathPattern", "${.PVC.labels.}"), []string{"pathPattern", "unknown variable"}},
		// Errors Parse finds in a translated value name carve's key; the note names the alias.
		{"subDir absolute", nfsParams("subDir", "/${pvc.metadata.name}"), []string{"pathPattern", "relative", "carve read subDir (csi-driver-nfs) as pathPattern"}},
		{"volumeoptions reserved", heketi("volumetype", "replicate:2", "volumeoptions", "features.quota on"), []string{"volumeOptions", "carve sets"}},
		{"volumenameprefix underscore", heketi("volumetype", "replicate:2", "volumenameprefix", "a_b"), []string{"volumeNamePrefix", "'_'"}},
		{"volumeoptions without a volume per claim", glusterParams("volumeoptions", "nl-cache on"), []string{"volumeOptions applies to mode volume only"}},
		{"misspelt alias still unknown", nfsParams("subdirectory", "x"), []string{`unknown parameter "subdirectory"`, "subDir, mountPermissions, archiveOnDelete, volumetype", "pathPattern"}},
	} {
		t.Run(tc.name, func(t *testing.T) { wantErr(t, tc.in, tc.contains...) })
	}
}

func TestContradictions(t *testing.T) {
	vol := func(extra ...string) map[string]string {
		return glusterParams(append([]string{"volume", "<unset>", "brickRootPaths", "g1:/b,g2:/b,g3:/b"}, extra...)...)
	}
	for _, tc := range []struct {
		name     string
		in       map[string]string
		contains []string
	}{
		{"subDir and pathPattern", nfsParams("subDir", "${pvc.metadata.name}", "pathPattern", "x/${pvc.metadata.name}"), []string{"subDir", "pathPattern", "keep one"}},
		{"subDir and nfs-subdir pathPattern", nfsParams("subDir", "${pvc.metadata.name}", "pathPattern", "${.PVC.namespace}"), []string{"subDir", "pathPattern"}},
		{"archiveOnDelete false, onDelete archive", nfsParams("archiveOnDelete", "false", "onDelete", "archive"),
			[]string{`archiveOnDelete="false" (nfs-subdir-external-provisioner) means onDelete="delete"`, `onDelete="archive"`, "keep one of archiveOnDelete and onDelete"}},
		{"archiveOnDelete true, onDelete retain", nfsParams("archiveOnDelete", "true", "onDelete", "retain"), []string{"archiveOnDelete", "onDelete"}},
		{"mountPermissions and mode", nfsParams("mountPermissions", "0777", "mode", "2770"), []string{"mountPermissions", "mode"}},
		{"volumetype and replica", vol("volumetype", "replicate:3", "replica", "1"), []string{"volumetype", "replica"}},
		{"volumetype and mode subdir", vol("volumetype", "replicate:3", "mode", "subdir"), []string{"volumetype", "mode"}},
		{"volumetype and mode octal", vol("volumetype", "none", "mode", "0750"), []string{"volumetype", "mode"}},
		{"volumetype and mountPermissions", vol("volumetype", "none", "mountPermissions", "0750"), []string{"volumetype", "mountPermissions"}},
		{"one key in two cases", nfsParams("onDelete", "retain", "ONDELETE", "retain"), []string{"ONDELETE and onDelete differ only in case"}},
		{"volumeType and volumetype", nfsParams("volumeType", "csi", "volumetype", "replicate:3"), []string{"volumeType", "volumetype"}},
	} {
		t.Run(tc.name, func(t *testing.T) { wantErr(t, tc.in, tc.contains...) })
	}

	// The same meaning twice is no contradiction.
	for _, in := range []map[string]string{
		nfsParams("subDir", "${pvc.metadata.name}", "pathPattern", "${pvc.metadata.name}"),
		nfsParams("subDir", "${pvc.metadata.namespace}-${pvc.metadata.name}", "pathPattern", "${.PVC.namespace}-${.PVC.name}"),
		nfsParams("archiveOnDelete", "true", "onDelete", "Archive"),
		nfsParams("archiveOnDelete", "false", "onDelete", "delete"),
		nfsParams("mountPermissions", "0750", "mode", "750"),
		nfsParams("mountPermissions", "0", "mode", "0750"),
		vol("volumetype", "replicate:3", "replica", "3", "mode", "volume"),
	} {
		mustParse(t, in)
	}
}

// Classes written for the anchors, in the spirit of their READMEs, with what
// carve needs added (backend; the NFS server and share nfs-subdir takes from
// its Deployment; Gluster servers and brick roots heketi knew by itself).
func TestAnchorClasses(t *testing.T) {
	t.Run("nfs-subdir-external-provisioner", func(t *testing.T) {
		c := mustParse(t, map[string]string{
			"backend": "nfs", "server": "10.3.243.101", "share": "/ifs/kubernetes",
			"pathPattern": "${.PVC.namespace}/${.PVC.annotations.nfs.io/storage-path}",
			"onDelete":    "delete",
		})
		if c.OnDelete != OnDeleteDelete || !c.PathPattern.Namespaced() || !c.PathPattern.UsesMetadata() {
			t.Errorf("config = %+v", c)
		}
		segs, err := c.PathPattern.Render(Vars{Namespace: "ns", Name: "c", Annotations: map[string]string{"nfs.io/storage-path": "test-path"}})
		if err != nil || !reflect.DeepEqual(segs, []string{"ns", "test-path"}) {
			t.Errorf("render = %q, %v", segs, err)
		}
		c = mustParse(t, map[string]string{"backend": "nfs", "server": "10.3.243.101", "share": "/ifs/kubernetes", "archiveOnDelete": "false"})
		if c.OnDelete != OnDeleteDelete || c.PathPattern.String() != DefaultPathPattern {
			t.Errorf("config = %+v", c)
		}
	})
	t.Run("csi-driver-nfs", func(t *testing.T) {
		c := mustParse(t, map[string]string{
			"backend": "nfs", "server": "nfs-server.default.svc.cluster.local", "share": "/",
			"subDir":           "${pvc.metadata.namespace}/${pvc.metadata.name}/${pv.metadata.name}",
			"mountPermissions": "0",
			"onDelete":         "archive",
			"uid":              "243", "gid": "243",
			"csi.storage.k8s.io/provisioner-secret-name":      "mount-options",
			"csi.storage.k8s.io/provisioner-secret-namespace": "default",
		})
		if c.Server != "nfs-server.default.svc.cluster.local" || c.Share != "/" || c.OnDelete != OnDeleteArchive ||
			c.PathPattern.String() != "${pvc.metadata.namespace}/${pvc.metadata.name}/${pv.metadata.name}" ||
			*c.UID != 243 || *c.GID != 243 || c.Mode != nil {
			t.Errorf("config = %+v", c)
		}
	})
	t.Run("kubernetes.io/glusterfs", func(t *testing.T) {
		original := map[string]string{
			"resturl": "http://127.0.0.1:8081", "restuser": "admin", "secretName": "heketi-secret", "secretNamespace": "default",
			"gidMin": "40000", "gidMax": "50000", "volumeoptions": "group metadata-cache, nl-cache on",
			"volumetype": "replicate:3", "volumenameprefix": "custom",
		}
		wantErr(t, original, "resturl", "restuser", "secretName", "secretNamespace", "brickRootPaths")

		migrated := map[string]string{"backend": "gluster", "servers": "g1,g2,g3", "brickRootPaths": "g1:/bricks,g2:/bricks,g3:/bricks"}
		for k, v := range original {
			if !strings.HasPrefix(k, "rest") && !strings.HasPrefix(k, "secret") {
				migrated[k] = v
			}
		}
		c := mustParse(t, migrated)
		want := &GlusterConfig{
			Servers: []string{"g1", "g2", "g3"}, Mode: GlusterModeVolume, Quota: QuotaAuto, Replica: 3,
			BrickRootPaths:   []BrickRoot{{"g1", "/bricks"}, {"g2", "/bricks"}, {"g3", "/bricks"}},
			VolumeOptions:    []VolumeOption{{"group", "metadata-cache"}, {"nl-cache", "on"}},
			VolumeNamePrefix: "custom", Executor: ExecutorLocal,
		}
		if !reflect.DeepEqual(c.Gluster, want) || c.GIDMin != 40000 || c.GIDMax != 50000 || c.VolumeType != VolumeTypeCSI {
			t.Errorf("config = %+v\ngluster = %+v\nwant      %+v", c, c.Gluster, want)
		}
	})
}

// The README's "Coming from" section and docs/gluster.md list every alias and refused key.
func TestAliasesDocumented(t *testing.T) {
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	readme, gluster := read("../../README.md"), read("../../docs/gluster.md")
	for _, a := range Aliases {
		if !strings.Contains(readme, "`"+a.Key) {
			t.Errorf("README.md does not mention %s", a.Key)
		}
	}
	for _, r := range RefusedKeys {
		if !strings.Contains(readme, "`"+r.Key+"`") || !strings.Contains(gluster, "`"+r.Key+"`") {
			t.Errorf("README.md or docs/gluster.md does not mention %s", r.Key)
		}
	}
}

func TestParseAnyPattern(t *testing.T) {
	vars := Vars{Namespace: "web", Name: "data-web-0", PVName: "pvc-1", Labels: map[string]string{"app": "mongo"}}
	for in, want := range map[string]string{
		"${pvc.metadata.namespace}-${pvc.metadata.name}-${pv.metadata.name}": "web-data-web-0-pvc-1",
		"/${.PVC.labels.app}/${.PVC.namespace}/${.PVC.name}/":                "mongo/web/data-web-0",
	} {
		p, err := ParseAnyPattern(in)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		got, err := p.Render(vars)
		if err != nil || strings.Join(got, "/") != want {
			t.Errorf("%q renders %q (%v), want %q", in, got, err, want)
		}
	}
	if _, err := ParseAnyPattern("${.PVC.uid}"); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown nfs-subdir variable: %v", err)
	}
}
