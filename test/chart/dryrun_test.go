package chart

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/carve-csi/carve/test/cluster"
)

// serviceMonitorCRD stands in for prometheus-operator's CRD so the API
// server knows the kind: it checks the group, version, kind and scope, not
// the ServiceMonitor's fields.
const serviceMonitorCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
`

// TestServerDryRun has a real kube-apiserver (test/cluster) validate, with
// kubectl apply --dry-run=server, every kustomization in deploy/ and the
// chart's output for every case of the values matrix: schemas, admission
// and RBAC objects as the server reads them, which helm lint does not check.
func TestServerDryRun(t *testing.T) {
	repo, helm := helmBin(t)
	c := cluster.StartForTest(t, cluster.Options{})
	ctx := t.Context()
	// A dry run creates nothing, so the namespace the objects go to must
	// exist already (deploy/'s Namespace in the same apply is not enough).
	if _, err := c.Kubectl(ctx, "create", "namespace", namespace); err != nil {
		t.Fatal(err)
	}
	crd := filepath.Join(t.TempDir(), "servicemonitor-crd.yaml")
	if err := os.WriteFile(crd, []byte(serviceMonitorCRD), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Kubectl(ctx, "apply", "-f", crd); err != nil {
		t.Fatal(err)
	}
	// The snapshot CRDs as deploy/snapshot-controller ships them: the
	// examples' VolumeSnapshotClasses are checked against their schema.
	if _, err := c.Kubectl(ctx, "apply", "-f", filepath.Join(repo, "deploy/snapshot-controller/crds")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Kubectl(ctx, "wait", "--for=condition=Established", "--timeout=60s", "crd/servicemonitors.monitoring.coreos.com",
		"crd/volumesnapshotclasses.snapshot.storage.k8s.io", "crd/volumesnapshotcontents.snapshot.storage.k8s.io",
		"crd/volumesnapshots.snapshot.storage.k8s.io"); err != nil {
		t.Fatal(err)
	}

	// dryRun applies a file or kustomization (-k) and checks that the server
	// accepted each object it holds.
	dryRun := func(t *testing.T, want int, args ...string) {
		t.Helper()
		out, err := c.Kubectl(ctx, append([]string{"apply", "--dry-run=server", "-o", "name"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		if got := len(strings.Fields(out)); got != want {
			t.Fatalf("the server accepted %d objects, want %d:\n%s", got, want, out)
		}
	}

	var kustomizations []string
	err := filepath.WalkDir(filepath.Join(repo, "deploy"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == "kustomization.yaml" {
			kustomizations = append(kustomizations, filepath.Dir(p))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(kustomizations) == 0 {
		t.Fatal("no kustomization in deploy/")
	}
	kubectl := filepath.Join(c.BinDir, "kubectl")
	for _, dir := range kustomizations {
		rel, _ := filepath.Rel(repo, dir)
		t.Run(rel, func(t *testing.T) {
			dryRun(t, len(kustomize(ctx, t, kubectl, dir)), "-k", dir)
		})
	}
	for _, vc := range cases {
		t.Run("chart/"+vc.name, func(t *testing.T) {
			out := render(t, repo, helm, vc)
			objs, err := Decode([]byte(out))
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(t.TempDir(), "chart.yaml")
			if err := os.WriteFile(p, []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
			dryRun(t, len(objs), "-f", p)
		})
	}
}
