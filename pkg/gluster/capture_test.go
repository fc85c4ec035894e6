package gluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/carve-csi/carve/internal/testenv/glusterd"
)

// TestCaptureCLIOutput regenerates testdata/*.xml from the real gluster CLI:
//
//	CARVE_GLUSTER_CAPTURE=1 go test ./pkg/gluster -run TestCaptureCLIOutput
//
// Each file holds stdout of one `gluster --mode=script --xml` call; files
// ending in .exit hold the exit code and stderr of calls that fail.
func TestCaptureCLIOutput(t *testing.T) {
	if os.Getenv("CARVE_GLUSTER_CAPTURE") != "1" {
		t.Skip("set CARVE_GLUSTER_CAPTURE=1 to regenerate testdata from the real gluster CLI")
	}
	c := cluster(t)
	c.RequireOwned(t)
	capture := func(file string, args ...string) {
		t.Helper()
		full := append([]string{"--mode=script", "--xml"}, args...)
		cmd := exec.Command("gluster", full...)
		var stderr []byte
		out, err := cmd.Output()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			stderr = ee.Stderr
		} else if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("testdata", file+".xml"), out, 0o644); err != nil {
			t.Fatal(err)
		}
		code := 0
		if ee != nil {
			code = ee.ExitCode()
		}
		meta := fmt.Sprintf("args: %q\nexit: %d\nstderr: %s\n", args, code, stderr)
		if err := os.WriteFile(filepath.Join("testdata", file+".meta"), []byte(meta), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	v := c.CreateVolume(t, "capvol", 1)
	r3 := c.CreateVolume(t, "capr3", 3, glusterd.WithOption("performance.quick-read", "off"))
	_ = r3
	capture("quota-list-disabled", "volume", "quota", v.Name, "list")
	capture("quota-limit-disabled", "volume", "quota", v.Name, "limit-usage", "/a", "1048576")
	mnt := c.Mount(t, v.Name)
	for _, d := range []string{"a", "b", "dir with space"} {
		if err := os.Mkdir(filepath.Join(mnt, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	capture("quota-enable", "volume", "quota", v.Name, "enable")
	capture("quota-enable-again", "volume", "quota", v.Name, "enable")
	capture("quota-list-empty", "volume", "quota", v.Name, "list")
	capture("quota-limit", "volume", "quota", v.Name, "limit-usage", "/a", "1048576")
	capture("quota-limit-space", "volume", "quota", v.Name, "limit-usage", "/dir with space", "2097152")
	capture("quota-limit-missing-dir", "volume", "quota", v.Name, "limit-usage", "/nope", "1048576")
	capture("quota-list", "volume", "quota", v.Name, "list")
	capture("quota-list-path", "volume", "quota", v.Name, "list", "/a")
	capture("quota-list-path-nolimit", "volume", "quota", v.Name, "list", "/b")
	capture("quota-remove", "volume", "quota", v.Name, "remove", "/a")
	capture("quota-remove-again", "volume", "quota", v.Name, "remove", "/a")
	capture("quota-remove-missing-dir", "volume", "quota", v.Name, "remove", "/nope")
	capture("set-deem-statfs", "volume", "set", v.Name, "quota-deem-statfs", "on")
	capture("set-user-option", "volume", "set", v.Name, "user.carve.pv", "pvc-123")
	capture("set-bad-option", "volume", "set", v.Name, "no.such.option", "x")
	capture("set-group", "volume", "set", v.Name, "group", "db-workload")
	capture("info-single", "volume", "info", v.Name)
	capture("info-r3", "volume", "info", r3.Name)
	capture("info-all", "volume", "info")
	capture("info-missing", "volume", "info", "nosuchvol")
	capture("quota-list-missing-vol", "volume", "quota", "nosuchvol", "list")
	capture("uuid-get", "system::", "uuid", "get")

	root := filepath.Join(c.BrickRoot(), "cap-created")
	for _, r := range []string{"r1", "r2", "r3"} {
		if err := os.MkdirAll(filepath.Join(root, r), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	h := c.Host()
	bricks := []string{h + ":" + root + "/r1/capnew", h + ":" + root + "/r2/capnew", h + ":" + root + "/r3/capnew"}
	capture("create-noforce", append([]string{"volume", "create", "capnew", "replica", "3"}, bricks...)...)
	capture("create", append(append([]string{"volume", "create", "capnew", "replica", "3"}, bricks...), "force")...)
	capture("create-exists", append(append([]string{"volume", "create", "capnew", "replica", "3"}, bricks...), "force")...)
	capture("create-bad-name", "volume", "create", "bad.name", h+":"+root+"/r1/bad", "force")
	capture("create-missing-root", "volume", "create", "capmiss", h+":"+root+"/nope/capmiss", "force")
	capture("info-created", "volume", "info", "capnew")
	capture("start", "volume", "start", "capnew")
	capture("start-again", "volume", "start", "capnew")
	capture("delete-started", "volume", "delete", "capnew")
	capture("stop", "volume", "stop", "capnew")
	capture("stop-again", "volume", "stop", "capnew")
	capture("info-stopped", "volume", "info", "capnew")
	capture("delete", "volume", "delete", "capnew")
	capture("delete-missing", "volume", "delete", "capnew")
	capture("create-reuse-brick", append(append([]string{"volume", "create", "capnew2", "replica", "3"}, bricks...), "force")...)
	ctx := context.Background()
	_, _ = c.Gluster(ctx, "volume", "stop", "capnew2", "force")
	_, _ = c.Gluster(ctx, "volume", "delete", "capnew2")

	if err := c.StopGlusterd(); err != nil {
		t.Fatal(err)
	}
	capture("glusterd-down-info", "volume", "info", v.Name)
	capture("glusterd-down-quota", "volume", "quota", v.Name, "limit-usage", "/b", "1048576")
	if err := c.RestartGlusterd(); err != nil {
		t.Fatal(err)
	}
}
