package chart

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/carve-csi/carve/pkg/params"
)

// The release every case renders, as README's install command names it.
const (
	release   = "carve"
	namespace = "carve-system"
)

// valueCase is one values file of the matrix: helm lint --strict must pass
// it, helm template must render it, check asserts what it changes, and the
// server-side dry run (dryrun_test.go) must accept the result.
type valueCase struct {
	name   string
	values string
	check  func(t *testing.T, r *rendered)
}

var cases = []valueCase{
	{name: "default", values: ``, check: checkDefault},
	{name: "provisioner", values: `mode: provisioner`, check: checkProvisioner},
	{name: "csi-nfs", values: exampleValues("csi-nfs"), check: checkNFSExample},
	{name: "provisioner-nfs", values: exampleValues("provisioner-nfs"), check: checkProvisionerNFSExample},
	{name: "gluster", values: `
shares:
  nfs:
    - {name: nfs, server: nfs.example.com, share: /export}
    - {name: archive, server: nfs2.example.com, share: /archive, hostPath: /mnt/archive}
  gluster:
    - {name: gv0, server: g1.example.com, volume: gv0, hostPath: /mnt/gluster/gv0, nodeHostPath: /mnt/gluster/gv0}
  glusterdSocket: /var/run/glusterd.socket
storageClasses:
  - name: gluster
    parameters: {backend: gluster, servers: "g1.example.com,g2.example.com", volume: gv0, quota: gluster}
  - name: gluster-volumes
    parameters: {backend: gluster, servers: "g1.example.com,g2.example.com", mode: volume, replica: 2, brickRootPaths: "g1.example.com:/bricks,g2.example.com:/bricks"}
`, check: checkGluster},
	{name: "servicemonitor", values: `
metrics:
  port: 9090
  serviceMonitor: {enabled: true, interval: 15s, labels: {release: prometheus}}
`, check: checkServiceMonitor("carve-csi-controller", "carve", 9090)},
	{name: "provisioner-servicemonitor", values: `
mode: provisioner
metrics:
  serviceMonitor: {enabled: true}
`, check: checkServiceMonitor("carve-provisioner", "provisioner", 8080)},
	{name: "kubeletdir", values: `kubeletDir: /var/lib/k0s/kubelet/`, check: checkKubeletDir("/var/lib/k0s/kubelet")},
	{name: "storageclasses", values: `
storageClasses:
  - name: fast
    isDefaultClass: true
    reclaimPolicy: Delete
    volumeBindingMode: WaitForFirstConsumer
    mountOptions: [nfsvers=4.2, noatime]
    annotations: {team: storage}
    parameters: {backend: nfs, server: nfs.example.com, share: /export, onDelete: delete, uid: 999, gid: 999, mode: "0750"}
  - name: keep
    allowVolumeExpansion: false
    parameters: {backend: nfs, server: nfs.example.com, share: /export, pathPattern: "${pvc.metadata.namespace}-${pvc.metadata.name}", gidMin: 50000, gidMax: 2147483647}
  - name: classic-only
    forMode: provisioner
    parameters: {backend: nfs, server: nfs.example.com, share: /export}
`, check: checkStorageClasses},
	{name: "scheduling", values: `
imagePullSecrets: [regcred]
controller:
  replicas: 3
  priorityClassName: carve-controller
  nodeSelector: {storage: "true"}
  tolerations: [{key: dedicated, operator: Equal, value: storage, effect: NoSchedule}]
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms: [{matchExpressions: [{key: storage, operator: In, values: ["true"]}]}]
  resources:
    carve: {requests: {cpu: 100m, memory: 256Mi}, limits: {memory: 1Gi}}
  extraArgs:
    carve: [--mounts-dir=/mounts]
    csiProvisioner: [--enable-capacity=false]
node:
  priorityClassName: carve-node
  nodeSelector: {kubernetes.io/os: linux}
  tolerations: [{key: gpu, operator: Exists, effect: NoSchedule}]
  extraArgs:
    carve: [--gluster-log-dir=/var/log/carve/glusterfs]
fuse:
  priorityClassName: carve-fuse
`, check: checkScheduling},
	{name: "no-leader-election", values: `
leaderElection: {enabled: false}
controller: {replicas: 1}
metrics: {enabled: false}
`, check: checkNoLeaderElection},
	{name: "provisioner-no-leader-election", values: `
mode: provisioner
leaderElection: {enabled: false}
provisioner: {replicas: 1}
metrics: {enabled: false}
`, check: checkProvisionerNoLeaderElection},
	{name: "images", values: `
images:
  controller: {repository: registry.example.com/carve/controller, tag: v9.9.9, pullPolicy: Always}
  node: {repository: registry.example.com/carve/node, digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
  csiProvisioner: {repository: registry.k8s.io/sig-storage/csi-provisioner, tag: v6.3.0, pullPolicy: Never}
`, check: checkImages},
	{name: "no-snapshots", values: `
snapshots: {enabled: false}
`, check: checkNoSnapshots},
	{name: "mapped-share-no-fuse", values: `
shares:
  nfs:
    - {name: nfs, server: nfs.example.com, share: /export, hostPath: /mnt/carve/nfs, nodeHostPath: /mnt/carve/nfs}
fuse: {enabled: false}
`, check: checkMappedShare},
}

