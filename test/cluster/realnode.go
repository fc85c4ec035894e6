package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/carve-csi/carve/internal/hostlock"
	"github.com/carve-csi/carve/pkg/dirvol"
)

// ErrNoRealNode is wrapped by AddRealNode's error when this host cannot run a
// real node: not root, or containerd, runc, the CNI plugins or the kubelet
// binary are missing.
var ErrNoRealNode = errors.New("cluster: cannot run a real node here")

// A real node is containerd + runc + the kubelet on this host, registered
// beside the kwok nodes (recipe and pitfalls: shared/notes/realnode.md).
// Everything it owns lives under Dir: containerd's root, state and socket,
// the kubelet's root directory, certificates and pod logs, the CNI
// configuration and IPAM state. Host-global parts are taken under the host
// lock "realnode" and restored by Stop: the two bridges (node address, pod
// network), net.ipv4.ip_forward (the bridge plugin turns it on), the cgroups
// the kubelet and containers create, the directories the components create
// whatever their flags say (/var/lib/kubelet/device-plugins,
// /run/containerd, /var/lib/cni, /run/netns), and every mount under Dir.
const (
	realNodeBridge = "rnnode0" // holds the node IP and the kubernetes Service IP (/32 each)
	realPodBridge  = "rncni0"  // the CNI bridge for pods
	realNodeIP     = "10.99.0.1"
	realPodSubnet  = "10.88.0.0/24"
	// serviceIP is the first address of --service-cluster-ip-range, the
	// kubernetes Service's ClusterIP. There is no kube-proxy: RealNode
	// listens there itself and forwards to the API server, so in-cluster
	// clients in pods (csi-provisioner) reach it as in a real cluster.
	serviceIP = "10.96.0.1"
	// RealNodeLabel is set to "true" on real nodes; pin pods with a
	// nodeSelector on it.
	RealNodeLabel = "carve.test/real"
)

// hostPaths are created by the components outside their configured
// directories; Stop removes those that did not exist before.
// /var/log/carve is the shipped node plugin's Gluster log hostPath.
var hostPaths = []string{"/var/lib/kubelet", "/run/containerd", "/var/lib/cni", "/run/netns", "/var/log/pods", "/opt/containerd", "/etc/cni", "/opt/cni", "/var/log/carve"}

// RealNodeOptions configures AddRealNode.
type RealNodeOptions struct {
	// Name is the node name; empty means realnode-0.
	Name string
	// Images are docker-archive or OCI tarballs imported into containerd
	// (namespace k8s.io) before the kubelet starts; pods use them with
	// imagePullPolicy IfNotPresent or Never. There is no registry.
	Images []string
	// SandboxImage is the pod sandbox image; it must be among Images.
	// Empty means carve.test/pause:1.0 (hack/build-images.sh's test-pause).
	SandboxImage string
	// KubeletRoot is the kubelet's --root-dir. Empty means the default,
	// /var/lib/kubelet, which deploy/csi-driver's hostPaths name, so the
	// shipped manifests need no path changes. It must not exist yet (Stop
	// removes it); "scratch" puts it under Dir instead.
	KubeletRoot string
	// OwnNamespaces runs containerd as PID 1 of a PID and mount namespace
	// of its own (a slave of the host's mounts), and the kubelet inside
	// both. The upstream e2e suite's hostexec pods nsenter the mount
	// namespace of /proc/1, which this VM's real PID 1 refuses even to
	// root; in the node's own namespace PID 1 is containerd. Mounts the
	// kubelet and the pods make are then invisible on the host and vanish
	// with the namespace.
	OwnNamespaces bool
}

// RealNode is a running containerd + kubelet node.
type RealNode struct {
	Name string
	// Dir holds everything the node owns.
	Dir string
	// KubeletRoot is the kubelet's --root-dir: CSI
	// plugins register under KubeletRoot/plugins_registry and pod volumes
	// are mounted under KubeletRoot/pods.
	KubeletRoot string
	// ContainerdSocket is containerd's gRPC socket.
	ContainerdSocket string
	// IP is the node's InternalIP (host-local).
	IP string

	c                   *Cluster
	lock                *hostlock.Lock
	containerd, kubelet *Process
	proxy               net.Listener
	proxyWG             sync.WaitGroup
	ipForward           string
	cgroupsBefore       map[string]map[string]bool
	pathsBefore         map[string]bool
	netnsBefore         map[string]bool
	stopOnce            sync.Once
}

