// Package fusemount keeps the node's FUSE clients out of the node plugin's
// container. A FUSE mount works only while its client process (glusterfs)
// runs, and a process lives no longer than its container: clients started
// by the node plugin die when its pod is restarted, upgraded or OOM-killed,
// and every pod using them then reads "Transport endpoint is not
// connected" until it is recreated. A holder process in a pod of its own
// (carve-csi-driver --mode=fuse, the carve-csi-fuse DaemonSet, updated only
// on delete) makes those mounts on the plugin's behalf, over a unix socket,
// so its clients outlive the plugin.
package fusemount

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"k8s.io/klog/v2"
	mount "k8s.io/mount-utils"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/safemount"
)

// FSTypes are the file system types whose mounts go to the holder: those
// with a client process. NFS and bind mounts belong to the kernel and
// survive the plugin on their own.
var FSTypes = []string{"glusterfs"}

// request is one mount; the holder answers with a response.
type request struct {
	Source  string   `json:"source"`
	Target  string   `json:"target"`
	FSType  string   `json:"fstype"`
	Options []string `json:"options,omitempty"`
}

type response struct {
	Error string `json:"error,omitempty"`
	// Invalid: the holder refused the request itself (no retry helps).
	Invalid bool `json:"invalid,omitempty"`
}

const mountPath = "/mount"

// ErrRefused marks a request the holder refuses (type, target outside its
// roots, an option-like argument): an invalid argument, never retried.
var ErrRefused = fmt.Errorf("%w: refused by the FUSE holder", backend.ErrInvalid)

// Server is the holder: it mounts FUSE file systems beneath Roots.
type Server struct {
	// Mounter makes the mounts (mount-utils runs mount -t glusterfs).
	Mounter mount.Interface
	// Roots: targets must be beneath one of these (the kubelet's pods
	// directory), so the socket cannot be used to mount over anything else.
	Roots []string
}

// check refuses what the node plugin never asks for.
func (s *Server) check(req request) error {
	if !slices.Contains(FSTypes, req.FSType) {
		return fmt.Errorf("file system type %q (the holder mounts %s only)", req.FSType, strings.Join(FSTypes, ", "))
	}
	if err := safemount.Check(req.Source, req.Target); err != nil {
		return err
	}
	t := req.Target
	if !filepath.IsAbs(t) || filepath.Clean(t) != t {
		return fmt.Errorf("target %q is not a clean absolute path", t)
	}
	if !slices.ContainsFunc(s.Roots, func(r string) bool { return strings.HasPrefix(t, filepath.Clean(r)+"/") }) {
		return fmt.Errorf("target %q is not beneath %s", t, strings.Join(s.Roots, ", "))
	}
	// A symlink on the way could point the mount anywhere.
	if real, err := filepath.EvalSymlinks(t); err != nil || real != t {
		return fmt.Errorf("target %q must exist and hold no symlink (resolves to %q: %v)", t, real, err)
	}
	return nil
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	logger := klog.FromContext(r.Context())
	if r.URL.Path == "/healthz" {
		_, _ = io.WriteString(w, "ok")
		return
	}
	if r.URL.Path != mountPath || r.Method != http.MethodPost {
		http.NotFound(w, r)
		return
	}
	var req request
	var resp response
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		resp = response{Error: fmt.Sprintf("bad request: %v", err), Invalid: true}
	} else if err := s.check(req); err != nil {
		logger.Info("Refused a mount", "source", req.Source, "target", req.Target, "fstype", req.FSType, "err", err)
		resp = response{Error: err.Error(), Invalid: true}
	} else {
		t0 := time.Now()
		err := s.Mounter.Mount(req.Source, req.Target, req.FSType, req.Options)
		logger.V(2).Info("Mounted", "source", req.Source, "target", req.Target, "fstype", req.FSType,
			"duration", time.Since(t0), "err", err)
		if err != nil {
			resp = response{Error: err.Error()}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

// Serve listens on socket (a stale socket file is replaced; the file is
// root-only) and serves until ctx ends.
func Serve(ctx context.Context, socket string, s *Server) error {
	if err := os.MkdirAll(filepath.Dir(socket), 0o750); err != nil {
		return err
	}
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	l, err := net.Listen("unix", socket)
	if err != nil {
		return err
	}
	if err := os.Chmod(socket, 0o600); err != nil {
		l.Close()
		return err
	}
	logger := klog.FromContext(ctx)
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	go func() {
		<-ctx.Done()
		// The mounts stay: they are the point of this process.
		_ = srv.Close()
	}()
	logger.Info("FUSE holder serving", "socket", socket, "roots", s.Roots)
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Client is a mount.Interface whose FUSE mounts (FSTypes) are made by the
// holder listening on Socket; everything else, unmounts included, is the
// embedded local Interface's (an unmount ends the client process wherever
// it runs).
type Client struct {
	mount.Interface
	Socket string
	http   *http.Client
}

// NewClient returns a Client for the holder at socket.
func NewClient(socket string, local mount.Interface) *Client {
	return &Client{
		Interface: local,
		Socket:    socket,
		http: &http.Client{
			// mount.glusterfs waits for the volfile and the bricks.
			Timeout: 2 * time.Minute,
			Transport: &http.Transport{
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, "unix", socket)
				},
			},
		},
	}
}

// Mount sends FUSE mounts to the holder.
func (c *Client) Mount(source, target, fstype string, options []string) error {
	if !slices.Contains(FSTypes, fstype) {
		return c.Interface.Mount(source, target, fstype, options)
	}
	body, err := json.Marshal(request{Source: source, Target: target, FSType: fstype, Options: options})
	if err != nil {
		return err
	}
	r, err := c.http.Post("http://fuse"+mountPath, "application/json", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: the FUSE holder (carve-csi-fuse) at %s does not answer: %w", backend.ErrUnavailable, c.Socket, err)
	}
	defer r.Body.Close()
	var resp response
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&resp); err != nil {
		return fmt.Errorf("%w: the FUSE holder at %s: bad answer (HTTP %s): %w", backend.ErrUnavailable, c.Socket, r.Status, err)
	}
	switch {
	case resp.Error == "":
		return nil
	case resp.Invalid:
		return fmt.Errorf("%w: %s", ErrRefused, resp.Error)
	default:
		return fmt.Errorf("FUSE holder: %s", resp.Error)
	}
}

// MountSensitive: carve passes no sensitive options to FUSE mounts; they
// take the same path as Mount.
func (c *Client) MountSensitive(source, target, fstype string, options, sensitive []string) error {
	if slices.Contains(FSTypes, fstype) && len(sensitive) == 0 {
		return c.Mount(source, target, fstype, options)
	}
	return c.Interface.MountSensitive(source, target, fstype, options, sensitive)
}