// exampleValues reads charts/carve/examples/name.yaml, which README and
// docs/helm.md show and TestChartMatchesDeploy compares with
// deploy/examples/name.
func exampleValues(name string) string {
	b, err := os.ReadFile(filepath.Join("..", "..", Dir, "examples", name+".yaml"))
	if err != nil {
		panic(err)
	}
	return string(b)
}

// rendered is one case's output.
type rendered struct {
	objs []*unstructured.Unstructured
	// appVersion is Chart.yaml's, the default tag of carve's images.
	appVersion string
}

func (r *rendered) find(kind, name string) *unstructured.Unstructured {
	for _, o := range r.objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

func (r *rendered) ofKind(kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range r.objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// typed converts the object kind/name into out, failing t when it is absent.
func typed[T any](t *testing.T, r *rendered, kind, name string) *T {
	t.Helper()
	o := r.find(kind, name)
	if o == nil {
		t.Fatalf("no %s %s rendered", kind, name)
	}
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, out); err != nil {
		t.Fatalf("%s %s: %v", kind, name, err)
	}
	return out
}

func deployment(t *testing.T, r *rendered, name string) *appsv1.Deployment {
	return typed[appsv1.Deployment](t, r, "Deployment", name)
}

func daemonSet(t *testing.T, r *rendered, name string) *appsv1.DaemonSet {
	return typed[appsv1.DaemonSet](t, r, "DaemonSet", name)
}

func container(t *testing.T, spec *corev1.PodSpec, name string) *corev1.Container {
	t.Helper()
	return named(t, spec.Containers, func(c *corev1.Container) string { return c.Name }, name, "no container "+name)
}

func volume(t *testing.T, spec *corev1.PodSpec, name string) *corev1.Volume {
	t.Helper()
	return named(t, spec.Volumes, func(v *corev1.Volume) string { return v.Name }, name, "no volume "+name)
}

func mount(t *testing.T, c *corev1.Container, name string) *corev1.VolumeMount {
	t.Helper()
	return named(t, c.VolumeMounts, func(m *corev1.VolumeMount) string { return m.Name }, name,
		"container "+c.Name+" mounts no volume "+name)
}

// named returns the item of items called name, or fails the test with
// missing.
func named[T any](t *testing.T, items []T, nameOf func(*T) string, name, missing string) *T {
	t.Helper()
	for i := range items {
		if nameOf(&items[i]) == name {
			return &items[i]
		}
	}
	t.Fatal(missing)
	return nil
}

// argValues returns the values of --flag=VALUE arguments.
func argValues(c *corev1.Container, flag string) []string {
	var out []string
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			out = append(out, v)
		}
	}
	return out
}

func wantArgs(t *testing.T, c *corev1.Container, flag string, want ...string) {
	t.Helper()
	if got := argValues(c, flag); !slices.Equal(got, want) {
		t.Errorf("container %s: %s = %q, want %q", c.Name, flag, got, want)
	}
}

func hasArg(c *corev1.Container, arg string) bool { return slices.Contains(c.Args, arg) }

func helmBin(t testing.TB) (repo, helm string) {
	t.Helper()
	repo, err := Repo()
	if err != nil {
		t.Fatal(err)
	}
	helm, err = Helm(t.Context(), repo)
	if err != nil {
		t.Fatal(err)
	}
	return repo, helm
}

func appVersion(t testing.TB, repo string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, Dir, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(b, &meta); err != nil || meta.AppVersion == "" {
		t.Fatalf("Chart.yaml appVersion: %q %v", meta.AppVersion, err)
	}
	return meta.AppVersion
}

// valuesFile writes a case's values into a file for helm -f.
func valuesFile(t testing.TB, c valueCase) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), c.name+".yaml")
	if err := os.WriteFile(p, []byte(c.values), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// render runs helm template for a case and returns the YAML.
func render(t testing.TB, repo, helm string, c valueCase, extra ...string) string {
	t.Helper()
	args := append([]string{"template", release, filepath.Join(repo, Dir), "--namespace", namespace, "-f", valuesFile(t, c)}, extra...)
	out, err := Run(t.Context(), helm, nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestLint(t *testing.T) {
	repo, helm := helmBin(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel() // helm processes are independent; the host may be busy
			out, err := Run(t.Context(), helm, nil, "lint", "--strict", filepath.Join(repo, Dir), "--namespace", namespace, "-f", valuesFile(t, c))
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if !strings.Contains(out, "1 chart(s) linted, 0 chart(s) failed") {
				t.Fatalf("helm lint --strict:\n%s", out)
			}
		})
	}
}

func TestTemplate(t *testing.T) {
	repo, helm := helmBin(t)
	version := appVersion(t, repo)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel() // helm processes are independent; the host may be busy
			objs, err := Decode([]byte(render(t, repo, helm, c)))
			if err != nil {
				t.Fatal(err)
			}
			r := &rendered{objs: objs, appVersion: version}
			checkInvariants(t, r)
			c.check(t, r)
		})
	}
}

