// Package csidriver is carve's CSI plugin: the identity, controller and node
// services of cmd/csi-driver. The controller carves through pkg/volume, the
// same policy as the classic provisioner; the node mounts what a volume ID
// names, by bind mount from a share the node already has (--mount-map) or by
// mounting the backend's source directly.
package csidriver

import (
	"context"
	"fmt"
	"regexp"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	mount "k8s.io/mount-utils"

	"github.com/carve-csi/carve/pkg/backend"
	"github.com/carve-csi/carve/pkg/fusemount"
	"github.com/carve-csi/carve/pkg/gluster"
	"github.com/carve-csi/carve/pkg/kubeclient"
	"github.com/carve-csi/carve/pkg/kubeview"
	"github.com/carve-csi/carve/pkg/nfs"
	"github.com/carve-csi/carve/pkg/safemount"
	"github.com/carve-csi/carve/pkg/sharemount"
	"github.com/carve-csi/carve/pkg/volid"
	"github.com/carve-csi/carve/pkg/volume"
)

// DefaultName is the driver name carve's manifests and classic CSI PVs use.
const DefaultName = kubeview.DriverName

// DefaultGlusterLogDir is where the node's Gluster FUSE clients log.
const DefaultGlusterLogDir = "/var/log/carve/glusterfs"

// Mode selects the services one process serves.
type Mode string

// Modes.
const (
	ModeAll        Mode = "all"
	ModeController Mode = "controller"
	ModeNode       Mode = "node"
	// ModeFUSE runs no CSI service: it is the node's FUSE holder
	// (pkg/fusemount), serving Config.FUSESocket.
	ModeFUSE Mode = "fuse"
)

// Set implements flag.Value.
func (m *Mode) Set(s string) error {
	switch Mode(s) {
	case ModeAll, ModeController, ModeNode, ModeFUSE:
		*m = Mode(s)
		return nil
	}
	return fmt.Errorf("mode %q: want all, controller, node or fuse", s)
}

func (m *Mode) String() string { return string(*m) }

// Controller and Node report whether the mode serves that CSI service.
func (m Mode) Controller() bool { return m == ModeAll || m == ModeController }
func (m Mode) Node() bool       { return m == ModeAll || m == ModeNode }

// Config is what cmd/csi-driver reads from flags.
type Config struct {
	Name     string // driver name, e.g. carve.csi.dev
	NodeID   string // required for the node service
	Endpoint string // unix:///csi/csi.sock, unix://path, tcp://host:port or a path
	Mode     Mode
	// MountMap: shares this process reaches at a local path. The controller
	// carves there; the node bind-mounts volumes from there.
	MountMap sharemount.Map
	// MountsDir: where the controller mounts shares that are not mapped.
	MountsDir string
	// GlusterLogDir: where the node's Gluster FUSE clients write their logs,
	// one file per volume; "" is DefaultGlusterLogDir.
	GlusterLogDir string
	// FUSESocket: node, the FUSE holder's socket; its FUSE (Gluster)
	// mounts are made there so they outlive this process's container; ""
	// mounts here. Mode fuse: the socket to serve.
	FUSESocket string
	// FUSERoot: mode fuse, the directory beneath which the holder mounts
	// (the kubelet's pods directory).
	FUSERoot       string
	MetricsAddress string
	HealthAddress  string
	Version        string

	// KubeClient, when set, gives the controller a view of PersistentVolumes
	// and claims (Run builds Referrers from it).
	KubeClient kubernetes.Interface
	// Referrers answers which PVs use a directory; nil: none known. Without
	// them the controller refuses to hand a directory recorded for another
	// volume to a new one (it cannot tell whether that volume still exists).
	Referrers volume.Referrers
}

// Driver holds what the three services share.
type Driver struct {
	cfg   Config
	svc   *volume.Service
	locks *keyLocks
	// metrics: the CSI calls' and the copies', served on --metrics-address.
	metrics *metrics

	identity   *IdentityServer
	controller *ControllerServer
	node       *NodeServer
}

