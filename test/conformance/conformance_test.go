//go:build conformance

// Package conformance runs the upstream Kubernetes storage e2e suite
// (e2e.test v1.34.4, External.Storage, external-driver mode) against carve
// deployed from deploy/csi-driver as shipped on a real node, once per
// backend: make conformance. See docs/conformance.md.
package conformance

import (
	"context"
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/carve-csi/carve/internal/testenv/glusterd"
	"github.com/carve-csi/carve/test/cluster"
	"github.com/carve-csi/carve/test/scenario"
)

// The suite's sets: CONFORMANCE_SET=fast (default: the specs marked neither
// [Slow] nor [Serial]), slow (the [Slow] ones that are not [Serial]), serial
// (the [Serial] ones: stress, scale and deletion performance) or all.
// A spec's labels are in its text ("[Slow]", "[Slow, Serial]",
// "[Feature:Windows, Slow]"), so the patterns match a label wherever it
// stands in its bracket.
func focusSkip() (focus, skip string) {
	focus = `External.Storage.*carve\.csi\.dev`
	const (
		slow   = `Slow[\],]`
		serial = `Serial\]`
	)
	// Never run here: features this node or carve does not have (SELinux,
	// VolumeAttributesClass, XFS as the volume's fsType, Windows, volume
	// group snapshots), specs that restart the kubelet over ssh
	// (Disruptive), flaky ones, and "any volume data source", whose
	// populator and validator images are only on registry.k8s.io and whose
	// modules the proxy refuses (docs/conformance.md). Snapshot specs
	// ([Feature:VolumeSnapshotDataSource]) are selected: the suite itself
	// skips them unless the driver definition declares snapshotDataSource.
	never := `Feature:(SELinux|VolumeAttributesClass|VolumeSourceXFS|Windows|volumegroupsnapshot)|FeatureGate:|Disruptive|Flaky|any volume data source`
	switch os.Getenv("CONFORMANCE_SET") {
	case "slow":
		return focus + `.*` + slow, never + `|` + serial
	case "serial":
		return focus + `.*` + serial, never
	case "all":
		return focus, never
	default:
		return focus, never + `|` + slow + `|` + serial
	}
}

// backend is one driver definition: the StorageClass the suite provisions
// from and the capabilities carve declares for it.
type backend struct {
	name  string
	class string // StorageClass YAML
	caps  map[string]bool
	// snapshotClass is the VolumeSnapshotClass file (relative to the
	// repository) whose parameters the suite's snapshot classes take.
	snapshotClass string
	// deploy deploys carve (repo, image tag) on the node.
	deploy func(ctx context.Context, c *cluster.Cluster, n *cluster.RealNode, repo, tag string) error
}

// capabilities declared for both backends; a backend adds its own.
// Declared is tested: nothing is left out to dodge a spec (docs/conformance.md
// says why each false one is false).
func capabilities(extra map[string]bool) map[string]bool {
	c := map[string]bool{
		"persistence": true, "exec": true, "multipods": true, "RWX": true, "fsGroup": true,
		"block": false, "topology": false, "volumeLimits": false, "singleNodeVolume": false,
		"snapshotDataSource": true, "pvcDataSource": true,
		"controllerExpansion": false, "nodeExpansion": false, "onlineExpansion": false, "offlineExpansion": false,
	}
	for k, v := range extra {
		c[k] = v
	}
	return c
}

func TestExternalStorageNFS(t *testing.T) {
	run(t, backend{
		name: "nfs",
		class: `apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: carve-e2e-nfs}
provisioner: carve.csi.dev
reclaimPolicy: Delete
volumeBindingMode: Immediate
parameters:
  backend: nfs
  server: nfs.example.com
  share: /export
  pathPattern: "${pvc.metadata.namespace}/${pvc.metadata.name}"
  onDelete: delete
`,
		// A directory on NFS has no size of its own: expansion would
		// change a number, not what the pod can write, and a claim restored
		// into a larger size sees the share's file system size as before
		// (statfs of the export), which the suite's "restoring snapshot to
		// larger size pvc" spec checks.
		caps:          capabilities(map[string]bool{"FSResizeFromSourceNotSupported": true}),
		snapshotClass: "deploy/examples/csi-nfs/volumesnapshotclass.yaml",
		deploy: func(ctx context.Context, c *cluster.Cluster, n *cluster.RealNode, repo, tag string) error {
			share, err := n.SharedDir("export")
			if err != nil {
				return err
			}
			return scenario.DeployRealCSI(ctx, c, n, repo, share, tag)
		},
	})
}