// checkInvariants holds for every case: the properties that make the
// rendered objects work together, whatever the values.
func checkInvariants(t *testing.T, r *rendered) {
	for _, o := range r.objs {
		if o.GetKind() == "Namespace" {
			t.Errorf("Namespace %s rendered: the release namespace is helm install's (--create-namespace)", o.GetName())
		}
		if ns := o.GetNamespace(); ns != "" && ns != namespace {
			t.Errorf("%s %s in namespace %q, want the release's %q", o.GetKind(), o.GetName(), ns, namespace)
		}
	}
	// Each workload's selector picks its own pods and no other workload's.
	var selectors []map[string]string
	for _, kind := range []string{"Deployment", "DaemonSet"} {
		for _, o := range r.ofKind(kind) {
			sel, _, _ := unstructured.NestedStringMap(o.Object, "spec", "selector", "matchLabels")
			labels, _, _ := unstructured.NestedStringMap(o.Object, "spec", "template", "metadata", "labels")
			if len(sel) == 0 || !subset(sel, labels) {
				t.Errorf("%s %s: selector %v does not select its pods %v", kind, o.GetName(), sel, labels)
			}
			selectors = append(selectors, sel)
		}
	}
	for i := range selectors {
		for j := range selectors {
			if i != j && subset(selectors[i], selectors[j]) {
				t.Errorf("selectors %v and %v overlap", selectors[i], selectors[j])
			}
		}
	}
	// Every StorageClass names the mode's provisioner and carve accepts its
	// parameters as they reach it.
	mode := "provisioner"
	if r.find("CSIDriver", "carve.csi.dev") != nil {
		mode = "csi"
	}
	wantProvisioner := map[string]string{"csi": "carve.csi.dev", "provisioner": "carve.csi.dev/provisioner"}[mode]
	for _, o := range r.ofKind("StorageClass") {
		sc := typed[storagev1.StorageClass](t, r, "StorageClass", o.GetName())
		if sc.Provisioner != wantProvisioner {
			t.Errorf("StorageClass %s: provisioner %q, want %q", sc.Name, sc.Provisioner, wantProvisioner)
		}
		if _, err := params.Parse(sc.Parameters); err != nil {
			t.Errorf("StorageClass %s: carve refuses its parameters: %v", sc.Name, err)
		}
	}
	// Every --mount-map's local path is mounted in the same container.
	for _, kind := range []string{"Deployment", "DaemonSet"} {
		for _, o := range r.ofKind(kind) {
			var spec corev1.PodSpec
			m, _, _ := unstructured.NestedMap(o.Object, "spec", "template", "spec")
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, &spec); err != nil {
				t.Fatal(err)
			}
			for i := range spec.Containers {
				c := &spec.Containers[i]
				for _, mm := range argValues(c, "--mount-map") {
					_, local, _ := strings.Cut(mm, "=")
					if !slices.ContainsFunc(c.VolumeMounts, func(v corev1.VolumeMount) bool { return v.MountPath == local }) {
						t.Errorf("%s %s, container %s: --mount-map %s, but nothing is mounted at %s", kind, o.GetName(), c.Name, mm, local)
					}
				}
			}
		}
	}
	if mode == "csi" {
		checkNodePaths(t, r)
	}
	if len(r.ofKind("ServiceMonitor")) > 0 != (r.find("Service", "carve-metrics") != nil) {
		t.Errorf("a ServiceMonitor comes with its Service and nothing else renders one")
	}
}

// checkNodePaths: the node plugin's host paths agree with each other and
// with the FUSE holder's, whatever kubeletDir is.
func checkNodePaths(t *testing.T, r *rendered) {
	node := daemonSet(t, r, "carve-csi-node")
	spec := &node.Spec.Template.Spec
	socketDir := volume(t, spec, "socket-dir").HostPath.Path
	wantArgs(t, container(t, spec, "node-driver-registrar"), "--kubelet-registration-path", socketDir+"/csi.sock")
	pods := volume(t, spec, "pods-dir").HostPath.Path
	if m := mount(t, container(t, spec, "carve"), "pods-dir"); m.MountPath != pods || m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationBidirectional {
		t.Errorf("node plugin mounts the pods directory %s at %s (%v): want the same path, Bidirectional", pods, m.MountPath, m.MountPropagation)
	}
	reg := volume(t, spec, "registration-dir").HostPath.Path
	if filepath.Dir(pods) != filepath.Dir(reg) || filepath.Dir(socketDir) != filepath.Join(filepath.Dir(pods), "plugins") {
		t.Errorf("node host paths not under one kubelet directory: pods %s, registration %s, socket %s", pods, reg, socketDir)
	}
	fuse := r.find("DaemonSet", "carve-csi-fuse")
	fuseSocket := argValues(container(t, spec, "carve"), "--fuse-socket")
	if fuse == nil {
		if len(fuseSocket) != 0 {
			t.Errorf("node plugin sends FUSE mounts to %v, but no FUSE holder is rendered", fuseSocket)
		}
		return
	}
	if !slices.Equal(fuseSocket, []string{"/csi/fuse/fuse.sock"}) {
		t.Errorf("node plugin --fuse-socket = %q, want /csi/fuse/fuse.sock (the holder's socket in the plugin directory)", fuseSocket)
	}
	fs := &daemonSet(t, r, "carve-csi-fuse").Spec.Template.Spec
	if got := volume(t, fs, "fuse-dir").HostPath.Path; got != socketDir+"/fuse" {
		t.Errorf("FUSE holder's socket directory %s, want %s/fuse (the node plugin's /csi/fuse)", got, socketDir)
	}
	fc := container(t, fs, "fuse")
	wantArgs(t, fc, "--fuse-root", pods)
	if got := volume(t, fs, "pods-dir").HostPath.Path; got != pods || mount(t, fc, "pods-dir").MountPath != pods {
		t.Errorf("FUSE holder's pods directory %s, want the node plugin's %s at the same path", got, pods)
	}
	// The holder must run wherever the node plugin does.
	if !equalJSON(t, fs.Tolerations, spec.Tolerations) || !equalJSON(t, fs.NodeSelector, spec.NodeSelector) || !equalJSON(t, fs.Affinity, spec.Affinity) {
		t.Errorf("FUSE holder scheduled unlike the node plugin: tolerations %v / %v, nodeSelector %v / %v", fs.Tolerations, spec.Tolerations, fs.NodeSelector, spec.NodeSelector)
	}
}

