package csidriver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"k8s.io/klog/v2"

	"github.com/carve-csi/carve/pkg/dirvol"
	"github.com/carve-csi/carve/pkg/httpserve"
	"github.com/carve-csi/carve/pkg/volume"
)

// Register adds the services of this driver's mode to srv.
func (d *Driver) Register(srv *grpc.Server) {
	csi.RegisterIdentityServer(srv, d.identity)
	if d.controller != nil {
		csi.RegisterControllerServer(srv, d.controller)
	}
	if d.node != nil {
		csi.RegisterNodeServer(srv, d.node)
	}
}

// Serve listens on the endpoint and serves gRPC (and the HTTP endpoints)
// until ctx ends, then stops gracefully.
func (d *Driver) Serve(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	lis, err := listen(d.cfg.Endpoint)
	if err != nil {
		return err
	}
	m := d.metrics
	srv := grpc.NewServer(grpc.UnaryInterceptor(interceptor(logger, m)))
	d.Register(srv)

	if err := httpserve.Serve(ctx, "health", d.cfg.HealthAddress, httpserve.Health(map[string]httpserve.Check{
		"shares":       d.checkShares,
		"cluster view": d.checkView,
	})); err != nil {
		lis.Close()
		return fmt.Errorf("--health-address: %w", err)
	}
	if err := httpserve.Serve(ctx, "metrics", d.cfg.MetricsAddress, promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})); err != nil {
		lis.Close()
		return fmt.Errorf("--metrics-address: %w", err)
	}
	if d.controller != nil {
		volume.PurgeLeftovers(ctx, d.cfg.MountMap)
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	logger.Info("Serving CSI", "driver", d.cfg.Name, "version", d.cfg.Version, "mode", d.cfg.Mode,
		"node", d.cfg.NodeID, "endpoint", lis.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("gRPC server: %w", err)
	case <-ctx.Done():
	}
	logger.Info("Stopping CSI server")
	// Let running calls finish (a mount, a carve), but not forever.
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		srv.Stop()
	}
	d.svc.WaitPurges()
	return nil
}

// checkShares: every mapped share is verified to be the share (a node
// plugin only reads).
func (d *Driver) checkShares(context.Context) error {
	return volume.CheckShares(d.cfg.MountMap, d.controller == nil)
}

// listen opens a CSI endpoint: unix:///abs/path, unix://rel/path, a bare
// path, or tcp://host:port. A stale unix socket from an earlier run is removed.
func listen(endpoint string) (net.Listener, error) {
	network, addr, err := parseEndpoint(endpoint)
	if err != nil {
		return nil, err
	}
	if network == "unix" {
		if err := os.MkdirAll(filepath.Dir(addr), 0o750); err != nil {
			return nil, fmt.Errorf("endpoint directory: %w", err)
		}
		if err := os.Remove(addr); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale socket %s: %w", addr, err)
		}
	}
	lis, err := net.Listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", endpoint, err)
	}
	return lis, nil
}

func parseEndpoint(ep string) (network, addr string, err error) {
	if ep == "" {
		return "", "", errors.New("empty endpoint: want unix:///path/csi.sock or tcp://host:port")
	}
	if !strings.Contains(ep, "://") {
		return "unix", ep, nil
	}
	u, err := url.Parse(ep)
	if err != nil {
		return "", "", fmt.Errorf("endpoint %q: %w", ep, err)
	}
	switch u.Scheme {
	case "unix":
		p := u.Host + u.Path // unix://rel/path puts "rel" in Host
		if p == "" {
			return "", "", fmt.Errorf("endpoint %q: no socket path", ep)
		}
		return "unix", p, nil
	case "tcp":
		if u.Host == "" {
			return "", "", fmt.Errorf("endpoint %q: no host:port", ep)
		}
		return "tcp", u.Host, nil
	}
	return "", "", fmt.Errorf("endpoint %q: scheme must be unix or tcp", ep)
}

// metrics count CSI calls by method and result code, and follow the copies
// snapshots, restores and clones make in the directory layout (as the
// dirvol.CopyObserver each call's context carries).
type metrics struct {
	registry *prometheus.Registry
	calls    *prometheus.CounterVec
	duration *prometheus.HistogramVec

	copies        *prometheus.GaugeVec
	copyFiles     *prometheus.CounterVec
	copyBytes     *prometheus.CounterVec
	copyReflinked *prometheus.CounterVec
	copyDuration  *prometheus.HistogramVec
}