func TestExternalStorageGluster(t *testing.T) {
	g := glusterd.Start(t)
	vol := g.CreateVolume(t, "carve-conformance", 1)
	g.EnableQuota(t, vol.Name)
	mount := g.Mount(t, vol.Name)
	run(t, backend{
		name: "gluster",
		class: fmt.Sprintf(`apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: carve-e2e-gluster}
provisioner: carve.csi.dev
reclaimPolicy: Delete
volumeBindingMode: Immediate
allowVolumeExpansion: true
parameters:
  backend: gluster
  servers: %q
  volume: %q
  quota: gluster
  pathPattern: "${pvc.metadata.namespace}/${pvc.metadata.name}"
  onDelete: delete
`, g.Host(), vol.Name),
		// The claim's directory has a quota of its size, raised by
		// ControllerExpandVolume (carve-resizer in the test overlay).
		caps:          capabilities(map[string]bool{"controllerExpansion": true, "onlineExpansion": true, "offlineExpansion": true}),
		snapshotClass: "deploy/examples/csi-gluster/volumesnapshotclass.yaml",
		deploy: func(ctx context.Context, c *cluster.Cluster, n *cluster.RealNode, repo, tag string) error {
			share, err := n.SharedDir("export")
			if err != nil {
				return err
			}
			return scenario.DeployRealGluster(ctx, c, n, repo, share, tag,
				scenario.RealGluster{Host: g.Host(), Volume: vol.Name, Mount: mount})
		},
	})
}

// e2eTools returns e2e.test and the suite's image tarballs (make
// conformance builds them: CARVE_E2E_BIN, CARVE_E2E_IMAGES).
func e2eTools(t *testing.T) (string, []string) {
	bin, images := os.Getenv("CARVE_E2E_BIN"), os.Getenv("CARVE_E2E_IMAGES")
	suite := filepath.Join(bin, "e2e.test")
	if _, err := os.Stat(suite); bin == "" || err != nil {
		scenario.SkipOrFailReal(t, "no e2e.test (run make conformance, which sets CARVE_E2E_BIN)")
	}
	tars, _ := filepath.Glob(filepath.Join(images, "*.tar"))
	if len(tars) == 0 {
		scenario.SkipOrFailReal(t, "no e2e images (run make conformance, which sets CARVE_E2E_IMAGES)")
	}
	return suite, tars
}

func run(t *testing.T, b backend) {
	suite, tars := e2eTools(t)
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	// The suite's hostexec pods enter /proc/1's mount namespace.
	c, n, tag := scenario.StartRealNode(t, repo, cluster.RealNodeOptions{Images: tars, OwnNamespaces: true})
	ctx := t.Context()
	// The snapshot specs need the CRDs and the cluster's snapshot-controller,
	// which deploy/csi-driver leaves to the cluster.
	if err := scenario.DeploySnapshotController(ctx, c, n, repo); err != nil {
		t.Fatal(err)
	}
	if err := b.deploy(ctx, c, n, repo, tag); err != nil {
		t.Fatal(err)
	}
	// The report and the log outlive the cluster's work directory.
	out := os.Getenv("CARVE_CONFORMANCE_OUT")
	if out == "" {
		out = filepath.Join(repo, "bin/conformance")
	}
	dir := filepath.Join(out, b.name)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "report"), 0o755); err != nil {
		t.Fatal(err)
	}
	classFile := filepath.Join(dir, "storageclass.yaml")
	driverFile := filepath.Join(dir, "driver.yaml")
	if err := os.WriteFile(classFile, []byte(b.class), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(driverFile, []byte(driverDefinition(classFile, filepath.Join(repo, b.snapshotClass), b.caps)), 0o644); err != nil {
		t.Fatal(err)
	}
	focus, skip := focusSkip()
	logPath := filepath.Join(dir, "e2e.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.CommandContext(ctx, suite,
		"--kubeconfig="+c.Kubeconfig, "--provider=local",
		"--kubectl-path="+filepath.Join(c.BinDir, "kubectl"),
		"-storage.testdriver="+driverFile,
		"-ginkgo.focus="+focus, "-ginkgo.skip="+skip,
		"-ginkgo.no-color", "-ginkgo.v", "-ginkgo.timeout=2h",
		"--report-dir="+filepath.Join(dir, "report"))
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	t.Logf("%s: e2e.test -ginkgo.focus=%q -ginkgo.skip=%q (log %s)", b.name, focus, skip, logPath)
	start := time.Now()
	runErr := cmd.Run()
	elapsed := time.Since(start).Round(time.Second)
	r, err := readReport(filepath.Join(dir, "report"))
	if err != nil {
		t.Fatalf("%s: e2e.test exited with %v after %s and left no report: %v (log %s)", b.name, runErr, elapsed, err, logPath)
	}
	t.Logf("%s: %d passed, %d failed, %d skipped in %s", b.name, len(r.passed), len(r.failed), r.skipped, elapsed)
	for _, s := range r.passed {
		t.Logf("%s: passed: %s", b.name, s)
	}
	reasons := make([]string, 0, len(r.skips))
	for k := range r.skips {
		reasons = append(reasons, k)
	}
	sort.Strings(reasons)
	for _, k := range reasons {
		t.Logf("%s: skipped %3d: %s", b.name, r.skips[k], k)
	}
	for _, s := range r.failed {
		t.Errorf("%s: FAILED: %s", b.name, s)
	}
	// The [Serial] performance specs print their figures only in the log.
	if data, err := os.ReadFile(logPath); err == nil {
		for _, l := range figures(string(data)) {
			t.Logf("%s: measured: %s", b.name, l)
		}
	}
	if len(r.passed) == 0 {
		t.Errorf("%s: no spec passed (focus %q matched nothing?)", b.name, focus)
	}
	if runErr != nil && len(r.failed) == 0 {
		t.Errorf("%s: e2e.test failed (%v) with no failed spec in the report; log %s", b.name, runErr, logPath)
	}
}

