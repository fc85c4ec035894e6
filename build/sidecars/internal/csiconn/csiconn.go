// Package csiconn dials a CSI driver's Unix socket and asks its Identity
// service, for carve's own sidecars.
package csiconn

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Dial connects to a CSI endpoint given as a path or unix:// URL. The
// connection is lazy: calls wait for the socket to appear.
func Dial(address string) (*grpc.ClientConn, error) {
	target := address
	if !strings.HasPrefix(target, "unix://") {
		target = "unix://" + address
	}
	return grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// DriverName asks the driver its name, retrying until ctx ends.
func DriverName(ctx context.Context, conn *grpc.ClientConn) (string, error) {
	client := csi.NewIdentityClient(conn)
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := client.GetPluginInfo(cctx, &csi.GetPluginInfoRequest{})
		cancel()
		if err == nil {
			if resp.GetName() == "" {
				return "", fmt.Errorf("driver returned an empty name")
			}
			return resp.GetName(), nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("GetPluginInfo: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(time.Second):
		}
	}
}

// Probe calls the driver's Probe; a driver that answers without a readiness
// value is ready.
func Probe(ctx context.Context, conn *grpc.ClientConn) error {
	resp, err := csi.NewIdentityClient(conn).Probe(ctx, &csi.ProbeRequest{})
	if err != nil {
		return err
	}
	if r := resp.GetReady(); r != nil && !r.GetValue() {
		return fmt.Errorf("driver reports not ready")
	}
	return nil
}
