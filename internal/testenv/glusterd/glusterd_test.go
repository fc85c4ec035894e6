package glusterd_test

import (
	"encoding/xml"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/carve-csi/carve/internal/testenv/glusterd"
)

// volName returns a volume name unlikely to clash on a reused glusterd.
func volName(kind string) string { return fmt.Sprintf("carvetest-%d-%s", os.Getpid(), kind) }

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func checkFile(t *testing.T, path, want string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("%s = %q, want %q", path, got, want)
	}
}

func TestVolumes(t *testing.T) {
	start := time.Now()
	c := glusterd.Start(t)
	t.Logf("glusterd.Start took %s (owned: %v)", time.Since(start).Round(time.Millisecond), c.Owned())
	if host, _ := os.Hostname(); c.Host() != host {
		t.Fatalf("Host() = %q, want %q", c.Host(), host)
	}

	t.Run("SingleBrickMountAndQuota", func(t *testing.T) {
		v := c.CreateVolume(t, volName("single"), 1)
		if len(v.BrickDirs) != 1 || !strings.HasPrefix(v.BrickDirs[0], c.BrickRoot()+"/") {
			t.Fatalf("BrickDirs = %q, want one brick under %s", v.BrickDirs, c.BrickRoot())
		}
		mnt := c.Mount(t, v.Name)
		writeFile(t, filepath.Join(mnt, "hello.txt"), "hello gluster\n")
		checkFile(t, filepath.Join(v.BrickDirs[0], "hello.txt"), "hello gluster\n")

		if err := os.Mkdir(filepath.Join(mnt, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		c.EnableQuota(t, v.Name)
		c.EnableQuota(t, v.Name) // idempotent
		c.MustGluster(t, "volume", "quota", v.Name, "limit-usage", "/sub", "1MB")
		out := c.MustGluster(t, "volume", "quota", v.Name, "list", "--xml")
		var res struct {
			Limits []struct {
				Path      string `xml:"path"`
				HardLimit int64  `xml:"hard_limit"`
			} `xml:"volQuota>limit"`
		}
		if err := xml.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("parse quota list: %v\n%s", err, out)
		}
		if len(res.Limits) != 1 || res.Limits[0].Path != "/sub" || res.Limits[0].HardLimit != 1<<20 {
			t.Fatalf("quota list = %+v, want /sub with a 1 MiB hard limit\n%s", res.Limits, out)
		}

		// Subdirectory mounts expose only the subdirectory.
		sub := c.Mount(t, v.Name+"/sub")
		writeFile(t, filepath.Join(sub, "in-sub.txt"), "sub\n")
		checkFile(t, filepath.Join(v.BrickDirs[0], "sub", "in-sub.txt"), "sub\n")
	})

	t.Run("Replica3", func(t *testing.T) {
		v := c.CreateVolume(t, volName("r3"), 3)
		out := c.MustGluster(t, "volume", "info", v.Name, "--xml")
		var info struct {
			ReplicaCount int    `xml:"volInfo>volumes>volume>replicaCount"`
			BrickCount   int    `xml:"volInfo>volumes>volume>brickCount"`
			TypeStr      string `xml:"volInfo>volumes>volume>typeStr"`
		}
		if err := xml.Unmarshal([]byte(out), &info); err != nil {
			t.Fatalf("parse volume info: %v", err)
		}
		if info.ReplicaCount != 3 || info.BrickCount != 3 || info.TypeStr != "Replicate" {
			t.Fatalf("volume info = %+v, want a 3-brick Replicate volume", info)
		}
		mnt := c.Mount(t, v.Name)
		writeFile(t, filepath.Join(mnt, "replicated.txt"), "x3\n")
		for _, b := range v.BrickDirs {
			checkFile(t, filepath.Join(b, "replicated.txt"), "x3\n")
		}
	})

	t.Run("WithoutStartAndOption", func(t *testing.T) {
		v := c.CreateVolume(t, volName("opts"), 1,
			glusterd.WithOption("performance.quick-read", "off"), glusterd.WithoutStart())
		out := c.MustGluster(t, "volume", "info", v.Name)
		if !strings.Contains(out, "Status: Created") || !strings.Contains(out, "performance.quick-read: off") {
			t.Fatalf("volume info:\n%s\nwant status Created and performance.quick-read: off", out)
		}
	})

	t.Run("XMLErrorsAreErrors", func(t *testing.T) {
		// The CLI exits 0 here and reports the failure in <opRet>.
		_, err := c.Gluster(t.Context(), "volume", "info", volName("missing"), "--xml")
		if err == nil || !strings.Contains(err.Error(), "does not exist") {
			t.Fatalf("err = %v, want a 'does not exist' error", err)
		}
	})
}

func TestStopRestartGlusterd(t *testing.T) {
	c := glusterd.Start(t)
	if !c.Owned() {
		if err := c.StopGlusterd(); !errors.Is(err, glusterd.ErrNotOwned) {
			t.Fatalf("StopGlusterd on a reused glusterd: err = %v, want ErrNotOwned", err)
		}
	}
	c.RequireOwned(t)
	v := c.CreateVolume(t, volName("restart"), 1)
	mnt := c.Mount(t, v.Name)

	start := time.Now()
	if err := c.StopGlusterd(); err != nil {
		t.Fatal(err)
	}
	t.Logf("StopGlusterd took %s", time.Since(start).Round(time.Millisecond))
	if _, err := c.Gluster(t.Context(), "volume", "info", v.Name); err == nil {
		t.Fatal("gluster CLI still works with glusterd stopped")
	}
	// The data path does not depend on glusterd.
	writeFile(t, filepath.Join(mnt, "while-down.txt"), "down\n")
	checkFile(t, filepath.Join(v.BrickDirs[0], "while-down.txt"), "down\n")

	start = time.Now()
	if err := c.RestartGlusterd(); err != nil {
		t.Fatal(err)
	}
	t.Logf("RestartGlusterd took %s", time.Since(start).Round(time.Millisecond))
	out := c.MustGluster(t, "volume", "status", v.Name, "--xml")
	if !strings.Contains(out, "<status>1</status>") {
		t.Fatalf("brick not online after restart:\n%s", out)
	}

	// Leave glusterd stopped: cleanups must restart it to delete the volume.
	if err := c.StopGlusterd(); err != nil {
		t.Fatal(err)
	}
}