func subset(a, b map[string]string) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func equalJSON(t *testing.T, a, b any) bool {
	t.Helper()
	ja, err := yaml.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	jb, err := yaml.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(ja) == string(jb)
}

func checkDefault(t *testing.T, r *rendered) {
	for _, kind := range []string{"ServiceMonitor", "Service"} {
		if n := len(r.ofKind(kind)); n != 0 {
			t.Errorf("%d %s rendered by default", n, kind)
		}
	}
	if r.find("Deployment", "carve-provisioner") != nil {
		t.Error("mode csi renders the classic provisioner")
	}
	ctl := &deployment(t, r, "carve-csi-controller").Spec.Template.Spec
	carve := container(t, ctl, "carve")
	if want := "ghcr.io/carve-csi/carve-csi-controller:" + r.appVersion; carve.Image != want {
		t.Errorf("controller image %s, want %s (the chart's appVersion)", carve.Image, want)
	}
	// No share and no class, as deploy/csi-driver: nothing waits for a
	// placeholder server.
	wantArgs(t, carve, "--mount-map")
	if got := names(r.ofKind("StorageClass")); got != "" {
		t.Errorf("StorageClasses %s by default, want none (deploy/csi-driver has none)", got)
	}
	if len(ctl.Volumes) != 1 || ctl.Volumes[0].Name != "socket-dir" {
		t.Errorf("controller volumes %+v by default, want only socket-dir", ctl.Volumes)
	}
	// As deploy/csi-driver: one P per Go program of the pod (README "Sizing").
	for _, name := range []string{"csi-provisioner", "csi-resizer", "carve", "csi-snapshotter"} {
		var got []string
		for _, e := range container(t, ctl, name).Env {
			if e.Name == "GOMAXPROCS" {
				got = append(got, e.Value)
			}
		}
		if len(got) != 1 || got[0] != "1" {
			t.Errorf("container %s: GOMAXPROCS %q, want one, \"1\"", name, got)
		}
	}
	node := &daemonSet(t, r, "carve-csi-node").Spec.Template.Spec
	wantArgs(t, container(t, node, "carve"), "--mount-map")
	wantArgs(t, container(t, node, "node-driver-registrar"), "--kubelet-registration-path", "/var/lib/kubelet/plugins/carve.csi.dev/csi.sock")
}

// checkNFSExample: charts/carve/examples/csi-nfs.yaml maps the export into
// the controller through an nfs pod volume and makes its class.
func checkNFSExample(t *testing.T, r *rendered) {
	ctl := &deployment(t, r, "carve-csi-controller").Spec.Template.Spec
	wantArgs(t, container(t, ctl, "carve"), "--mount-map", "nfs.example.com:/export=/shares/nfs")
	if v := volume(t, ctl, "nfs-share"); v.NFS == nil || v.NFS.Server != "nfs.example.com" || v.NFS.Path != "/export" {
		t.Errorf("controller's share volume %+v, want nfs nfs.example.com:/export", v.VolumeSource)
	}
	if got := names(r.ofKind("StorageClass")); got != "carve-nfs-csi" {
		t.Errorf("StorageClasses %s, want carve-nfs-csi", got)
	}
	for _, o := range r.ofKind("StorageClass") {
		if _, ok := o.GetAnnotations()["storageclass.kubernetes.io/is-default-class"]; ok {
			t.Errorf("StorageClass %s is the default class without isDefaultClass", o.GetName())
		}
	}
	vsc := r.ofKind("VolumeSnapshotClass")
	if got := names(vsc); got != "carve-nfs-csi" {
		t.Fatalf("VolumeSnapshotClasses %s, want carve-nfs-csi", got)
	}
	if d, _, _ := unstructured.NestedString(vsc[0].Object, "driver"); d != "carve.csi.dev" {
		t.Errorf("VolumeSnapshotClass driver %q", d)
	}
	if p, _, _ := unstructured.NestedString(vsc[0].Object, "deletionPolicy"); p != "Retain" {
		t.Errorf("VolumeSnapshotClass deletionPolicy %q, want Retain", p)
	}
	container(t, ctl, "csi-snapshotter")
}

