package params

import (
	"errors"
	"strings"
	"testing"
)

func TestParseLayout(t *testing.T) {
	c, err := Parse(nfsParams())
	if err != nil || c.Layout != LayoutDirectory {
		t.Fatalf("default layout: %v %v, want directory", c, err)
	}
	for _, v := range []string{"btrfs", "BTRFS", "Btrfs"} {
		c, err := Parse(nfsParams("layout", v))
		if err != nil || c.Layout != LayoutBtrfs {
			t.Errorf("layout %q: %+v %v", v, c, err)
		}
	}
	if c, err := Parse(nfsParams("Layout", "directory")); err != nil || c.Layout != LayoutDirectory {
		t.Errorf("layout directory: %v", err)
	}
	for _, tc := range []struct {
		in   map[string]string
		want string
	}{
		{nfsParams("layout", "zfs"), `layout="zfs": must be directory or btrfs`},
		{nfsParams("layout", ""), `layout="": must be directory or btrfs`},
		{map[string]string{"backend": "gluster", "glusterServers": "g1", "glusterVolume": "v", "layout": "btrfs"},
			`layout="btrfs" applies to backend nfs only`},
	} {
		_, err := Parse(tc.in)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%v): %v, want %q", tc.in, err, tc.want)
		}
	}
}

func TestParseBtrfsExecutor(t *testing.T) {
	c, err := Parse(nfsParams("layout", "btrfs"))
	if err != nil || c.Btrfs == nil || c.Btrfs.Executor != ExecutorLocal {
		t.Fatalf("default btrfs executor: %+v %v, want local", c, err)
	}
	c, err = Parse(nfsParams("layout", "btrfs", "btrfsExecutor", "SSH", "btrfsExecutorSecretName", "k",
		"btrfsExecutorSecretNamespace", "carve", "btrfsHelper", "/usr/local/sbin/carve-btrfs"))
	if err != nil || *c.Btrfs != (BtrfsConfig{Executor: ExecutorSSH, ExecutorSecretName: "k", ExecutorSecretNamespace: "carve",
		Helper: "/usr/local/sbin/carve-btrfs"}) {
		t.Fatalf("btrfs executor ssh: %+v %v", c, err)
	}
	if c, err := Parse(nfsParams("layout", "btrfs", "btrfsexecutor", "ssh", "btrfsExecutorSecretName", "k",
		"btrfsExecutorSecretNamespace", "carve")); err != nil || c.Btrfs.Helper != DefaultBtrfsHelperPath {
		t.Fatalf("default helper: %+v %v", c, err)
	}
	if c, err := Parse(nfsParams()); err != nil || c.Btrfs != nil {
		t.Fatalf("directory layout: %+v %v", c, err)
	}
	for _, tc := range []struct {
		in   map[string]string
		want string
	}{
		{nfsParams("btrfsExecutor", "ssh"), "btrfsExecutor applies to backend nfs with layout btrfs only"},
		{nfsParams("layout", "btrfs", "btrfsExecutor", "rsh"), `btrfsExecutor="rsh": must be local`},
		{nfsParams("layout", "btrfs", "btrfsExecutor", "ssh"), "btrfsExecutor ssh needs btrfsExecutorSecretName and btrfsExecutorSecretNamespace"},
		{nfsParams("layout", "btrfs", "btrfsExecutorSecretName", "k", "btrfsExecutorSecretNamespace", "n"), "are used only with btrfsExecutor ssh"},
		{nfsParams("layout", "btrfs", "btrfsHelper", "/bin/x"), "btrfsHelper is used only with btrfsExecutor ssh"},
		{nfsParams("layout", "btrfs", "btrfsExecutor", "ssh", "btrfsExecutorSecretName", "k", "btrfsExecutorSecretNamespace", "n",
			"btrfsHelper", "carve-btrfs; rm -rf /"), `btrfsHelper="carve-btrfs; rm -rf /": may hold only`},
		{nfsParams("layout", "btrfs", "btrfsExecutor", "ssh", "btrfsExecutorSecretName", "k", "btrfsExecutorSecretNamespace", "n",
			"btrfsHelper", "bin/../carve-btrfs"), "must be a command name or a clean absolute path"},
		{map[string]string{"backend": "gluster", "glusterServers": "g1", "glusterVolume": "v", "btrfsExecutor": "ssh"},
			"btrfsExecutor applies to backend nfs with layout btrfs only"},
	} {
		_, err := Parse(tc.in)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%v): %v, want %q", tc.in, err, tc.want)
		}
	}
}
