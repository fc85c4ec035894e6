package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

type identity struct {
	csi.UnimplementedIdentityServer
}

func (identity) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: "carve.csi.dev", VendorVersion: "test"}, nil
}

// TestRegistration plays the kubelet's part: it finds <driver>-reg.sock,
// asks GetInfo, confirms the registration, and /healthz turns healthy.
func TestRegistration(t *testing.T) {
	dir := t.TempDir()
	csiSock := filepath.Join(dir, "csi.sock")
	l, err := net.Listen("unix", csiSock)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	csi.RegisterIdentityServer(g, identity{})
	go func() { _ = g.Serve(l) }()
	defer g.Stop()

	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	healthAddr := hl.Addr().String()
	hl.Close()

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, options{
			csiAddress: csiSock, kubeletPath: "/var/lib/kubelet/plugins/carve.csi.dev/csi.sock",
			regDir: dir, httpEndpoint: healthAddr, timeout: 10 * time.Second,
		})
	}()

	regSock := filepath.Join(dir, "carve.csi.dev-reg.sock")
	health := func() int {
		resp, err := http.Get("http://" + healthAddr + "/healthz")
		if err != nil {
			return 0
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	var info *registerapi.PluginInfo
	var client registerapi.RegistrationClient
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		conn, err := grpc.NewClient("unix://"+regSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err == nil {
			client = registerapi.NewRegistrationClient(conn)
			cctx, ccancel := context.WithTimeout(ctx, time.Second)
			info, err = client.GetInfo(cctx, &registerapi.InfoRequest{})
			ccancel()
			if err == nil {
				defer conn.Close()
				break
			}
			conn.Close()
		}
		time.Sleep(100 * time.Millisecond)
	}
	if info == nil {
		t.Fatal("registration socket never answered GetInfo")
	}
	if info.Type != registerapi.CSIPlugin || info.Name != "carve.csi.dev" ||
		info.Endpoint != "/var/lib/kubelet/plugins/carve.csi.dev/csi.sock" || len(info.SupportedVersions) == 0 {
		t.Fatalf("GetInfo = %+v", info)
	}
	if code := health(); code != http.StatusServiceUnavailable {
		t.Fatalf("healthz before the kubelet confirmed: %d, want 503", code)
	}
	if _, err := client.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatal(err)
	}
	if code := health(); code != http.StatusOK {
		t.Fatalf("healthz after registration: %d, want 200", code)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	if _, err := net.Dial("unix", regSock); err == nil {
		t.Fatal("registration socket still served after stop")
	}
}