// checkNoSnapshots: snapshots.enabled false leaves out csi-snapshotter and
// its RBAC rules; csi-provisioner still reads snapshot data sources.
func checkNoSnapshots(t *testing.T, r *rendered) {
	ctl := &deployment(t, r, "carve-csi-controller").Spec.Template.Spec
	for _, c := range ctl.Containers {
		if c.Name == "csi-snapshotter" {
			t.Error("csi-snapshotter with snapshots.enabled false")
		}
	}
	role := r.find("ClusterRole", "carve-csi-controller")
	if role == nil {
		t.Fatal("no ClusterRole carve-csi-controller")
	}
	rules, _, _ := unstructured.NestedSlice(role.Object, "rules")
	for _, rule := range rules {
		res, _, _ := unstructured.NestedStringSlice(rule.(map[string]any), "resources")
		verbs, _, _ := unstructured.NestedStringSlice(rule.(map[string]any), "verbs")
		if slices.Contains(res, "volumesnapshotclasses") || slices.Contains(res, "volumesnapshotcontents/status") ||
			(slices.Contains(res, "volumesnapshotcontents") && slices.Contains(verbs, "update")) {
			t.Errorf("csi-snapshotter's rule %v %v with snapshots.enabled false", res, verbs)
		}
	}
}

func names(objs []*unstructured.Unstructured) string {
	var s []string
	for _, o := range objs {
		s = append(s, o.GetName())
	}
	return strings.Join(s, ",")
}

func checkProvisioner(t *testing.T, r *rendered) {
	for _, kind := range []string{"CSIDriver", "DaemonSet", "ServiceMonitor"} {
		if n := len(r.ofKind(kind)); n != 0 {
			t.Errorf("mode provisioner renders %d %s", n, kind)
		}
	}
	p := &deployment(t, r, "carve-provisioner").Spec.Template.Spec
	c := container(t, p, "provisioner")
	if want := "ghcr.io/carve-csi/carve-provisioner:" + r.appVersion; c.Image != want {
		t.Errorf("provisioner image %s, want %s", c.Image, want)
	}
	wantArgs(t, c, "--mount-map")
	wantArgs(t, c, "--leader-elect")
	if got := names(r.ofKind("StorageClass")); got != "" {
		t.Errorf("StorageClasses %s by default, want none (deploy/provisioner has none)", got)
	}
	if len(p.Volumes) != 0 {
		t.Errorf("provisioner volumes %+v by default, want none", p.Volumes)
	}
	if r.find("Role", "carve-provisioner-leader-election") == nil {
		t.Error("no leader election Role")
	}
}

// checkProvisionerNFSExample: charts/carve/examples/provisioner-nfs.yaml.
func checkProvisionerNFSExample(t *testing.T, r *rendered) {
	p := &deployment(t, r, "carve-provisioner").Spec.Template.Spec
	wantArgs(t, container(t, p, "provisioner"), "--mount-map", "nfs.example.com:/export=/shares/nfs")
	if v := volume(t, p, "nfs-share"); v.NFS == nil || v.NFS.Server != "nfs.example.com" || v.NFS.Path != "/export" {
		t.Errorf("provisioner's share volume %+v, want nfs nfs.example.com:/export", v.VolumeSource)
	}
	if names(r.ofKind("StorageClass")) != "carve-nfs" {
		t.Errorf("StorageClasses %s, want carve-nfs", names(r.ofKind("StorageClass")))
	}
	sc := typed[storagev1.StorageClass](t, r, "StorageClass", "carve-nfs")
	if sc.AllowVolumeExpansion != nil && *sc.AllowVolumeExpansion {
		t.Error("carve-nfs allows expansion, which the classic provisioner does not do")
	}
}

func checkGluster(t *testing.T, r *rendered) {
	ctl := &deployment(t, r, "carve-csi-controller").Spec.Template.Spec
	carve := container(t, ctl, "carve")
	wantArgs(t, carve, "--mount-map", "nfs.example.com:/export=/shares/nfs", "nfs2.example.com:/archive=/shares/archive", "g1.example.com:gv0=/shares/gv0")
	for _, s := range []struct{ volume, hostPath string }{{"gv0-share", "/mnt/gluster/gv0"}, {"archive-share", "/mnt/archive"}} {
		v := volume(t, ctl, s.volume)
		if v.HostPath == nil || v.HostPath.Path != s.hostPath || v.NFS != nil {
			t.Errorf("controller volume %s: %+v, want hostPath %s", s.volume, v.VolumeSource, s.hostPath)
		}
		if m := mount(t, carve, s.volume); m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationHostToContainer {
			t.Errorf("controller mounts %s without HostToContainer: a remount on the node would not show", s.volume)
		}
	}
	if v := volume(t, ctl, "glusterd-socket"); v.HostPath == nil || v.HostPath.Path != "/var/run/glusterd.socket" || *v.HostPath.Type != corev1.HostPathSocket {
		t.Errorf("glusterd socket volume %+v", v.VolumeSource)
	}
	if m := mount(t, carve, "glusterd-socket"); m.MountPath != "/var/run/glusterd.socket" {
		t.Errorf("glusterd socket mounted at %s, where the gluster CLI does not look", m.MountPath)
	}
	// Only the share with a nodeHostPath is mapped on the node.
	node := &daemonSet(t, r, "carve-csi-node").Spec.Template.Spec
	nc := container(t, node, "carve")
	wantArgs(t, nc, "--mount-map", "g1.example.com:gv0=/shares/gv0")
	if v := volume(t, node, "gv0-share"); v.HostPath == nil || v.HostPath.Path != "/mnt/gluster/gv0" {
		t.Errorf("node volume gv0-share %+v", v.VolumeSource)
	}
	if m := mount(t, nc, "gv0-share"); *m.MountPropagation != corev1.MountPropagationHostToContainer {
		t.Errorf("node mounts gv0-share with %s", *m.MountPropagation)
	}
	if len(r.ofKind("DaemonSet")) != 2 {
		t.Errorf("DaemonSets %s, want the node plugin and the FUSE holder", names(r.ofKind("DaemonSet")))
	}
}

