package gluster

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/carve-csi/carve/pkg/backend"
)

// fakeSSH installs ssh, sudo and gluster stand-ins: ssh runs the remote
// command string with sh -c (as sshd would), refusing hosts named down*.
func fakeSSH(t *testing.T) (bin, log string) {
	t.Helper()
	bin = t.TempDir()
	log = filepath.Join(bin, "ssh.log")
	scripts := map[string]string{
		"ssh": `#!/bin/sh
echo "$@" >> "` + log + `"
while [ $# -gt 0 ]; do
  case "$1" in
    -i|-o|-l) shift 2;;
    --) shift; host=$1; shift; break;;
    *) echo "ssh: host given before --: $1" >&2; exit 255;;
  esac
done
case "$host" in down*) echo "ssh: connect to host $host port 22: Connection refused" >&2; exit 255;; esac
exec sh -c "$1"
`,
		"sudo":    "#!/bin/sh\n[ \"$1\" = -n ] && shift\n[ \"$1\" = -- ] && shift\nexec \"$@\"\n",
		"gluster": "#!/bin/sh\necho \"<cliOutput><opRet>0</opRet><opErrno>0</opErrno><opErrstr/><output>$(hostname) $*</output></cliOutput>\"\n",
	}
	for name, body := range scripts {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	return bin, log
}

func TestSSHExecutorQuotingAndFallback(t *testing.T) {
	_, log := fakeSSH(t)
	e, err := NewSSHExecutor([]string{"down1", "[fd00::2]"}, SSHCredentials{User: "carve", PrivateKey: []byte("KEY")}, filepath.Join(t.TempDir(), "st"))
	if err != nil {
		t.Fatal(err)
	}
	if key, _ := os.ReadFile(e.KeyFile); string(key) != "KEY\n" {
		t.Errorf("key file = %q", key)
	}
	if fi, _ := os.Stat(e.KeyFile); fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v", fi.Mode())
	}
	// Arguments survive the remote shell unchanged, whatever they contain.
	args := []string{"a b", "it's", "$HOME", "*", "", "x;y", `"q"`, "/dir with space"}
	out, err := e.RunOn(t.Context(), "ok", append([]string{"printf", `%s\n`}, args...))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n"); strings.Join(got, "|") != strings.Join(args, "|") {
		t.Errorf("remote saw %q, want %q", got, args)
	}
	// The first host is down: the CLI runs on the next one.
	c := NewCLI(e, nil)
	res, err := c.Run(t.Context(), "volume", "quota", "gv0", "limit-usage", "/ns/a b", "1024")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(res.Message, "--mode=script --xml -- volume quota gv0 limit-usage /ns/a b 1024") {
		t.Errorf("remote gluster got %q", res.Message)
	}
	logged, _ := os.ReadFile(log)
	for _, want := range []string{"-l carve -- down1 sudo -n -- gluster", "-l carve -- fd00::2 sudo -n -- gluster", "BatchMode=yes", "StrictHostKeyChecking=accept-new"} {
		if !strings.Contains(string(logged), want) {
			t.Errorf("ssh log lacks %q:\n%s", want, logged)
		}
	}

	// Pinned host keys make checking strict; learnt ones survive a rebuild.
	dir := filepath.Join(t.TempDir(), "st2")
	e2, err := NewSSHExecutor([]string{"h"}, SSHCredentials{User: "root", PrivateKey: []byte("K\n")}, dir)
	if err != nil || e2.StrictHostKeys {
		t.Fatalf("unpinned executor: %+v %v", e2, err)
	}
	if err := os.WriteFile(e2.KnownHostsFile, []byte("h ssh-ed25519 AAAA\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewSSHExecutor([]string{"h"}, SSHCredentials{User: "root", PrivateKey: []byte("K")}, dir); err != nil {
		t.Fatal(err)
	}
	if kh, _ := os.ReadFile(e2.KnownHostsFile); string(kh) != "h ssh-ed25519 AAAA\n" {
		t.Errorf("learnt host keys lost: %q", kh)
	}
	e3, err := NewSSHExecutor([]string{"h"}, SSHCredentials{User: "root", PrivateKey: []byte("K"), KnownHosts: []byte("h ssh-ed25519 BBBB\n")}, dir)
	if err != nil || !e3.StrictHostKeys {
		t.Fatalf("pinned executor: %+v %v", e3, err)
	}

	// All hosts down: unavailable, naming the ssh failure.
	e.Hosts = []string{"down1", "down2"}
	if _, err := NewCLI(e, nil).Run(t.Context(), "volume", "info"); !errors.Is(err, backend.ErrUnavailable) || !strings.Contains(err.Error(), "Connection refused") {
		t.Errorf("all hosts down: %v", err)
	}
}

func TestSSHCredentialsFromSecret(t *testing.T) {
	c, err := SSHCredentialsFromSecret(map[string][]byte{"ssh-privatekey": []byte("K")})
	if err != nil || c.User != "root" {
		t.Errorf("default user: %+v %v", c, err)
	}
	if _, err := SSHCredentialsFromSecret(map[string][]byte{"username": []byte("x")}); !errors.Is(err, backend.ErrInvalid) {
		t.Errorf("no key: %v", err)
	}
	if _, err := SSHCredentialsFromSecret(map[string][]byte{"username": []byte("a b"), "ssh-privatekey": []byte("K")}); !errors.Is(err, backend.ErrInvalid) {
		t.Errorf("bad user: %v", err)
	}
}

func TestLocalExecutorWithoutSocket(t *testing.T) {
	e := &LocalExecutor{Socket: filepath.Join(t.TempDir(), "none.socket")}
	_, err := NewCLI(e, nil).Run(t.Context(), "volume", "info")
	if !errors.Is(err, backend.ErrUnavailable) || !strings.Contains(err.Error(), "none.socket") {
		t.Errorf("missing socket: %v", err)
	}
}