// driverName is the CSI rule for plugin names (csi.proto GetPluginInfo).
var driverName = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9._-]{0,61}[a-zA-Z]$`)

// New builds the driver. mounter does the node's mounts and the controller's
// share mounts under MountsDir; tests pass mount.NewFakeMounter.
func New(cfg Config, mounter mount.Interface) (*Driver, error) {
	mounter = safemount.New(mounter)
	if cfg.Mode == "" {
		cfg.Mode = ModeAll
	}
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if !driverName.MatchString(cfg.Name) {
		return nil, fmt.Errorf("driver name %q: at most 63 characters, letters, digits, '.', '-', '_', starting and ending with a letter", cfg.Name)
	}
	if cfg.Mode.Node() && cfg.NodeID == "" {
		return nil, fmt.Errorf("the node service needs a node ID (--nodeid)")
	}
	if cfg.MountMap == nil {
		cfg.MountMap = sharemount.Map{}
	}
	if cfg.GlusterLogDir == "" {
		cfg.GlusterLogDir = DefaultGlusterLogDir
	}
	resolver := &sharemount.Resolver{Map: cfg.MountMap, MountsDir: cfg.MountsDir}
	if cfg.MountsDir != "" {
		resolver.Mounter = mounter
	}
	d := &Driver{cfg: cfg, locks: newKeyLocks(), metrics: newMetrics()}
	// GIDs stay nil: CSI cannot annotate PVs with a group, so pods get access
	// through fsGroup (the CSIDriver's fsGroupPolicy File) or explicit uid/gid.
	// Both backends reach shares through the same resolver: --mount-map
	// entries (SERVER:SHARE, or SERVER:VOLUME for Gluster), else on-demand
	// mounts under --mounts-dir. The node mounts what backend.MountSpec
	// returns, or bind-mounts from a mapped share.
	nfsOpts := nfs.Options{}
	if cfg.KubeClient != nil {
		// btrfsExecutor ssh: the key is in a Secret the class names.
		nfsOpts.SecretData = kubeclient.SecretData(cfg.KubeClient)
		// After a restart, how a share's btrfs layout is reached comes
		// from the StorageClasses (expansion and snapshots carry no class).
		nfsOpts.Classes = kubeclient.ClassParams(cfg.KubeClient, cfg.Name)
	}
	d.svc = volume.New(volume.Options{Referrers: cfg.Referrers}, nfs.NewWithOptions(resolver, nfsOpts),
		gluster.New(gluster.Options{Resolver: resolver}))
	d.identity = &IdentityServer{d: d}
	if cfg.Mode.Controller() {
		d.controller = &ControllerServer{d: d}
	}
	if cfg.Mode.Node() {
		d.node = newNodeServer(d, mounter)
	}
	return d, nil
}

// backendOf returns the backend a volume ID names; a kind this process does
// not run means the volume is not one of ours (NotFound).
func (d *Driver) backendOf(id volid.ID) (backend.Backend, error) {
	b, err := d.svc.Backend(id.Backend)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", backend.ErrNotFound, err)
	}
	return b, nil
}

// WaitPurges waits for background purges of deleted volumes (tests).
func (d *Driver) WaitPurges() { d.svc.WaitPurges() }

// localShare returns the node-local path of a volume's share, if mapped.
func (d *Driver) localShare(id volid.ID) (string, bool) {
	return d.cfg.MountMap.Lookup(id.Servers, id.Share)
}

// keyLocks are try-locks per key: a second call on a busy volume or target
// path gets Aborted, and the CO retries, instead of two calls racing.
type keyLocks struct {
	mu   sync.Mutex
	held map[string]bool
}

func newKeyLocks() *keyLocks { return &keyLocks{held: map[string]bool{}} }

// tryAcquire returns the release function, or errBusy.
func (l *keyLocks) tryAcquire(keys ...string) (func(), error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range keys {
		if l.held[k] {
			return nil, fmt.Errorf("%w: %s", errBusy, k)
		}
	}
	for _, k := range keys {
		l.held[k] = true
	}
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, k := range keys {
			delete(l.held, k)
		}
	}, nil
}

// Run builds the cluster view (when cfg.KubeClient is set and this process
// runs the controller), then serves until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	logger := klog.FromContext(ctx)
	if cfg.KubeClient != nil && cfg.Mode.Controller() {
		if cfg.Name != kubeview.DriverName {
			// ClusterView recognizes CSI PVs of carve.csi.dev only.
			logger.Info("WARNING: the cluster view only sees CSI PersistentVolumes of driver "+kubeview.DriverName+
				"; live-volume checks miss this driver's PVs", "driver", cfg.Name)
		}
		// The view's informers start with the first call that needs them
		// (lazyView): a standby replica gets none. Readiness still needs
		// the rights to build it.
		view := newLazyView(ctx, cfg.KubeClient, 15*time.Minute)
		defer view.shutdown()
		logger.Info("Waiting until PersistentVolumes and claims can be listed")
		if err := view.waitAccess(ctx, 2*time.Second); err != nil {
			return fmt.Errorf("list PersistentVolumes and claims: %w", err)
		}
		cfg.Referrers = view
	}
	var mounter mount.Interface = mount.New("")
	switch {
	case cfg.Mode == ModeFUSE:
		if cfg.FUSESocket == "" || cfg.FUSERoot == "" {
			return fmt.Errorf("mode %s needs a socket and a root directory", ModeFUSE)
		}
		return fusemount.Serve(ctx, cfg.FUSESocket, &fusemount.Server{Mounter: safemount.New(mounter), Roots: []string{cfg.FUSERoot}})
	case cfg.FUSESocket != "" && cfg.Mode.Node():
		logger.Info("FUSE mounts are made by the FUSE holder", "socket", cfg.FUSESocket)
		mounter = fusemount.NewClient(cfg.FUSESocket, mounter)
	}
	d, err := New(cfg, mounter)
	if err != nil {
		return err
	}
	return d.Serve(ctx)
}
