// Package chart runs Helm on charts/carve for tests: the chart's own tests
// here (lint, rendering, agreement with deploy/, a server-side dry run; part
// of make unit) and the Helm install on a real node (test/e2e, TestHelm).
package chart

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/carve-csi/carve/test/cluster"
)

// Dir is the chart's directory in the repository.
const Dir = "charts/carve"

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

// Helm returns the helm binary: $CARVE_HELM, else the one hack/helm.sh
// builds into the tools cache (once, on a miss; make tools builds it ahead).
func Helm(ctx context.Context, repo string) (string, error) {
	helmOnce.Do(func() {
		if p := os.Getenv("CARVE_HELM"); p != "" {
			helmPath = p
			return
		}
		cmd := exec.CommandContext(ctx, "bash", filepath.Join(repo, "hack/helm.sh"), "--print-path")
		cmd.Stderr = os.Stderr // build progress
		out, err := cmd.Output()
		if err != nil {
			helmErr = fmt.Errorf("hack/helm.sh: %w", err)
			return
		}
		helmPath = strings.TrimSpace(string(out))
	})
	return helmPath, helmErr
}

// Repo returns the repository's root (cluster.RepoRoot).
func Repo() (string, error) { return cluster.RepoRoot() }

// Run runs helm with args and returns its stdout; the error carries stderr.
// env is added to the environment (e.g. HELM_CACHE_HOME, KUBECONFIG).
func Run(ctx context.Context, helm string, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, helm, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Decode splits a multi-document YAML stream (helm template, kubectl
// kustomize) into objects, skipping empty documents.
func Decode(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, fmt.Errorf("decode object %d: %w", len(objs)+1, err)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}
