// Package httpserve runs the small HTTP endpoints both binaries expose:
// Prometheus metrics and health probes.
package httpserve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// Check is one readiness condition; nil means ready.
type Check func(ctx context.Context) error

// Health returns a mux with /healthz (the process answers) and /readyz
// (every check passes).
func Health(checks map[string]Check) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		for name, c := range checks {
			if err := c(ctx); err != nil {
				http.Error(w, name+": "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// Synced is a readiness check that passes once every informer has synced:
// a replica that does not yet know the cluster's volumes must get no work.
func Synced(informers map[string]cache.InformerSynced) Check {
	return func(context.Context) error {
		for name, synced := range informers {
			if !synced() {
				return fmt.Errorf("the %s cache has not synced yet", name)
			}
		}
		return nil
	}
}

// Serve listens on addr (a no-op for "") until ctx ends. The listener is opened
// before it returns, so a bad address is a start-up error, not a log line.
func Serve(ctx context.Context, name, addr string, h http.Handler) error {
	if addr == "" {
		return nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	go func() {
		klog.FromContext(ctx).Info("Serving", "endpoint", name, "address", lis.Addr().String())
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.FromContext(ctx).Error(err, "HTTP server stopped", "endpoint", name)
		}
	}()
	return nil
}
