package cluster

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// serviceAccountTokenTTL is long so a process outlives any test or demo.
const serviceAccountTokenTTL = 365 * 24 * time.Hour

// AddNode creates a kwok-managed fake Node and waits until it is Ready.
// Pods scheduled to it are marked Running and Ready; no containers run.
func (c *Cluster) AddNode(ctx context.Context, name string) error {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("32"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Annotations: map[string]string{
				"node.alpha.kubernetes.io/ttl": "0",
				"kwok.x-k8s.io/node":           "fake", // kwok's --manage-nodes-with-annotation-selector
			},
			Labels: map[string]string{
				"kubernetes.io/hostname": name,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     runtime.GOARCH,
				"type":                   "kwok",
			},
		},
		Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity},
	}
	if _, err := c.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create node %s: %w", name, err)
	}
	return c.poll(ctx, "node "+name+" Ready", func(ctx context.Context) (bool, error) {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				return cond.Status == corev1.ConditionTrue, nil
			}
		}
		return false, nil
	})
}

// ServiceAccountKubeconfig writes a kubeconfig that authenticates as the
// ServiceAccount namespace/name, creating the ServiceAccount if needed, and
// returns its path. The token comes from the TokenRequest API and is valid for
// a year, so a process using it runs with exactly the account's RBAC.
func (c *Cluster) ServiceAccountKubeconfig(ctx context.Context, namespace, name string) (string, error) {
	sas := c.Client.CoreV1().ServiceAccounts(namespace)
	if _, err := sas.Get(ctx, name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
		if _, err := sas.Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return "", fmt.Errorf("create serviceaccount %s/%s: %w", namespace, name, err)
		}
	} else if err != nil {
		return "", fmt.Errorf("get serviceaccount %s/%s: %w", namespace, name, err)
	}
	ttl := int64(serviceAccountTokenTTL.Seconds())
	tr, err := sas.CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &ttl},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for serviceaccount %s/%s: %w", namespace, name, err)
	}
	path := filepath.Join(c.Dir, "kubeconfigs", fmt.Sprintf("sa-%s-%s.kubeconfig", namespace, name))
	user := "system:serviceaccount:" + namespace + ":" + name
	if err := writeKubeconfig(path, c.Server, c.caData, user, tr.Status.Token, namespace); err != nil {
		return "", err
	}
	return path, nil
}

// writeKubeconfig writes a single-context kubeconfig with a bearer token and
// the API server's certificate embedded, so the file is self-contained.
func writeKubeconfig(path, server string, caData []byte, user, token, namespace string) error {
	ns := ""
	if namespace != "" {
		ns = fmt.Sprintf("\n    namespace: %q", namespace)
	}
	// %q output is valid YAML for these ASCII values.
	data := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: carve
  cluster:
    server: %q
    certificate-authority-data: %q
users:
- name: %q
  user:
    token: %q
contexts:
- name: carve
  context:
    cluster: carve
    user: %q%s
current-context: carve
`, server, base64.StdEncoding.EncodeToString(caData), user, token, user, ns)
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}

// Kubectl runs kubectl as the admin user and returns its stdout. The error
// includes stderr. kubectl comes from BinDir, else from PATH.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	full := append([]string{"--kubeconfig=" + c.Kubeconfig, "--cache-dir=" + filepath.Join(c.Dir, "kubectl-cache")}, args...)
	cmd := exec.CommandContext(ctx, c.kubectl, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Apply applies a manifest file or, recursively, a directory of manifests
// with kubectl apply.
func (c *Cluster) Apply(ctx context.Context, path string) error {
	_, err := c.Kubectl(ctx, "apply", "--recursive", "--filename", path)
	return err
}