// AddRealNode starts a real node and waits until it is Ready. Stop (or the
// cluster's Stop) tears it down and restores the host. Only one real node
// can run on a host at a time (host lock).
func (c *Cluster) AddRealNode(ctx context.Context, opts RealNodeOptions) (_ *RealNode, err error) {
	if opts.Name == "" {
		opts.Name = "realnode-0"
	}
	if opts.SandboxImage == "" {
		opts.SandboxImage = "carve.test/pause:1.0"
	}
	kubelet := filepath.Join(c.BinDir, "kubelet")
	if err := realNodePrereqs(kubelet); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoRealNode, err)
	}
	lock, err := hostlock.AcquireLock(ctx, hostlock.LockPath("realnode"), c.logf)
	if err != nil {
		return nil, err
	}
	n := &RealNode{
		Name: opts.Name,
		Dir:  filepath.Join(c.Dir, "node-"+opts.Name),
		IP:   realNodeIP,
		c:    c,
		lock: lock,
	}
	switch opts.KubeletRoot {
	case "":
		n.KubeletRoot = "/var/lib/kubelet"
		if _, err := os.Lstat(n.KubeletRoot); err == nil {
			_ = lock.Unlock()
			return nil, fmt.Errorf("%w: %s exists (another kubelet, or an earlier run's leftovers): remove it or use KubeletRoot scratch", ErrNoRealNode, n.KubeletRoot)
		}
	case "scratch":
		n.KubeletRoot = filepath.Join(n.Dir, "kubelet", "root")
	default:
		n.KubeletRoot = opts.KubeletRoot
	}
	n.ContainerdSocket = filepath.Join(n.Dir, "containerd", "containerd.sock")
	c.mu.Lock()
	c.realNodes = append(c.realNodes, n)
	c.mu.Unlock()
	defer func() {
		if err != nil {
			n.Stop()
		}
	}()
	n.recordHost()
	t0 := time.Now()
	if err := n.start(ctx, kubelet, opts); err != nil {
		return nil, fmt.Errorf("real node %s: %w (logs in %s)", n.Name, err, c.LogDir)
	}
	c.logf("cluster: real node %s Ready in %s (kubelet root %s)", n.Name, time.Since(t0).Round(time.Millisecond), n.KubeletRoot)
	return n, nil
}

func realNodePrereqs(kubelet string) error {
	if os.Geteuid() != 0 {
		return errors.New("not root")
	}
	for _, p := range []string{kubelet, "/usr/sbin/runc", "/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/loopback"} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s: %w (apt-get install containerd runc containernetworking-plugins; bash hack/build-tools.sh builds the kubelet)", p, err)
		}
	}
	for _, p := range []string{"containerd", "ctr", "ip"} {
		if _, err := exec.LookPath(p); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return nil
}

func (n *RealNode) logf(format string, args ...any) {
	n.c.logf("realnode %s: "+format, append([]any{n.Name}, args...)...)
}

// recordHost notes the host state Stop must restore.
func (n *RealNode) recordHost() {
	b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	n.ipForward = strings.TrimSpace(string(b))
	n.cgroupsBefore = map[string]map[string]bool{}
	for _, h := range cgroupHierarchies() {
		n.cgroupsBefore[h] = dirEntries(h)
	}
	n.pathsBefore = map[string]bool{}
	for _, p := range n.hostPaths() {
		if _, err := os.Lstat(p); err == nil {
			n.pathsBefore[p] = true
		}
	}
	n.netnsBefore = dirEntries("/run/netns")
}

// hostPaths are the host directories Stop removes unless they existed
// before: the fixed ones and a kubelet root outside Dir.
func (n *RealNode) hostPaths() []string {
	paths := slices.Clone(hostPaths)
	if !strings.HasPrefix(n.KubeletRoot, n.Dir+"/") && !slices.Contains(paths, n.KubeletRoot) {
		paths = append(paths, n.KubeletRoot)
	}
	return paths
}

