//go:build e2e

package cluster_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/carve-csi/carve/test/cluster"
)

func TestCluster(t *testing.T) {
	c := cluster.StartForTest(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	if err := c.AddNode(ctx, "extra-node"); err != nil {
		t.Fatal(err)
	}
	out, err := c.Kubectl(ctx, "get", "nodes", "-o", "name")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "node/kwok-node-0") || !strings.Contains(out, "node/extra-node") {
		t.Fatalf("kubectl get nodes = %q, want kwok-node-0 and extra-node", out)
	}

	t.Run("Deployment", func(t *testing.T) {
		manifest := filepath.Join(t.TempDir(), "deploy.yaml")
		if err := os.WriteFile(manifest, []byte(deployment), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := c.Apply(ctx, manifest); err != nil {
			t.Fatal(err)
		}
		err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			d, err := c.Client.AppsV1().Deployments("default").Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			return d.Status.ReadyReplicas == 2, nil
		})
		if err != nil {
			t.Fatalf("deployment web not ready: %v", err)
		}
		pods, err := c.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			t.Fatal(err)
		}
		running := 0
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning && p.Spec.NodeName != "" {
				running++
			}
		}
		if running != 2 {
			t.Fatalf("%d pods Running, want 2", running)
		}
	})

	t.Run("StatefulSet", func(t *testing.T) {
		replicas := int32(2)
		labels := map[string]string{"app": "db"}
		sts := &appsv1.StatefulSet{
			ObjectMeta: metav1.ObjectMeta{Name: "db"},
			Spec: appsv1.StatefulSetSpec{
				Replicas: &replicas,
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "db", Image: "db:1"}}},
				},
			},
		}
		if _, err := c.Client.AppsV1().StatefulSets("default").Create(ctx, sts, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			s, err := c.Client.AppsV1().StatefulSets("default").Get(ctx, "db", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			return s.Status.ReadyReplicas == 2, nil
		})
		if err != nil {
			t.Fatalf("statefulset db not ready: %v", err)
		}
	})

	t.Run("ServiceAccountRBAC", func(t *testing.T) {
		path, err := c.ServiceAccountKubeconfig(ctx, "default", "limited")
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			t.Fatal(err)
		}
		client, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		// Forbidden alone would also hold for an anonymous client; check who we are.
		review, err := client.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := review.Status.UserInfo.Username, "system:serviceaccount:default:limited"; got != want {
			t.Fatalf("authenticated as %q, want %q", got, want)
		}
		_, err = client.CoreV1().Secrets("").List(ctx, metav1.ListOptions{})
		if !apierrors.IsForbidden(err) {
			t.Fatalf("listing secrets as the ServiceAccount: err = %v, want Forbidden", err)
		}
		// The admin client is not restricted.
		if _, err := c.Client.CoreV1().Secrets("").List(ctx, metav1.ListOptions{}); err != nil {
			t.Fatalf("listing secrets as admin: %v", err)
		}
	})

	t.Run("StartProcess", func(t *testing.T) {
		p, err := c.StartProcess("sleeper", []string{"/bin/sh", "-c", `echo "hello $GREETING"; exec sleep 600`}, []string{"GREETING=carve"})
		if err != nil {
			t.Fatal(err)
		}
		err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
			b, err := os.ReadFile(p.LogPath)
			return err == nil && strings.Contains(string(b), "hello carve"), nil
		})
		if err != nil {
			t.Fatalf("log %s never said hello: %v", p.LogPath, err)
		}
		p.Stop()
		select {
		case <-p.Done():
		default:
			t.Fatal("process still running after Stop")
		}
	})
}

const deployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: web:1
`
