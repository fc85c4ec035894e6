package cluster

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

const pollInterval = 200 * time.Millisecond

// start launches etcd, the API server, the controllers, the scheduler and kwok.
func (c *Cluster) start(ctx context.Context) error {
	pki := filepath.Join(c.Dir, "pki")
	for _, d := range []string{pki, c.LogDir, filepath.Join(c.Dir, "kubeconfigs"), filepath.Join(c.Dir, "kwok-home")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	saKey, saPub := filepath.Join(pki, "sa.key"), filepath.Join(pki, "sa.pub")
	if err := writeServiceAccountKeys(saKey, saPub); err != nil {
		return err
	}
	tokens := map[string]string{}
	for _, u := range []string{"admin", "controller-manager", "scheduler"} {
		tokens[u] = randomToken()
	}
	// token,user,uid,"groups". The components use their well-known users,
	// which the bootstrap RBAC policy grants exactly what they need.
	tokenFile := filepath.Join(pki, "tokens.csv")
	tokenCSV := fmt.Sprintf("%s,admin,admin,system:masters\n%s,system:kube-controller-manager,kcm\n%s,system:kube-scheduler,scheduler\n",
		tokens["admin"], tokens["controller-manager"], tokens["scheduler"])
	if err := os.WriteFile(tokenFile, []byte(tokenCSV), 0o600); err != nil {
		return err
	}
	ports, err := freePorts(5)
	if err != nil {
		return err
	}
	etcdPort, peerPort, apiPort, kcmPort, schedPort := ports[0], ports[1], ports[2], ports[3], ports[4]

	// etcd. --unsafe-no-fsync: the data is thrown away, and fsync dominates
	// API latency on slow CI disks.
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	c.etcd, err = c.startCore("etcd",
		"--name=default",
		"--data-dir="+filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls="+etcdURL,
		"--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL,
		"--unsafe-no-fsync",
	)
	if err != nil {
		return err
	}
	if err := c.waitHTTP(ctx, "etcd", etcdURL+"/health"); err != nil {
		return err
	}

	// kube-apiserver. The endpoint reconciler is off because it would keep
	// failing to publish a loopback address for the kubernetes Service.
	certDir := filepath.Join(pki, "apiserver")
	c.apiserver, err = c.startCore("kube-apiserver",
		"--etcd-servers="+etcdURL,
		"--service-account-key-file="+saPub,
		"--service-account-signing-key-file="+saKey,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--token-auth-file="+tokenFile,
		"--authorization-mode=RBAC",
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(apiPort),
		"--cert-dir="+certDir,
		"--service-cluster-ip-range=10.96.0.0/16",
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		// Real nodes (AddRealNode) are reached by their InternalIP: their
		// names do not resolve.
		"--kubelet-preferred-address-types=InternalIP",
	)
	if err != nil {
		return err
	}
	c.Server = "https://127.0.0.1:" + strconv.Itoa(apiPort)
	if err := c.waitAPIServer(ctx, filepath.Join(certDir, "apiserver.crt"), tokens["admin"]); err != nil {
		return err
	}

	kubeconfig := func(name, user string) (string, error) {
		path := filepath.Join(c.Dir, "kubeconfigs", name+".kubeconfig")
		return path, writeKubeconfig(path, c.Server, c.caData, user, tokens[name], "")
	}
	if c.Kubeconfig, err = kubeconfig("admin", "admin"); err != nil {
		return err
	}
	kcmKubeconfig, err := kubeconfig("controller-manager", "system:kube-controller-manager")
	if err != nil {
		return err
	}
	schedKubeconfig, err := kubeconfig("scheduler", "system:kube-scheduler")
	if err != nil {
		return err
	}

	// Per-controller ServiceAccount credentials, as kubeadm does, so
	// controllers act with their own RBAC like in a real cluster.
	c.controllerManager, err = c.startCore("kube-controller-manager", append([]string{
		"--kubeconfig=" + kcmKubeconfig,
		"--service-account-private-key-file=" + saKey,
		"--root-ca-file=" + filepath.Join(certDir, "apiserver.crt"),
		"--use-service-account-credentials=true",
		"--controllers=*",
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(kcmPort),
	}, c.opts.ControllerManagerArgs...)...,
	)
	if err != nil {
		return err
	}
	c.scheduler, err = c.startCore("kube-scheduler",
		"--kubeconfig="+schedKubeconfig,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(schedPort),
		// Under load a StatefulSet replica stayed unscheduled for minutes
		// after its claim's PV was created (kwok story: the scheduler's log
		// shows no attempt after the one just after the PV appeared; CI's
		// real-node failure had the same shape): such a pod waits in the
		// unschedulable pool for the 5-minute flush, past every step's
		// 3-minute wait. 20 s bounds that stall.
		"--pod-max-in-unschedulable-pods-duration=20s",
	)
	if err != nil {
		return err
	}
	// kwok without a node lease lets the node lifecycle controller mark its
	// pods NotReady after ~50 s. HOME isolates it from a user's ~/.kwok config.
	c.kwok, err = c.startCoreEnv("kwok", []string{"HOME=" + filepath.Join(c.Dir, "kwok-home")},
		"--kubeconfig="+c.Kubeconfig,
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
		"--cidr=10.0.0.1/24",
		"--node-ip=10.0.0.1",
		"--node-lease-duration-seconds=40",
	)
	if err != nil {
		return err
	}

	if err := c.waitHTTP(ctx, "kube-scheduler", "https://127.0.0.1:"+strconv.Itoa(schedPort)+"/healthz"); err != nil {
		return err
	}
	if err := c.waitHTTP(ctx, "kube-controller-manager", "https://127.0.0.1:"+strconv.Itoa(kcmPort)+"/healthz"); err != nil {
		return err
	}
	// Pods are rejected until the ServiceAccount controller has created
	// "default" in their namespace.
	return c.poll(ctx, "default ServiceAccount", func(ctx context.Context) (bool, error) {
		_, err := c.Client.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	})
}

func (c *Cluster) startCore(name string, args ...string) (*Process, error) {
	return c.startCoreEnv(name, nil, args...)
}

func (c *Cluster) startCoreEnv(name string, env []string, args ...string) (*Process, error) {
	argv := append([]string{filepath.Join(c.BinDir, name)}, args...)
	p, err := startProcess(name, filepath.Join(c.LogDir, name+".log"), argv, env)
	if err != nil {
		return nil, err
	}
	c.logf("cluster: started %s (pid %d)", name, p.Pid())
	return p, nil
}

// poll runs cond until it returns true, ctx ends or a control-plane process
// dies. Errors from cond are retried; the last one is reported on timeout.
func (c *Cluster) poll(ctx context.Context, what string, cond func(context.Context) (bool, error)) error {
	var last error
	err := wait.PollUntilContextCancel(ctx, pollInterval, true, func(ctx context.Context) (bool, error) {
		if err := c.checkAlive(); err != nil {
			return false, err
		}
		ok, err := cond(ctx)
		if err != nil {
			last = err
		}
		return ok, nil
	})
	if err != nil {
		if ctx.Err() != nil && last != nil {
			err = fmt.Errorf("%w (last error: %w)", err, last)
		}
		return fmt.Errorf("waiting for %s: %w", what, err)
	}
	return nil
}

// waitHTTP waits for url to answer 200. Serving certificates of the
// components' health endpoints are self-signed and not worth verifying.
func (c *Cluster) waitHTTP(ctx context.Context, what, url string) error {
	hc := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, //nolint:gosec // local health probe
	}
	defer hc.CloseIdleConnections()
	return c.poll(ctx, what, func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false, fmt.Errorf("%s: %s", url, resp.Status)
		}
		return true, nil
	})
}