func cgroupHierarchies() []string {
	entries, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		return nil
	}
	var hs []string
	for _, e := range entries {
		if e.IsDir() {
			hs = append(hs, filepath.Join("/sys/fs/cgroup", e.Name()))
		}
	}
	return hs
}

func dirEntries(dir string) map[string]bool {
	m := map[string]bool{}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		m[e.Name()] = true
	}
	return m
}

func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (n *RealNode) start(ctx context.Context, kubelet string, opts RealNodeOptions) error {
	for _, d := range []string{"containerd", "cni/net.d", "cni/ipam", "kubelet/pki", "kubelet/pod-logs"} {
		if err := os.MkdirAll(filepath.Join(n.Dir, d), 0o755); err != nil {
			return err
		}
	}
	// A bridge left by a crashed run (we hold the lock, so it is not live).
	for _, br := range []string{realNodeBridge, realPodBridge} {
		if _, err := net.InterfaceByName(br); err == nil {
			n.logf("removing %s left by an earlier run", br)
			_ = run(ctx, "ip", "link", "del", br)
		}
	}
	// The node address: the kubelet refuses loopback, and a /32 on a bridge
	// with no ports is reachable from this host only.
	if err := run(ctx, "ip", "link", "add", realNodeBridge, "type", "bridge"); err != nil {
		return err
	}
	for _, a := range []string{realNodeIP + "/32", serviceIP + "/32"} {
		if err := run(ctx, "ip", "addr", "add", a, "dev", realNodeBridge); err != nil {
			return err
		}
	}
	if err := run(ctx, "ip", "link", "set", realNodeBridge, "up"); err != nil {
		return err
	}
	if err := n.startProxy(); err != nil {
		return err
	}

	// containerd, its own socket and state; the VM withholds
	// CAP_SYS_RESOURCE, so OOM scores are clamped (restrict_oom_score_adj).
	cd := filepath.Join(n.Dir, "containerd")
	config := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = %[5]q
    enable_cdi = false
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          BinaryName = "/usr/sbin/runc"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = %[6]q
  [plugins."io.containerd.internal.v1.opt"]
    path = %[7]q
`, filepath.Join(cd, "root"), filepath.Join(cd, "state"), n.ContainerdSocket, n.ContainerdSocket+".ttrpc",
		opts.SandboxImage, filepath.Join(n.Dir, "cni/net.d"), filepath.Join(cd, "opt"))
	if err := os.WriteFile(filepath.Join(cd, "config.toml"), []byte(config), 0o644); err != nil {
		return err
	}
	cni := fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "carve-realnode",
  "plugins": [
    {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": %q}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, realPodBridge, realPodSubnet, filepath.Join(n.Dir, "cni/ipam"))
	if err := os.WriteFile(filepath.Join(n.Dir, "cni/net.d/10-carve.conflist"), []byte(cni), 0o644); err != nil {
		return err
	}
	var err error
	argv := []string{"containerd", "--config", filepath.Join(cd, "config.toml")}
	if opts.OwnNamespaces {
		// The namespace's mounts are slaves of the host's, but a slave of
		// a private mount (this VM's /) is private: make Dir a shared
		// mount first, so what SharedDir mounts there later reaches the
		// node and the runtime accepts it for HostToContainer. Stop
		// unmounts everything under Dir.
		if err := syscall.Mount(n.Dir, n.Dir, "", syscall.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind mount %s: %w", n.Dir, err)
		}
		if err := syscall.Mount("", n.Dir, "", syscall.MS_SHARED|syscall.MS_REC, ""); err != nil {
			return fmt.Errorf("make %s rshared: %w", n.Dir, err)
		}
		argv = append([]string{"unshare", "--pid", "--kill-child", "--mount-proc", "--propagation", "slave", "--"}, argv...)
	}
	n.containerd, err = startProcess("containerd-"+n.Name, filepath.Join(n.c.LogDir, "containerd-"+n.Name+".log"), argv, nil)
	if err != nil {
		return err
	}
	if err := n.c.poll(ctx, "containerd", func(ctx context.Context) (bool, error) {
		if n.containerd.Err() != nil || isClosed(n.containerd.Done()) {
			return false, fmt.Errorf("containerd exited: %v", n.containerd.Err())
		}
		return n.ctr(ctx, "version") == nil, nil
	}); err != nil {
		return err
	}
	for _, img := range opts.Images {
		t0 := time.Now()
		if err := n.ctr(ctx, "-n", "k8s.io", "images", "import", img); err != nil {
			return err
		}
		n.logf("imported %s in %s", filepath.Base(img), time.Since(t0).Round(time.Millisecond))
	}

	// The kubelet. makeIPTablesUtilChains false keeps it out of the host's
	// iptables; failCgroupV1 false accepts this VM's cgroup v1; image GC
	// thresholds keep it away from the imported images.
	kd := filepath.Join(n.Dir, "kubelet")
	kcfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 0
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow
containerRuntimeEndpoint: unix://%[2]s
imageServiceEndpoint: unix://%[2]s
cgroupDriver: cgroupfs
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: false
serializeImagePulls: false
resolvConf: /etc/resolv.conf
clusterDomain: cluster.local
evictionHard: {memory.available: "100Mi", nodefs.available: "2%%", imagefs.available: "2%%", nodefs.inodesFree: "2%%"}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
maxPods: 50
registerNode: true
nodeStatusReportFrequency: 10s
volumeStatsAggPeriod: 10s
makeIPTablesUtilChains: false
podLogsDir: %[3]q
`, n.IP, n.ContainerdSocket, filepath.Join(kd, "pod-logs"))
	if err := os.WriteFile(filepath.Join(kd, "config.yaml"), []byte(kcfg), 0o644); err != nil {
		return err
	}
	var prefix []string
	if opts.OwnNamespaces {
		// containerd is unshare's only child.
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", n.containerd.Pid(), n.containerd.Pid()))
		pid := strings.TrimSpace(string(b))
		if err != nil || pid == "" || strings.Contains(pid, " ") {
			return fmt.Errorf("containerd's PID in its namespace: %q %v", pid, err)
		}
		prefix = []string{"nsenter", "--target", pid, "--mount", "--pid", "--"}
	}
	n.kubelet, err = startProcess("kubelet-"+n.Name, filepath.Join(n.c.LogDir, "kubelet-"+n.Name+".log"), append(prefix,
		kubelet,
		"--config="+filepath.Join(kd, "config.yaml"),
		"--kubeconfig="+n.c.Kubeconfig,
		"--root-dir="+n.KubeletRoot,
		"--cert-dir="+filepath.Join(kd, "pki"),
		"--hostname-override="+n.Name,
		"--node-ip="+n.IP,
		"--node-labels="+RealNodeLabel+"=true",
		"--v=2",
	), nil)
	if err != nil {
		return err
	}
	return n.c.poll(ctx, "node "+n.Name+" Ready", func(ctx context.Context) (bool, error) {
		if isClosed(n.kubelet.Done()) {
			return false, fmt.Errorf("kubelet exited: %v", n.kubelet.Err())
		}
		node, err := n.c.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				return cond.Status == corev1.ConditionTrue, nil
			}
		}
		return false, nil
	})
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// ctr runs ctr against this node's containerd.
func (n *RealNode) ctr(ctx context.Context, args ...string) error {
	return run(ctx, "ctr", append([]string{"--address", n.ContainerdSocket}, args...)...)
}

