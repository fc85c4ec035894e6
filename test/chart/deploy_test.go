package chart

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/diff"

	"github.com/carve-csi/carve/test/cluster"
)

// kubectlBin returns the tools cache's kubectl (hack/build-tools.sh, built
// on a miss; make unit builds it ahead). Without it the test skips, or
// fails under CARVE_REQUIRE_REAL=1.
func kubectlBin(t *testing.T) string {
	t.Helper()
	dir, err := cluster.BinDir(t.Context(), t.Logf)
	if errors.Is(err, cluster.ErrNoBinaries) {
		skipOrFail(t, err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "kubectl")
	if _, err := os.Stat(p); err != nil {
		skipOrFail(t, "kubectl: "+err.Error())
	}
	return p
}

func skipOrFail(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("CARVE_REQUIRE_REAL") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func kustomize(ctx context.Context, t *testing.T, kubectl, dir string) []*unstructured.Unstructured {
	t.Helper()
	out, err := exec.CommandContext(ctx, kubectl, "kustomize", dir).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("kubectl kustomize %s: %v: %s", dir, err, ee.Stderr)
		}
		t.Fatalf("kubectl kustomize %s: %v", dir, err)
	}
	objs, err := Decode(out)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// TestChartMatchesDeploy renders the chart with its default values in each
// mode and deploy/ with kustomize, and requires the same objects: images,
// arguments, RBAC rules, mounts, securityContext, probes, resources,
// StorageClasses, everything but what is the chart's own (its labels, the
// pull policy deploy/ leaves to the default) and the Namespace, which
// helm install --create-namespace makes.
func TestChartMatchesDeploy(t *testing.T) {
	repo, helm := helmBin(t)
	kubectl := kubectlBin(t)
	for _, m := range []struct{ name, values, dir string }{
		{"csi", "mode: csi", "deploy/csi-driver"},
		{"provisioner", "mode: provisioner", "deploy/provisioner"},
		{"csi-nfs", exampleValues("csi-nfs"), "deploy/examples/csi-nfs"},
		{"provisioner-nfs", exampleValues("provisioner-nfs"), "deploy/examples/provisioner-nfs"},
	} {
		t.Run(m.name, func(t *testing.T) {
			deployed := kustomize(t.Context(), t, kubectl, filepath.Join(repo, m.dir))
			charted, err := Decode([]byte(render(t, repo, helm, valueCase{name: m.name, values: m.values})))
			if err != nil {
				t.Fatal(err)
			}
			byKey := map[string]*unstructured.Unstructured{}
			for _, o := range charted {
				byKey[key(o)] = o
			}
			compared, equal := 0, 0
			for _, d := range deployed {
				if d.GetKind() == "Namespace" {
					if d.GetName() != namespace {
						t.Errorf("%s ships Namespace %s; the chart's tests install into %s", m.dir, d.GetName(), namespace)
					}
					continue
				}
				c, ok := byKey[key(d)]
				if !ok {
					t.Errorf("%s has %s; the chart renders none", m.dir, key(d))
					continue
				}
				delete(byKey, key(d))
				compared++
				if dd := diff.Diff(normalize(d), normalize(c)); dd != "" {
					t.Errorf("%s differs (-%s +chart):\n%s", key(d), m.dir, dd)
					continue
				}
				equal++
			}
			for k := range byKey {
				t.Errorf("the chart renders %s, which %s does not have", k, m.dir)
			}
			if compared < 5 {
				t.Fatalf("only %d objects compared", compared)
			}
			t.Logf("%d of %d objects of %s equal to the chart's", equal, compared, m.dir)
		})
	}
}

func key(o *unstructured.Unstructured) string {
	k := o.GetKind() + " " + o.GetName()
	if ns := o.GetNamespace(); ns != "" {
		k = o.GetKind() + " " + ns + "/" + o.GetName()
	}
	return k
}

// normalize drops what is the chart's own: labels and annotations (Helm's
// recommended ones), selector and pod labels other than
// app.kubernetes.io/name (deploy/'s selector), and imagePullPolicy
// IfNotPresent, which is what deploy/'s unset policy means for a tagged image.
func normalize(o *unstructured.Unstructured) map[string]any {
	m := o.DeepCopy().Object
	unstructured.RemoveNestedField(m, "metadata", "labels")
	unstructured.RemoveNestedField(m, "metadata", "annotations")
	for _, path := range [][]string{{"spec", "selector", "matchLabels"}, {"spec", "template", "metadata", "labels"}} {
		if labels, ok, _ := unstructured.NestedStringMap(m, path...); ok {
			_ = unstructured.SetNestedStringMap(m, map[string]string{"app.kubernetes.io/name": labels["app.kubernetes.io/name"]}, path...)
		}
	}
	containers, ok, _ := unstructured.NestedSlice(m, "spec", "template", "spec", "containers")
	if ok {
		for _, c := range containers {
			c := c.(map[string]any)
			image, _ := c["image"].(string)
			if c["imagePullPolicy"] == "IfNotPresent" && !strings.HasSuffix(image, ":latest") {
				delete(c, "imagePullPolicy")
			}
			// Order means nothing to the flag parser or the kubelet, and
			// kustomize's patches append or reorder.
			if args, ok := c["args"].([]any); ok {
				slices.SortStableFunc(args, func(a, b any) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
			}
			sortByName(c, "volumeMounts")
		}
		sortByName(map[string]any{"containers": containers}, "containers")
		_ = unstructured.SetNestedSlice(m, containers, "spec", "template", "spec", "containers")
	}
	if spec, ok, _ := unstructured.NestedMap(m, "spec", "template", "spec"); ok {
		sortByName(spec, "volumes")
		_ = unstructured.SetNestedMap(m, spec, "spec", "template", "spec")
	}
	return m
}

// sortByName sorts the list obj[field] of named items in place.
func sortByName(obj map[string]any, field string) {
	items, _ := obj[field].([]any)
	slices.SortStableFunc(items, func(a, b any) int {
		an, _ := a.(map[string]any)["name"].(string)
		bn, _ := b.(map[string]any)["name"].(string)
		return strings.Compare(an, bn)
	})
}