func checkServiceMonitor(workload, containerName string, port int32) func(*testing.T, *rendered) {
	return func(t *testing.T, r *rendered) {
		sms := r.ofKind("ServiceMonitor")
		if len(sms) != 1 {
			t.Fatalf("%d ServiceMonitors, want 1", len(sms))
		}
		sm := sms[0]
		if sm.GetAPIVersion() != "monitoring.coreos.com/v1" {
			t.Errorf("ServiceMonitor apiVersion %s", sm.GetAPIVersion())
		}
		svc := typed[corev1.Service](t, r, "Service", "carve-metrics")
		smSel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
		if !subset(smSel, svc.Labels) {
			t.Errorf("ServiceMonitor selects %v, the Service is labelled %v", smSel, svc.Labels)
		}
		eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
		if len(eps) != 1 || eps[0].(map[string]any)["port"] != "metrics" {
			t.Errorf("ServiceMonitor endpoints %v, want the port metrics", eps)
		}
		if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "metrics" || svc.Spec.Ports[0].Port != port {
			t.Errorf("Service ports %+v, want metrics %d", svc.Spec.Ports, port)
		}
		// The Service reaches the metrics port of the workload's pods.
		d := deployment(t, r, workload)
		if !subset(svc.Spec.Selector, d.Spec.Template.Labels) {
			t.Errorf("Service selects %v, %s's pods are labelled %v", svc.Spec.Selector, workload, d.Spec.Template.Labels)
		}
		c := container(t, &d.Spec.Template.Spec, containerName)
		if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "metrics" && p.ContainerPort == port }) {
			t.Errorf("container %s has no metrics port %d: %+v", c.Name, port, c.Ports)
		}
		wantArgs(t, c, "--metrics-address", ":"+strconv.Itoa(int(port)))
	}
}

func checkKubeletDir(dir string) func(*testing.T, *rendered) {
	return func(t *testing.T, r *rendered) {
		node := &daemonSet(t, r, "carve-csi-node").Spec.Template.Spec
		wantArgs(t, container(t, node, "node-driver-registrar"), "--kubelet-registration-path", dir+"/plugins/carve.csi.dev/csi.sock")
		for _, v := range []struct{ name, path string }{
			{"socket-dir", dir + "/plugins/carve.csi.dev"}, {"registration-dir", dir + "/plugins_registry"}, {"pods-dir", dir + "/pods"},
		} {
			if got := volume(t, node, v.name).HostPath.Path; got != v.path {
				t.Errorf("node volume %s: hostPath %s, want %s", v.name, got, v.path)
			}
		}
		wantArgs(t, container(t, &daemonSet(t, r, "carve-csi-fuse").Spec.Template.Spec, "fuse"), "--fuse-root", dir+"/pods")
		// No path is left at the default.
		for _, o := range r.objs {
			b, err := yaml.Marshal(o.Object)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(b), "/var/lib/kubelet") {
				t.Errorf("%s %s still names /var/lib/kubelet", o.GetKind(), o.GetName())
			}
		}
	}
}

func checkStorageClasses(t *testing.T, r *rendered) {
	if got := names(r.ofKind("StorageClass")); got != "fast,keep" {
		t.Errorf("StorageClasses %s, want fast,keep (classic-only is for mode provisioner)", got)
	}
	fast := typed[storagev1.StorageClass](t, r, "StorageClass", "fast")
	if fast.Annotations["storageclass.kubernetes.io/is-default-class"] != "true" || fast.Annotations["team"] != "storage" {
		t.Errorf("fast: annotations %v, want the default-class annotation and team", fast.Annotations)
	}
	if *fast.ReclaimPolicy != corev1.PersistentVolumeReclaimDelete || *fast.VolumeBindingMode != storagev1.VolumeBindingWaitForFirstConsumer {
		t.Errorf("fast: reclaimPolicy %s, volumeBindingMode %s", *fast.ReclaimPolicy, *fast.VolumeBindingMode)
	}
	if !slices.Equal(fast.MountOptions, []string{"nfsvers=4.2", "noatime"}) || !*fast.AllowVolumeExpansion {
		t.Errorf("fast: mountOptions %v, allowVolumeExpansion %v", fast.MountOptions, *fast.AllowVolumeExpansion)
	}
	// Numbers in the values reach carve as the numbers written.
	for k, want := range map[string]string{"uid": "999", "gid": "999", "mode": "0750", "onDelete": "delete"} {
		if fast.Parameters[k] != want {
			t.Errorf("fast: parameter %s = %q, want %q", k, fast.Parameters[k], want)
		}
	}
	keep := typed[storagev1.StorageClass](t, r, "StorageClass", "keep")
	if _, ok := keep.Annotations["storageclass.kubernetes.io/is-default-class"]; ok {
		t.Error("keep is a default class too")
	}
	if *keep.ReclaimPolicy != corev1.PersistentVolumeReclaimRetain || *keep.VolumeBindingMode != storagev1.VolumeBindingImmediate || *keep.AllowVolumeExpansion {
		t.Errorf("keep: reclaimPolicy %s, volumeBindingMode %s, allowVolumeExpansion %v: want Retain, Immediate, false",
			*keep.ReclaimPolicy, *keep.VolumeBindingMode, *keep.AllowVolumeExpansion)
	}
	if keep.Parameters["gidMax"] != "2147483647" || keep.Parameters["gidMin"] != "50000" {
		t.Errorf("keep: gidMin %q gidMax %q, want 50000 2147483647", keep.Parameters["gidMin"], keep.Parameters["gidMax"])
	}
}