// startProxy serves the kubernetes Service address (serviceIP:443) by
// forwarding to the API server, standing in for kube-proxy for that one
// Service.
func (n *RealNode) startProxy() error {
	l, err := net.Listen("tcp", net.JoinHostPort(serviceIP, "443"))
	if err != nil {
		return fmt.Errorf("kubernetes Service proxy: %w", err)
	}
	n.proxy = l
	target := strings.TrimPrefix(n.c.Server, "https://")
	n.proxyWG.Add(1)
	go func() {
		defer n.proxyWG.Done()
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				up, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					return
				}
				defer up.Close()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(up, conn); done <- struct{}{} }()
				go func() { _, _ = io.Copy(conn, up); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	return nil
}

// SharedDir creates Dir/name as an rshared bind mount of itself and returns
// its path. It stands in for a node-level mount of a share (the share a
// DaemonSet maps in with hostPath and HostToContainer or Bidirectional
// propagation, which the runtime refuses unless the source is on a shared
// or slave mount; this VM's / is private). Stop unmounts it.
func (n *RealNode) SharedDir(name string) (string, error) {
	p := filepath.Join(n.Dir, name)
	if err := os.MkdirAll(p, 0o755); err != nil {
		return "", err
	}
	if err := syscall.Mount(p, p, "", syscall.MS_BIND, ""); err != nil {
		return "", fmt.Errorf("bind mount %s: %w", p, err)
	}
	if err := syscall.Mount("", p, "", syscall.MS_SHARED|syscall.MS_REC, ""); err != nil {
		_ = syscall.Unmount(p, 0)
		return "", fmt.Errorf("make %s rshared: %w", p, err)
	}
	// A local directory standing in for the export: declared, as an
	// administrator declares a local share (carve accepts a mount of a
	// local filesystem as a share only then).
	if err := dirvol.Declare(p); err != nil {
		_ = syscall.Unmount(p, 0)
		return "", err
	}
	return p, nil
}