// waitAPIServer waits for the self-signed serving certificate, builds the
// admin client trusting it, and waits for /readyz.
func (c *Cluster) waitAPIServer(ctx context.Context, certFile, adminToken string) error {
	err := c.poll(ctx, "kube-apiserver certificate", func(context.Context) (bool, error) {
		data, err := os.ReadFile(certFile)
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		c.caData = data
		return len(data) > 0, nil
	})
	if err != nil {
		return err
	}
	c.RESTConfig = &rest.Config{
		Host:            c.Server,
		BearerToken:     adminToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.caData},
		// Tests create many objects quickly; client-side throttling would only
		// slow them down.
		QPS:   100,
		Burst: 200,
	}
	if c.Client, err = kubernetes.NewForConfig(c.RESTConfig); err != nil {
		return err
	}
	return c.poll(ctx, "kube-apiserver /readyz", func(ctx context.Context) (bool, error) {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(rctx)
		return err == nil, err
	})
}

// writeServiceAccountKeys writes the key pair the API server signs and
// verifies ServiceAccount tokens with.
func writeServiceAccountKeys(keyFile, pubFile string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("service-account key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return fmt.Errorf("service-account key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return err
	}
	return os.WriteFile(pubFile, pubPEM, 0o644)
}

func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails on Linux
	return hex.EncodeToString(b)
}

// freePorts returns n distinct free loopback ports. Another process could take
// one before the component binds it; the component then exits and Start fails
// with a clear error rather than hanging.
func freePorts(n int) ([]int, error) {
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