func checkScheduling(t *testing.T, r *rendered) {
	d := deployment(t, r, "carve-csi-controller")
	ctl := &d.Spec.Template.Spec
	if *d.Spec.Replicas != 3 || ctl.PriorityClassName != "carve-controller" || ctl.NodeSelector["storage"] != "true" {
		t.Errorf("controller: replicas %d, priorityClassName %q, nodeSelector %v", *d.Spec.Replicas, ctl.PriorityClassName, ctl.NodeSelector)
	}
	if len(ctl.Tolerations) != 1 || ctl.Tolerations[0].Key != "dedicated" || ctl.Affinity == nil || ctl.Affinity.NodeAffinity == nil {
		t.Errorf("controller: tolerations %v, affinity %v", ctl.Tolerations, ctl.Affinity)
	}
	carve := container(t, ctl, "carve")
	if carve.Resources.Requests.Cpu().String() != "100m" || carve.Resources.Limits.Memory().String() != "1Gi" {
		t.Errorf("controller carve resources %v", carve.Resources)
	}
	if last := carve.Args[len(carve.Args)-1]; last != "--mounts-dir=/mounts" {
		t.Errorf("controller carve's last argument %q, want the extra --mounts-dir=/mounts", last)
	}
	if !hasArg(container(t, ctl, "csi-provisioner"), "--enable-capacity=false") {
		t.Error("csi-provisioner lacks its extra argument")
	}
	// Tolerations land on both DaemonSets, replacing the default (every taint).
	for _, ds := range []string{"carve-csi-node", "carve-csi-fuse"} {
		spec := &daemonSet(t, r, ds).Spec.Template.Spec
		if len(spec.Tolerations) != 1 || spec.Tolerations[0].Key != "gpu" || spec.Tolerations[0].Effect != corev1.TaintEffectNoSchedule {
			t.Errorf("%s: tolerations %v, want only gpu:NoSchedule", ds, spec.Tolerations)
		}
		if spec.NodeSelector["kubernetes.io/os"] != "linux" {
			t.Errorf("%s: nodeSelector %v", ds, spec.NodeSelector)
		}
	}
	if p := daemonSet(t, r, "carve-csi-node").Spec.Template.Spec.PriorityClassName; p != "carve-node" {
		t.Errorf("node priorityClassName %q", p)
	}
	if p := daemonSet(t, r, "carve-csi-fuse").Spec.Template.Spec.PriorityClassName; p != "carve-fuse" {
		t.Errorf("FUSE holder priorityClassName %q", p)
	}
	for _, kind := range []string{"Deployment", "DaemonSet"} {
		for _, o := range r.ofKind(kind) {
			secrets, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "imagePullSecrets")
			if len(secrets) != 1 || secrets[0].(map[string]any)["name"] != "regcred" {
				t.Errorf("%s %s: imagePullSecrets %v", kind, o.GetName(), secrets)
			}
		}
	}
}

func checkNoLeaderElection(t *testing.T, r *rendered) {
	ctl := &deployment(t, r, "carve-csi-controller").Spec.Template.Spec
	for _, name := range []string{"csi-provisioner", "csi-resizer", "csi-snapshotter"} {
		c := container(t, ctl, name)
		for _, a := range c.Args {
			if strings.HasPrefix(a, "--leader-election") {
				t.Errorf("%s: %s without leader election", name, a)
			}
		}
	}
	if n := len(r.ofKind("Role")) + len(r.ofKind("RoleBinding")); n != 0 {
		t.Errorf("%d leader election Roles/RoleBindings without leader election", n)
	}
	carve := container(t, ctl, "carve")
	wantArgs(t, carve, "--metrics-address")
	if slices.ContainsFunc(carve.Ports, func(p corev1.ContainerPort) bool { return p.Name == "metrics" }) {
		t.Error("metrics port declared with metrics off")
	}
}

func checkProvisionerNoLeaderElection(t *testing.T, r *rendered) {
	c := container(t, &deployment(t, r, "carve-provisioner").Spec.Template.Spec, "provisioner")
	if !hasArg(c, "--leader-elect=false") {
		t.Errorf("provisioner args %q lack --leader-elect=false (the binary elects by default)", c.Args)
	}
	wantArgs(t, c, "--metrics-address")
	if len(r.ofKind("Role")) != 0 {
		t.Error("leader election Role without leader election")
	}
}