// PodsOn lists the pods bound to the node.
func (n *RealNode) PodsOn(ctx context.Context) ([]corev1.Pod, error) {
	list, err := n.c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", n.Name).String(),
	})
	if err != nil {
		return nil, err
	}
	return list.Items, nil
}

// Stop tears the node down and restores the host: workload pods are deleted
// first (so the kubelet unmounts their volumes through the CSI plugin while
// it still runs), then the kubelet stops, containerd's remaining tasks are
// killed, containerd stops, and every mount under Dir, the network
// namespaces, bridges, ip_forward, cgroups and host directories the run
// created are removed. Idempotent; the cluster's Stop calls it.
func (n *RealNode) Stop() {
	n.stopOnce.Do(n.stop)
}

func (n *RealNode) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if n.kubelet != nil && !isClosed(n.kubelet.Done()) && n.c.Client != nil {
		n.drain(ctx)
	}
	if n.kubelet != nil {
		n.kubelet.Stop()
	}
	if n.containerd != nil && !isClosed(n.containerd.Done()) {
		n.killTasks(ctx)
		n.containerd.Stop()
	}
	n.killShims()
	if n.proxy != nil {
		_ = n.proxy.Close()
		n.proxyWG.Wait()
	}
	n.restoreHost()
	_ = n.lock.Unlock()
}

// drain deletes the pods on the node outside carve-system and waits (60 s
// at most) until those pods are gone, so the kubelet unmounts their volumes
// through the CSI node plugin while it still runs. Replacements their
// controllers create are not waited for: killTasks ends them. The
// carve-system pods (the plugin itself) are left to killTasks too.
func (n *RealNode) drain(ctx context.Context) {
	pods, err := n.PodsOn(ctx)
	if err != nil {
		n.logf("drain: %v", err)
		return
	}
	uids := map[string]bool{}
	for _, p := range pods {
		if p.Namespace == "carve-system" {
			continue
		}
		uids[string(p.UID)] = true
		_ = n.c.Client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{})
	}
	if len(uids) == 0 {
		return
	}
	deadline := time.Now().Add(60 * time.Second)
	left := len(uids)
	for time.Now().Before(deadline) && left > 0 {
		time.Sleep(time.Second)
		pods, err := n.PodsOn(ctx)
		if err != nil {
			break
		}
		left = 0
		for _, p := range pods {
			if uids[string(p.UID)] {
				left++
			}
		}
	}
	if left > 0 {
		n.logf("drain: %d pods still there after 60s; continuing", left)
	}
}

