package cluster

import (
	"path/filepath"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
)

// The kubeconfig is written by hand; check client-go reads it back intact.
func TestWriteKubeconfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kc")
	ca := []byte("-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n")
	if err := writeKubeconfig(path, "https://127.0.0.1:6443", ca, "system:serviceaccount:ns:sa", "tok", "ns"); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := cfg.Contexts[cfg.CurrentContext]
	if ctx == nil || ctx.Namespace != "ns" || ctx.AuthInfo != "system:serviceaccount:ns:sa" {
		t.Fatalf("context = %+v", ctx)
	}
	if got := cfg.Clusters[ctx.Cluster]; got.Server != "https://127.0.0.1:6443" || string(got.CertificateAuthorityData) != string(ca) {
		t.Fatalf("cluster = %+v", got)
	}
	if got := cfg.AuthInfos[ctx.AuthInfo].Token; got != "tok" {
		t.Fatalf("token = %q", got)
	}
}

func TestFreePorts(t *testing.T) {
	ports, err := freePorts(5)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p <= 0 || seen[p] {
			t.Fatalf("ports = %v", ports)
		}
		seen[p] = true
	}
}
