// Package sshd gives tests a real OpenSSH server of their own on
// 127.0.0.1: a fresh host key and client key, root logins with that key
// only, stopped at the test's end. Without root or sshd the test is
// skipped, unless CARVE_REQUIRE_REAL=1 makes that a failure.
package sshd

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Server is a running sshd.
type Server struct {
	Port int
	// PrivateKey logs in as root (what an executor Secret's ssh-privatekey
	// holds).
	PrivateKey []byte
	// KnownHosts pins the server's host key for 127.0.0.1 on Port.
	KnownHosts []byte
}

// SSHOptions are the ssh -o options that reach the server.
func (s *Server) SSHOptions() []string { return []string{"Port=" + strconv.Itoa(s.Port)} }

func need(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("CARVE_REQUIRE_REAL") == "1" {
		t.Fatalf("CARVE_REQUIRE_REAL=1: %s", what)
	}
	t.Skipf("%s (set CARVE_REQUIRE_REAL=1 to make this a failure)", what)
}

// Start runs sshd for the test.
func Start(t testing.TB) *Server {
	t.Helper()
	if os.Getuid() != 0 {
		need(t, "sshd for root logins needs root")
	}
	bin, err := exec.LookPath("sshd")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/sshd"); serr != nil {
			need(t, "sshd is not installed (apt-get install openssh-server)")
		}
		bin = "/usr/sbin/sshd"
	}
	for _, tool := range []string{"ssh", "ssh-keygen"} {
		if _, err := exec.LookPath(tool); err != nil {
			need(t, tool+" is not installed")
		}
	}
	dir := t.TempDir()
	hostKey := filepath.Join(dir, "host_ed25519")
	clientKey := filepath.Join(dir, "client_ed25519")
	for _, k := range []string{hostKey, clientKey} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", k).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v: %s", err, out)
		}
	}
	pub, err := os.ReadFile(clientKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	// sshd's privilege separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cfg := filepath.Join(dir, "sshd_config")
	conf := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
PidFile %s
AuthorizedKeysFile %s
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
LogLevel ERROR
`, port, hostKey, filepath.Join(dir, "sshd.pid"), authorized)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-D", "-e", "-f", cfg)
	log, err := os.Create(filepath.Join(dir, "sshd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sshd: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		log.Close()
	})
	for deadline := time.Now().Add(30 * time.Second); ; {
		c, err := net.DialTimeout("tcp", l.Addr().String(), time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-done:
			out, _ := os.ReadFile(log.Name())
			t.Fatalf("sshd exited: %s", out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd does not listen on %d: %v", port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	key, err := os.ReadFile(clientKey)
	if err != nil {
		t.Fatal(err)
	}
	hostPub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	return &Server{Port: port, PrivateKey: key, KnownHosts: []byte(fmt.Sprintf("[127.0.0.1]:%d %s", port, hostPub))}
}
