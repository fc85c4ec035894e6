package csidriver

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/carve-csi/carve/pkg/csidriver/internal/sanitytest"
	"github.com/container-storage-interface/spec/lib/go/csi"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/klog/v2/ktesting"
	mount "k8s.io/mount-utils"
)

func TestParseEndpoint(t *testing.T) {
	for _, tc := range []struct{ in, network, addr string }{
		{"unix:///csi/csi.sock", "unix", "/csi/csi.sock"},
		{"unix://csi.sock", "unix", "csi.sock"},
		{"unix://run/csi.sock", "unix", "run/csi.sock"},
		{"/var/lib/csi.sock", "unix", "/var/lib/csi.sock"},
		{"tcp://127.0.0.1:10000", "tcp", "127.0.0.1:10000"},
	} {
		n, a, err := parseEndpoint(tc.in)
		if err != nil || n != tc.network || a != tc.addr {
			t.Errorf("parseEndpoint(%q) = %q, %q, %v; want %q, %q", tc.in, n, a, err, tc.network, tc.addr)
		}
	}
	for _, bad := range []string{"", "unix://", "tcp://", "http://x:1"} {
		if _, _, err := parseEndpoint(bad); err == nil {
			t.Errorf("parseEndpoint(%q) succeeded", bad)
		}
	}
}

func TestListenRemovesStaleSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "csi.sock")
	if err := os.WriteFile(sock, nil, 0o600); err != nil { // left by a crash
		t.Fatal(err)
	}
	lis, err := listen("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	lis.Close()
}

func TestSanitizeStripsSecrets(t *testing.T) {
	req := &csi.NodePublishVolumeRequest{
		VolumeId:   "1#nfs#s#/e#d#retain",
		TargetPath: "/t",
		Secrets:    map[string]string{"password": "hunter2"},
		VolumeCapability: &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{MountFlags: []string{"hard"}}},
		},
	}
	out := sanitize(req)
	if strings.Contains(out, "hunter2") {
		t.Errorf("secret in log: %s", out)
	}
	for _, want := range []string{stripped, "/t", "hard", "password"} {
		if !strings.Contains(out, want) {
			t.Errorf("%s lacks %q", out, want)
		}
	}
	if req.Secrets["password"] != "hunter2" {
		t.Error("sanitize changed the request itself")
	}
	if got := sanitize(&csi.CreateVolumeRequest{Name: "n", Secrets: map[string]string{"k": "v"}}); strings.Contains(got, `"v"`) {
		t.Errorf("CreateVolume secret in log: %s", got)
	}
}

func TestInterceptorCountsCalls(t *testing.T) {
	logger, ctx := ktesting.NewTestContext(t)
	m := newMetrics()
	ic := interceptor(logger, m)
	info := &grpc.UnaryServerInfo{FullMethod: "/csi.v1.Node/NodePublishVolume"}
	_, _ = ic(ctx, &csi.NodePublishVolumeRequest{}, info, func(context.Context, any) (any, error) { return nil, nil })
	_, err := ic(ctx, &csi.NodePublishVolumeRequest{}, info, func(context.Context, any) (any, error) {
		return nil, toStatus(errBusy, lookup)
	})
	if err == nil {
		t.Fatal("error swallowed")
	}
	if n := counter(t, m, "OK"); n != 1 {
		t.Errorf("OK calls = %v", n)
	}
	if n := counter(t, m, "Aborted"); n != 1 {
		t.Errorf("Aborted calls = %v", n)
	}
}

func counter(t *testing.T, m *metrics, code string) float64 {
	t.Helper()
	var out dto.Metric
	if err := m.calls.WithLabelValues("NodePublishVolume", code).Write(&out); err != nil {
		t.Fatal(err)
	}
	return out.GetCounter().GetValue()
}

// TestServeModes checks which services each mode registers.
func TestServeModes(t *testing.T) {
	for _, tc := range []struct {
		mode             Mode
		controller, node bool
	}{{ModeAll, true, true}, {ModeController, true, false}, {ModeNode, false, true}} {
		t.Run(string(tc.mode), func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			ctx, cancel := context.WithCancel(ctx)
			sock := filepath.Join(t.TempDir(), "csi.sock")
			d, err := New(Config{Mode: tc.mode, NodeID: "n", Endpoint: sock}, mount.NewFakeMounter(nil))
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- d.Serve(ctx) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Error(err)
				}
			}()
			sanitytest.WaitForSocket(t, sock)
			conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			caps, err := csi.NewIdentityClient(conn).GetPluginCapabilities(ctx, &csi.GetPluginCapabilitiesRequest{})
			if err != nil {
				t.Fatal(err)
			}
			hasController := false
			for _, c := range caps.Capabilities {
				hasController = hasController || c.GetService().GetType() == csi.PluginCapability_Service_CONTROLLER_SERVICE
			}
			if hasController != tc.controller {
				t.Errorf("CONTROLLER_SERVICE advertised = %v", hasController)
			}
			_, err = csi.NewControllerClient(conn).ControllerGetCapabilities(ctx, &csi.ControllerGetCapabilitiesRequest{})
			if (err == nil) != tc.controller {
				t.Errorf("controller service reachable = %v (%v)", err == nil, err)
			}
			_, err = csi.NewNodeClient(conn).NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
			if (err == nil) != tc.node {
				t.Errorf("node service reachable = %v (%v)", err == nil, err)
			}
		})
	}
}
