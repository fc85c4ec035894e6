// Command carve-registrar registers a CSI node plugin with the kubelet
// through the kubelet's plugin registration API (k8s.io/kubelet
// pluginregistration/v1). It accepts the flags deploy/csi-driver/node.yaml
// gives node-driver-registrar, so an image of it is a drop-in replacement
// there:
//
//	--csi-address                 the driver's socket inside this container
//	--kubelet-registration-path   the same socket as the kubelet sees it (host path)
//	--plugin-registration-path    the kubelet's plugins_registry directory as mounted here (default /registration)
//	--http-endpoint               optional health endpoint: GET /healthz
//
// It asks the driver its name (GetPluginInfo), serves the registration
// socket <name>-reg.sock, and reports healthy once the kubelet has
// confirmed the registration and the socket is still in place.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/carve-csi/carve/build/sidecars/internal/csiconn"
)

// version is set with -ldflags -X main.version=...
var version = "dev"

type server struct {
	registerapi.UnimplementedRegistrationServer
	name, endpoint string

	mu         sync.Mutex
	registered bool
	lastErr    string
}

func (s *server) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              s.name,
		Endpoint:          s.endpoint,
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

func (s *server) NotifyRegistrationStatus(_ context.Context, st *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	s.mu.Lock()
	s.registered, s.lastErr = st.PluginRegistered, st.Error
	s.mu.Unlock()
	if st.PluginRegistered {
		log.Printf("kubelet registered plugin %s at %s", s.name, s.endpoint)
	} else {
		log.Printf("kubelet refused plugin %s: %s", s.name, st.Error)
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

func (s *server) health(socket string) error {
	s.mu.Lock()
	registered, lastErr := s.registered, s.lastErr
	s.mu.Unlock()
	if _, err := os.Lstat(socket); err != nil {
		return fmt.Errorf("registration socket: %v", err)
	}
	if !registered {
		if lastErr != "" {
			return fmt.Errorf("not registered: %s", lastErr)
		}
		return errors.New("not registered yet")
	}
	return nil
}

func main() {
	csiAddress := flag.String("csi-address", "/run/csi/socket", "the CSI driver's socket, as this container sees it")
	kubeletPath := flag.String("kubelet-registration-path", "", "the CSI driver's socket as the kubelet sees it (required)")
	regDir := flag.String("plugin-registration-path", "/registration", "the kubelet's plugins_registry directory, as this container sees it")
	httpEndpoint := flag.String("http-endpoint", "", "address for GET /healthz (empty: none)")
	timeout := flag.Duration("timeout", time.Minute, "how long to wait for the driver's GetPluginInfo")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Int("v", 0, "log verbosity (accepted for compatibility)")
	flag.Parse()
	if *showVersion {
		fmt.Println("carve-registrar", version)
		return
	}
	if *kubeletPath == "" {
		log.Fatal("--kubelet-registration-path is required")
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, options{
		csiAddress: *csiAddress, kubeletPath: *kubeletPath, regDir: *regDir,
		httpEndpoint: *httpEndpoint, timeout: *timeout,
	}); err != nil {
		log.Fatal(err)
	}
}

type options struct {
	csiAddress, kubeletPath, regDir, httpEndpoint string
	timeout                                       time.Duration
}

// run registers the driver until ctx ends, then removes the socket.
func run(ctx context.Context, o options) error {
	conn, err := csiconn.Dial(o.csiAddress)
	if err != nil {
		return fmt.Errorf("dial %s: %w", o.csiAddress, err)
	}
	dctx, cancel := context.WithTimeout(ctx, o.timeout)
	driver, err := csiconn.DriverName(dctx, conn)
	cancel()
	conn.Close()
	if err != nil {
		return fmt.Errorf("driver at %s: %w", o.csiAddress, err)
	}
	log.Printf("carve-registrar %s: driver %s, kubelet endpoint %s", version, driver, o.kubeletPath)

	socket := filepath.Join(o.regDir, driver+"-reg.sock")
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale %s: %w", socket, err)
	}
	lis, err := net.Listen("unix", socket)
	if err != nil {
		return fmt.Errorf("listen %s: %w", socket, err)
	}
	defer os.Remove(socket)
	srv := &server{name: driver, endpoint: o.kubeletPath}
	g := grpc.NewServer()
	registerapi.RegisterRegistrationServer(g, srv)

	if o.httpEndpoint != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
			if err := srv.health(socket); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ok")
		})
		hl, err := net.Listen("tcp", o.httpEndpoint)
		if err != nil {
			return fmt.Errorf("health endpoint: %w", err)
		}
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = hs.Serve(hl) }()
		defer hs.Close()
	}
	go func() {
		<-ctx.Done()
		log.Printf("stopping, removing %s", socket)
		g.Stop()
	}()
	if err := g.Serve(lis); err != nil && ctx.Err() == nil {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