// killTasks kills and deletes what containerd still runs (the CSI plugin,
// pods recreated by their controllers, or left by a failed drain), so
// containerd unmounts their root filesystems itself.
func (n *RealNode) killTasks(ctx context.Context) {
	list := func(what string) []string {
		out, err := exec.CommandContext(ctx, "ctr", "--address", n.ContainerdSocket, "-n", "k8s.io", what, "ls", "-q").Output()
		if err != nil {
			return nil
		}
		return strings.Fields(string(out))
	}
	tasks := list("tasks")
	for _, id := range tasks {
		_ = n.ctr(ctx, "-n", "k8s.io", "tasks", "kill", "--all", "--signal", "SIGKILL", id)
	}
	for _, id := range tasks {
		deadline := time.Now().Add(10 * time.Second)
		for n.ctr(ctx, "-n", "k8s.io", "tasks", "delete", "--force", id) != nil && time.Now().Before(deadline) {
			if !slices.Contains(list("tasks"), id) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	containers := list("containers")
	for _, id := range containers {
		_ = n.ctr(ctx, "-n", "k8s.io", "containers", "delete", id)
	}
	if len(tasks)+len(containers) > 0 {
		n.logf("removed %d tasks and %d containers left in containerd", len(tasks), len(containers))
	}
}

// killShims kills containerd-shim processes that belong to this node's
// containerd (their -address is its socket), with their process groups.
func (n *RealNode) killShims() {
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || !strings.Contains(args[0], "containerd-shim") {
			continue
		}
		for i, a := range args {
			if a == "-address" && i+1 < len(args) && args[i+1] == n.ContainerdSocket {
				n.logf("killing leftover shim pid %d", pid)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

func (n *RealNode) restoreHost() {
	// Mounts under Dir (overlay rootfs, shm, CSI volumes, the kubelet's
	// rshared bind of its root), deepest first.
	dirs := []string{n.Dir}
	if n.KubeletRoot != "" && !strings.HasPrefix(n.KubeletRoot, n.Dir+"/") {
		dirs = append(dirs, n.KubeletRoot)
	}
	for attempt := 0; attempt < 3; attempt++ {
		var mounts []string
		for _, d := range dirs {
			mounts = append(mounts, mountsUnder(d)...)
		}
		if len(mounts) == 0 {
			break
		}
		for _, m := range mounts {
			if err := syscall.Unmount(m, 0); err != nil {
				_ = syscall.Unmount(m, syscall.MNT_DETACH)
			}
		}
	}
	for _, d := range dirs {
		if left := mountsUnder(d); len(left) > 0 {
			n.logf("still mounted after cleanup: %v", left)
		}
	}
	// Network namespaces of sandboxes the kubelet did not tear down.
	for name := range dirEntries("/run/netns") {
		if n.netnsBefore[name] || !strings.HasPrefix(name, "cni-") {
			continue
		}
		p := filepath.Join("/run/netns", name)
		_ = syscall.Unmount(p, syscall.MNT_DETACH)
		_ = os.Remove(p)
	}
	for _, br := range []string{realPodBridge, realNodeBridge} {
		if _, err := net.InterfaceByName(br); err == nil {
			if err := run(context.Background(), "ip", "link", "del", br); err != nil {
				n.logf("%v", err)
			}
		}
	}
	if n.ipForward != "" {
		_ = os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte(n.ipForward+"\n"), 0o644)
	}
	// cgroups the kubelet and the containers created (kubepods/...).
	for h, before := range n.cgroupsBefore {
		for name := range dirEntries(h) {
			if before[name] {
				continue
			}
			p := filepath.Join(h, name)
			if fi, err := os.Stat(p); err == nil && fi.IsDir() {
				if err := removeCgroupTree(p); err != nil {
					n.logf("cgroup %s: %v", p, err)
				}
			}
		}
	}
	paths := n.hostPaths()
	for _, p := range paths {
		if n.pathsBefore[p] {
			continue
		}
		if p == "/run/netns" && len(dirEntries(p)) > 0 {
			continue // someone else's namespaces
		}
		if err := os.RemoveAll(p); err != nil {
			n.logf("remove %s: %v", p, err)
		}
	}
}

// removeCgroupTree removes a cgroup directory and its children (rmdir only:
// cgroupfs directories cannot be unlinked file by file).
func removeCgroupTree(p string) error {
	entries, err := os.ReadDir(p)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			_ = removeCgroupTree(filepath.Join(p, e.Name()))
		}
	}
	var err2 error
	for i := 0; i < 20; i++ {
		if err2 = syscall.Rmdir(p); err2 == nil || errors.Is(err2, syscall.ENOENT) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err2
}

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	// Deepest (longest) first; stacked mounts on one point repeat.
	sort.SliceStable(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