// driverDefinition is the suite's external driver file (JSON is YAML). The
// suite makes its own VolumeSnapshotClasses (Delete and Retain) with the
// parameters of snapshotClassFile, the class deploy/examples ships.
func driverDefinition(classFile, snapshotClassFile string, caps map[string]bool) string {
	keys := make([]string, 0, len(caps))
	for k := range caps {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var c []string
	for _, k := range keys {
		c = append(c, fmt.Sprintf("%q: %t", k, caps[k]))
	}
	return fmt.Sprintf(`StorageClass:
  FromFile: %q
SnapshotClass:
  FromFile: %q
DriverInfo:
  Name: carve.csi.dev
  SupportedFsType: {"": {}}
  SupportedSizeRange: {Min: 1Mi, Max: 10Gi}
  Capabilities: {%s}
  # The [Serial] specs' scale, the same as upstream's own reference driver
  # (csi-hostpath in k8s.io/kubernetes test/e2e/storage/drivers): the
  # performance spec fails above 2 min average latency or below 0.5 claims/s.
  StressTestOptions: {NumPods: 10, NumRestarts: 10}
  VolumeSnapshotStressTestOptions: {NumPods: 10, NumSnapshots: 10}
  PerformanceTestOptions:
    ProvisioningOptions: {VolumeSize: 1Mi, Count: 300, ExpectedMetrics: {AvgLatency: %d, Throughput: 0.5}}
`, classFile, snapshotClassFile, strings.Join(c, ", "), 2*time.Minute)
}

type report struct {
	passed, failed []string
	skipped        int
	// skips counts the skipped specs by the suite's reason.
	skips map[string]int
}

// skipReason shortens the suite's skip message to its reason: a spec the
// focus left out says only "skipped".
func skipReason(msg string) string {
	msg = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(msg), "skipped"))
	msg = strings.TrimSpace(strings.TrimPrefix(msg, "-"))
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	if msg == "" {
		return "not selected (-ginkgo.focus/-ginkgo.skip)"
	}
	return msg
}

// readReport reads the suite's JUnit report.
func readReport(dir string) (report, error) {
	r := report{skips: map[string]int{}}
	files, _ := filepath.Glob(filepath.Join(dir, "junit*.xml"))
	if len(files) == 0 {
		return r, fmt.Errorf("no junit*.xml in %s", dir)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return r, err
		}
		var suites struct {
			Suites []struct {
				Cases []struct {
					Name    string `xml:"name,attr"`
					Skipped *struct {
						Message string `xml:"message,attr"`
					} `xml:"skipped"`
					Failure *struct{} `xml:"failure"`
					Error   *struct{} `xml:"error"`
				} `xml:"testcase"`
			} `xml:"testsuite"`
		}
		if err := xml.Unmarshal(b, &suites); err != nil {
			return r, fmt.Errorf("%s: %w", f, err)
		}
		for _, s := range suites.Suites {
			for _, tc := range s.Cases {
				switch {
				case tc.Failure != nil || tc.Error != nil:
					r.failed = append(r.failed, tc.Name)
				case tc.Skipped != nil:
					// The report lists every spec of e2e.test; count only
					// this driver's, which the suite skipped itself.
					if strings.Contains(tc.Name, "carve.csi.dev") {
						r.skipped++
						r.skips[skipReason(tc.Skipped.Message)]++
					}
				case strings.Contains(tc.Name, "carve.csi.dev"):
					r.passed = append(r.passed, tc.Name)
				}
			}
		}
	}
	return r, nil
}

// figures picks the performance specs' measurements out of the suite's log:
// provisioning latency and throughput (printed as a multi-line object after
// "Metrics to evaluate:") and the deletion time of all claims.
func figures(log string) []string {
	var out []string
	lines := strings.Split(log, "\n")
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		switch {
		case strings.Contains(l, "Deleted all PVC/PVs in"):
			out = append(out, strings.TrimSpace(l[strings.Index(l, "Deleted all"):]))
		case strings.Contains(l, "Metrics to evaluate:"):
			// The object spans lines up to the one that closes it: "})".
			m := strings.TrimSpace(l[strings.Index(l, "Metrics to evaluate:"):])
			for !strings.HasSuffix(m, "})") && i+1 < len(lines) {
				i++
				m += " " + strings.TrimSpace(lines[i])
			}
			out = append(out, m)
		}
	}
	return out
}
