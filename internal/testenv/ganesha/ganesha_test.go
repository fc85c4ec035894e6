package ganesha_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/carve-csi/carve/internal/testenv/ganesha"
)

func TestExportListAndRead(t *testing.T) {
	dir := t.TempDir()
	content := []byte("hello over NFS\n")
	if err := os.WriteFile(filepath.Join(dir, "hello.txt"), content, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub dir"), 0o755); err != nil {
		t.Fatal(err)
	}

	srv := ganesha.Start(t, dir)
	if srv.Server() != "127.0.0.1" || srv.Export() != "/export" {
		t.Fatalf("Server()/Export() = %q/%q, want 127.0.0.1 and /export", srv.Server(), srv.Export())
	}

	names, err := srv.List(srv.Export())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(names, "hello.txt") || !slices.Contains(names, "sub dir") {
		t.Fatalf("List(/export) = %q, want hello.txt and \"sub dir\"", names)
	}
	got, err := srv.ReadFile("/export/hello.txt")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, content) {
		t.Fatalf("ReadFile = %q, want %q", got, content)
	}

	// Changes made in the local directory after start must show up over NFS
	// at once (Attr_Expiration_Time = 0), as the controller writes locally.
	bin := make([]byte, 1<<20)
	rand.Read(bin)
	if err := os.WriteFile(filepath.Join(dir, "sub dir", "blob"), bin, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".hidden"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	names, err = srv.List("/export")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(names, ".hidden") {
		t.Fatalf("List(/export) after local create = %q, want .hidden", names)
	}
	names, err = srv.List("/export/sub dir")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, []string{"blob"}) {
		t.Fatalf("List(/export/sub dir) = %q, want [blob]", names)
	}
	got, err = srv.ReadFile("/export/sub dir/blob")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, bin) {
		t.Fatalf("ReadFile(blob) returned %d bytes differing from the %d written", len(got), len(bin))
	}

	if _, err := srv.List("/export/missing"); err == nil {
		t.Error("List of a missing directory succeeded")
	}
	if _, err := srv.ReadFile("/export/missing.txt"); err == nil {
		t.Error("ReadFile of a missing file succeeded")
	}
}

// TestStartServerSequential checks that Stop frees the port and the host
// lock so that the next server (here with another pseudo path) can start.
func TestStartServerSequential(t *testing.T) {
	if err := ganesha.Check(); err != nil {
		if os.Getenv("CARVE_REQUIRE_REAL") == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	for i, pseudo := range []string{"/export", "/other"} {
		dir := t.TempDir()
		name := "file" + string(rune('0'+i))
		if err := os.WriteFile(filepath.Join(dir, name), []byte(pseudo), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		start := time.Now()
		srv, err := ganesha.StartServer(ctx, ganesha.Options{ExportDir: dir, Pseudo: pseudo, Logf: t.Logf})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("StartServer(%s) took %s", pseudo, time.Since(start).Round(time.Millisecond))
		got, err := srv.ReadFile(pseudo + "/" + name)
		if err != nil || string(got) != pseudo {
			t.Errorf("ReadFile(%s/%s) = %q, %v; want %q", pseudo, name, got, err, pseudo)
		}
		start = time.Now()
		if err := srv.Stop(); err != nil {
			t.Fatal(err)
		}
		t.Logf("Stop took %s", time.Since(start).Round(time.Millisecond))
		if _, err := os.Stat(srv.LogPath()); !os.IsNotExist(err) {
			t.Errorf("own work dir not removed: stat %s: %v", srv.LogPath(), err)
		}
	}
}

func TestStartServerBadExportDir(t *testing.T) {
	if err := ganesha.Check(); err != nil {
		t.Skip(err)
	}
	_, err := ganesha.StartServer(context.Background(), ganesha.Options{ExportDir: "/nonexistent/carve"})
	if err == nil || !strings.Contains(err.Error(), "export dir") {
		t.Fatalf("StartServer with a missing dir: err = %v, want an export dir error", err)
	}
}