func newMetrics() *metrics {
	kind := []string{"kind"}
	m := &metrics{
		registry: prometheus.NewRegistry(),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carve_csi_operations_total",
			Help: "CSI calls by method and gRPC code.",
		}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "carve_csi_operation_duration_seconds",
			Help:    "Duration of CSI calls by method.",
			Buckets: []float64{.005, .025, .1, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"method"}),
		copies: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "carve_copies_in_progress",
			Help: "Copies running now (snapshots, restores, clones of the directory layout), by kind.",
		}, kind),
		copyFiles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carve_copy_files_total",
			Help: "Files copied (regular files and fifos), by kind of copy; counted as each file is done.",
		}, kind),
		copyBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carve_copy_bytes_total",
			Help: "Bytes of file data copied or reflinked, by kind of copy; holes left holes are not counted. Counted as each chunk is done.",
		}, kind),
		copyReflinked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carve_copy_reflinked_bytes_total",
			Help: "Of carve_copy_bytes_total, the bytes shared with FICLONE (reflinks) rather than copied, by kind of copy.",
		}, kind),
		copyDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "carve_copy_duration_seconds",
			Help:    "Duration of copies, by kind and result (success, error).",
			Buckets: []float64{.01, .1, 1, 10, 60, 300, 900, 1800, 3600, 3 * 3600, 12 * 3600},
		}, []string{"kind", "result"}),
	}
	m.registry.MustRegister(m.calls, m.duration, m.copies, m.copyFiles, m.copyBytes, m.copyReflinked, m.copyDuration)
	// Every kind from the start, at zero: a rate over them needs no
	// first copy to have happened.
	for _, k := range []dirvol.CopyKind{dirvol.CopySnapshot, dirvol.CopyRestore, dirvol.CopyClone} {
		m.copies.WithLabelValues(string(k))
		m.copyFiles.WithLabelValues(string(k))
		m.copyBytes.WithLabelValues(string(k))
		m.copyReflinked.WithLabelValues(string(k))
	}
	return m
}

// CopyStarted implements dirvol.CopyObserver.
func (m *metrics) CopyStarted(kind dirvol.CopyKind) dirvol.CopyProgress {
	k := string(kind)
	p := &copyProgress{m: m, kind: k, inProgress: m.copies.WithLabelValues(k), files: m.copyFiles.WithLabelValues(k),
		bytes: m.copyBytes.WithLabelValues(k), reflinked: m.copyReflinked.WithLabelValues(k)}
	p.inProgress.Inc()
	return p
}

// copyProgress follows one copy, its counters resolved once.
type copyProgress struct {
	m                       *metrics
	kind                    string
	inProgress              prometheus.Gauge
	files, bytes, reflinked prometheus.Counter
}

func (p *copyProgress) Copied(files, bytes, reflinked int64) {
	if files > 0 {
		p.files.Add(float64(files))
	}
	if bytes > 0 {
		p.bytes.Add(float64(bytes))
	}
	if reflinked > 0 {
		p.reflinked.Add(float64(reflinked))
	}
}

func (p *copyProgress) Finished(stats dirvol.CopyStats, err error) {
	p.inProgress.Dec()
	result := "success"
	if err != nil {
		result = "error"
	}
	p.m.copyDuration.WithLabelValues(p.kind, result).Observe(stats.Elapsed.Seconds())
}

// interceptor gives each call a logger with its method, logs the request
// without secrets at V(5), every failure, and records metrics.
func interceptor(base klog.Logger, m *metrics) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		method := info.FullMethod[strings.LastIndex(info.FullMethod, "/")+1:]
		logger := base.WithValues("method", method)
		if v := logger.V(5); v.Enabled() {
			v.Info("CSI request", "request", sanitize(req))
		}
		start := time.Now()
		ctx = klog.NewContext(ctx, logger)
		if m != nil {
			ctx = dirvol.WithCopyObserver(ctx, m)
		}
		resp, err := handler(ctx, req)
		elapsed := time.Since(start)
		code := status.Code(err)
		if m != nil {
			m.calls.WithLabelValues(method, code.String()).Inc()
			m.duration.WithLabelValues(method).Observe(elapsed.Seconds())
		}
		if err != nil {
			logger.Error(err, "CSI call failed", "code", code.String(), "duration", elapsed)
		} else {
			logger.V(4).Info("CSI call succeeded", "duration", elapsed)
		}
		return resp, err
	}
}

const stripped = "***stripped***"

// sanitize renders a request for the log with every field marked csi_secret
// in csi.proto replaced, the way csi-lib-utils' protosanitizer does.
func sanitize(req any) string {
	msg, ok := req.(proto.Message)
	if !ok {
		return fmt.Sprintf("%T", req)
	}
	c := proto.Clone(msg)
	stripSecrets(c.ProtoReflect())
	b, err := protojson.Marshal(c)
	if err != nil {
		return fmt.Sprintf("<%T: %v>", req, err)
	}
	return string(b)
}

func stripSecrets(m protoreflect.Message) {
	var secrets []protoreflect.FieldDescriptor
	var nested []protoreflect.Message
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if opts := fd.Options(); opts != nil && proto.GetExtension(opts, csi.E_CsiSecret).(bool) {
			secrets = append(secrets, fd)
			return true
		}
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				nested = append(nested, l.Get(i).Message())
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				nested = append(nested, mv.Message())
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			nested = append(nested, v.Message())
		}
		return true
	})
	for _, fd := range secrets {
		switch {
		case fd.IsMap() && fd.MapValue().Kind() == protoreflect.StringKind:
			mp := m.Mutable(fd).Map()
			var keys []protoreflect.MapKey
			mp.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool { keys = append(keys, k); return true })
			for _, k := range keys {
				mp.Set(k, protoreflect.ValueOfString(stripped))
			}
		case !fd.IsList() && !fd.IsMap() && fd.Kind() == protoreflect.StringKind:
			m.Set(fd, protoreflect.ValueOfString(stripped))
		default:
			m.Clear(fd)
		}
	}
	for _, n := range nested {
		stripSecrets(n)
	}
}