func checkImages(t *testing.T, r *rendered) {
	ctl := &deployment(t, r, "carve-csi-controller").Spec.Template.Spec
	node := &daemonSet(t, r, "carve-csi-node").Spec.Template.Spec
	fuse := &daemonSet(t, r, "carve-csi-fuse").Spec.Template.Spec
	const digest = "registry.example.com/carve/node@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, w := range []struct {
		c      *corev1.Container
		image  string
		policy corev1.PullPolicy
	}{
		{container(t, ctl, "carve"), "registry.example.com/carve/controller:v9.9.9", corev1.PullAlways},
		{container(t, ctl, "csi-provisioner"), "registry.k8s.io/sig-storage/csi-provisioner:v6.3.0", corev1.PullNever},
		{container(t, ctl, "csi-resizer"), "registry.k8s.io/sig-storage/csi-resizer:v2.2.1", corev1.PullIfNotPresent},
		{container(t, node, "carve"), digest, corev1.PullIfNotPresent},
		{container(t, fuse, "fuse"), digest, corev1.PullIfNotPresent},
	} {
		if w.c.Image != w.image || w.c.ImagePullPolicy != w.policy {
			t.Errorf("container %s: image %s (%s), want %s (%s)", w.c.Name, w.c.Image, w.c.ImagePullPolicy, w.image, w.policy)
		}
	}
}

func checkMappedShare(t *testing.T, r *rendered) {
	ctl := &deployment(t, r, "carve-csi-controller").Spec.Template.Spec
	if v := volume(t, ctl, "nfs-share"); v.HostPath == nil || v.HostPath.Path != "/mnt/carve/nfs" || v.NFS != nil {
		t.Errorf("controller's share volume %+v, want hostPath /mnt/carve/nfs", v.VolumeSource)
	}
	node := &daemonSet(t, r, "carve-csi-node").Spec.Template.Spec
	nc := container(t, node, "carve")
	wantArgs(t, nc, "--mount-map", "nfs.example.com:/export=/shares/nfs")
	if v := volume(t, node, "nfs-share"); v.HostPath == nil || v.HostPath.Path != "/mnt/carve/nfs" {
		t.Errorf("node's share volume %+v", v.VolumeSource)
	}
	if r.find("DaemonSet", "carve-csi-fuse") != nil {
		t.Error("FUSE holder rendered with fuse.enabled false")
	}
}

// TestRefusals: values the chart must refuse, each with a message saying why.
func TestRefusals(t *testing.T) {
	repo, helm := helmBin(t)
	for _, c := range []struct{ name, values, want string }{
		{"mode", `mode: kustomize`, `mode "kustomize": must be csi or provisioner`},
		{"two default classes", `
storageClasses:
  - {name: a, isDefaultClass: true, parameters: {backend: nfs, server: s, share: /e}}
  - {name: b, isDefaultClass: true, parameters: {backend: nfs, server: s, share: /e}}
`, "2 classes have isDefaultClass"},
		{"replicas without leader election", `leaderElection: {enabled: false}`, "controller.replicas: 2 replicas need leaderElection.enabled"},
		{"provisioner replicas without leader election", "mode: provisioner\nleaderElection: {enabled: false}", "provisioner.replicas: 2 replicas need leaderElection.enabled"},
		{"unquoted octal mode", `
storageClasses:
  - {name: a, parameters: {backend: nfs, server: s, share: /e, mode: 0750}}
`, "parameters.mode: write it as a string"},
		{"fractional number", `
storageClasses:
  - {name: a, parameters: {backend: nfs, server: s, share: /e, uid: 1.5}}
`, "parameters.uid: 1.5 is not an integer"},
		{"duplicate share names", `
shares:
  nfs:
    - {name: nfs, server: a, share: /a}
    - {name: nfs, server: b, share: /b}
`, `shares.nfs[1].name "nfs" is also the name of shares.nfs[0]`},
		{"gluster without its FUSE mount", `
shares:
  gluster:
    - {name: gv0, server: g1, volume: gv0}
`, "shares.gluster[0] needs name, server, volume and hostPath"},
		{"share name", `
shares:
  nfs:
    - {name: Bad_Name, server: a, share: /a}
`, "must be a DNS label"},
		{"relative kubeletDir", `kubeletDir: var/lib/kubelet`, "must be an absolute path"},
		{"ServiceMonitor without metrics", `
metrics: {enabled: false, serviceMonitor: {enabled: true}}
`, "metrics.serviceMonitor.enabled needs metrics.enabled"},
		{"forMode", `
storageClasses:
  - {name: a, forMode: both, parameters: {backend: nfs, server: s, share: /e}}
`, `forMode "both": must be csi, provisioner or empty`},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel() // helm processes are independent; the host may be busy
			p := filepath.Join(t.TempDir(), "values.yaml")
			if err := os.WriteFile(p, []byte(c.values), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := Run(t.Context(), helm, nil, "template", release, filepath.Join(repo, Dir), "-n", namespace, "-f", p)
			if err == nil {
				t.Fatalf("rendered:\n%s", out)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want it to say %q", err, c.want)
			}
		})
	}
}
