// Package sshexec runs commands on storage servers over ssh with a key
// from a Kubernetes Secret: the Gluster backend's executor ssh (the gluster
// CLI on a pool member) and the NFS backend's btrfs helper (carve-btrfs on
// the NFS server) share it.
package sshexec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/carve-csi/carve/pkg/params"
)

// RunError is a command that could not run or exited non-zero.
type RunError struct {
	Command  string // what ran, for messages
	ExitCode int    // -1 when the command did not start or was killed
	Stderr   string
	// Unreachable: the server could not be reached at all (ssh failed, no
	// socket, no binary), as opposed to the command failing.
	Unreachable bool
	Err         error
}

func (e *RunError) Error() string {
	msg := e.Stderr
	if msg == "" && e.Err != nil {
		msg = e.Err.Error()
	}
	return fmt.Sprintf("%s: exit %d: %s", e.Command, e.ExitCode, msg)
}

func (e *RunError) Unwrap() error { return e.Err }

// Run executes argv and returns its stdout; on failure also a *RunError
// (the stdout may still carry a report worth reading).
func Run(ctx context.Context, argv []string, describe string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// A command may leave helpers holding the pipes; don't wait for them.
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if err == nil || errors.Is(err, exec.ErrWaitDelay) {
		return stdout.Bytes(), nil
	}
	re := &RunError{Command: describe, ExitCode: -1, Stderr: strings.TrimSpace(stderr.String()), Err: err}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		re.Err = fmt.Errorf("%w (%w)", err, ctx.Err())
		re.Unreachable = true
	case errors.As(err, &ee):
		re.ExitCode = ee.ExitCode()
	case errors.Is(err, exec.ErrNotFound):
		re.Unreachable = true
	}
	return stdout.Bytes(), re
}

// Executor runs commands on Hosts over ssh.
type Executor struct {
	Hosts []string
	User  string
	// KeyFile is the private key; KnownHostsFile holds host keys.
	KeyFile        string
	KnownHostsFile string
	// StrictHostKeys refuses hosts missing from KnownHostsFile (the Secret
	// pinned them); otherwise new hosts are accepted on first use and
	// remembered.
	StrictHostKeys bool
	// Command is the ssh binary; "" means "ssh" from PATH.
	Command string
	// Options are extra ssh options ("-o" values, e.g. "Port=2222").
	Options []string
}

// Credentials are what an executor Secret holds.
type Credentials struct {
	User       string
	PrivateKey []byte
	KnownHosts []byte // optional
}

// Secret keys read by CredentialsFromSecret. ssh-privatekey is the key of
// Kubernetes' kubernetes.io/ssh-auth Secret type.
const (
	SecretKeyUser       = "username"
	SecretKeyPrivateKey = "ssh-privatekey"
	SecretKeyKnownHosts = "known_hosts"
)

// CredentialsFromSecret reads a Secret's data: ssh-privatekey (required),
// username (default root) and known_hosts (optional).
func CredentialsFromSecret(data map[string][]byte) (Credentials, error) {
	c := Credentials{User: strings.TrimSpace(string(data[SecretKeyUser])), PrivateKey: data[SecretKeyPrivateKey],
		KnownHosts: data[SecretKeyKnownHosts]}
	if c.User == "" {
		c.User = "root"
	}
	if len(bytes.TrimSpace(c.PrivateKey)) == 0 {
		return c, fmt.Errorf("%w: the executor Secret has no %q key (an SSH private key)", params.ErrInvalid, SecretKeyPrivateKey)
	}
	for _, r := range c.User {
		if !(r == '-' || r == '_' || r == '.' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')) {
			return c, fmt.Errorf("%w: the executor Secret's %s %q is not a valid user name", params.ErrInvalid, SecretKeyUser, c.User)
		}
	}
	return c, nil
}

// New writes the key (and known_hosts) into dir, private to this process,
// and returns an executor for hosts.
func New(hosts []string, cred Credentials, dir string) (*Executor, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ssh executor state dir: %w", err)
	}
	key := cred.PrivateKey
	if !bytes.HasSuffix(key, []byte("\n")) {
		key = append(append([]byte(nil), key...), '\n') // ssh rejects a key without a final newline
	}
	e := &Executor{Hosts: hosts, User: cred.User, KeyFile: filepath.Join(dir, "id"), KnownHostsFile: filepath.Join(dir, "known_hosts")}
	if err := os.WriteFile(e.KeyFile, key, 0o600); err != nil {
		return nil, fmt.Errorf("write ssh key: %w", err)
	}
	if len(bytes.TrimSpace(cred.KnownHosts)) > 0 {
		e.StrictHostKeys = true
		if err := os.WriteFile(e.KnownHostsFile, cred.KnownHosts, 0o600); err != nil {
			return nil, fmt.Errorf("write known_hosts: %w", err)
		}
	} else if f, err := os.OpenFile(e.KnownHostsFile, os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
		f.Close() // keep keys learnt earlier: an executor is rebuilt every few minutes
	} else {
		return nil, fmt.Errorf("create known_hosts: %w", err)
	}
	return e, nil
}

// RunOn runs argv on host. Non-root users run the command with sudo -n.
// ssh's own failures (connect, auth, host key: exit 255) are Unreachable.
func (e *Executor) RunOn(ctx context.Context, host string, argv []string) ([]byte, error) {
	bin := e.Command
	if bin == "" {
		bin = "ssh"
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	remote := make([]string, 0, len(argv)+3)
	if e.User != "root" {
		remote = append(remote, "sudo", "-n", "--")
	}
	for _, a := range argv {
		remote = append(remote, Quote(a))
	}
	strict := "accept-new"
	if e.StrictHostKeys {
		strict = "yes"
	}
	cmd := []string{bin, "-i", e.KeyFile,
		"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10",
		"-o", "StrictHostKeyChecking=" + strict, "-o", "UserKnownHostsFile=" + e.KnownHostsFile}
	for _, o := range e.Options {
		cmd = append(cmd, "-o", o)
	}
	// "--" before the host: ssh reads options until then, and after the
	// host again unless options were ended.
	cmd = append(cmd, "-l", e.User, "--", host, strings.Join(remote, " "))
	out, err := Run(ctx, cmd, fmt.Sprintf("ssh %s@%s %s", e.User, host, strings.Join(argv, " ")))
	var re *RunError
	if errors.As(err, &re) && re.ExitCode == 255 {
		re.Unreachable = true
	}
	return out, err
}

func (e *Executor) String() string { return "ssh " + e.User + "@" + strings.Join(e.Hosts, ",") }

// Quote quotes s for the remote POSIX shell ssh hands the command to.
func Quote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=,@%+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// DirName makes s (a Secret's namespace and name and the hosts it reaches)
// one safe path element, for an executor's directory: known_hosts are kept
// per Secret and hosts.
func DirName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '-' || r == '_' || r == '.' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			return r
		}
		return '-'
	}, s)
}
