// Package ganesha runs a real NFS-Ganesha server for tests.
//
// The server exports one local directory over NFSv3 and NFSv4 (TCP) on
// 127.0.0.1 with the VFS FSAL. This machine type has no kernel NFS client,
// so the NFS side is read with the libnfs userspace tools (nfs-ls, nfs-cat).
// Ganesha binds the fixed ports 2049 and 20048, so servers are serialized
// host-wide with a file lock: parallel test packages queue instead of failing.
package ganesha

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/carve-csi/carve/internal/hostlock"
	"github.com/carve-csi/carve/internal/testenv/internal/realenv"
)

const (
	// Host is the address the server is reached on.
	Host = "127.0.0.1"
	// DefaultPseudo is the NFSv4 pseudo path of the export. With
	// Mount_Path_Pseudo NFSv3 clients mount the same path.
	DefaultPseudo = "/export"
	// AptPackages are the Debian packages providing the binaries used here.
	AptPackages = "nfs-ganesha nfs-ganesha-vfs rpcbind libnfs-utils"

	defaultStartTimeout = 30 * time.Second
	commandTimeout      = 30 * time.Second
	stopGrace           = 15 * time.Second
)

// ErrUnavailable is wrapped by errors caused by a missing prerequisite (not
// root, binaries not installed).
var ErrUnavailable = realenv.ErrUnavailable

// Options configures StartServer.
type Options struct {
	// ExportDir is the local directory to export. Required.
	ExportDir string
	// Pseudo is the export's path on the NFS side; DefaultPseudo if empty.
	Pseudo string
	// WorkDir receives the config, log and pid files. If empty, a temporary
	// directory is created and removed by Stop.
	WorkDir string
	// StartTimeout bounds the wait for the export to answer; 30s if zero.
	StartTimeout time.Duration
	// Logf, if set, receives progress messages (lock waits, readiness).
	Logf func(format string, args ...any)
}

// Server is a running ganesha.nfsd.
type Server struct {
	exportDir  string
	pseudo     string
	workDir    string
	ownWorkDir bool
	confPath   string
	logPath    string
	outPath    string
	proc       *realenv.Process
	lock       *hostlock.Lock
	stopped    bool
}

// Check reports whether a server can be started here; the error wraps
// ErrUnavailable and names the apt packages to install.
func Check() error {
	return realenv.Check(AptPackages, "ganesha.nfsd", "rpcbind", "nfs-ls", "nfs-cat")
}

// Start starts a server exporting exportDir for the life of the test and
// registers its shutdown with t.Cleanup. It skips the test if root or the
// binaries are missing, or fails it instead when CARVE_REQUIRE_REAL=1.
func Start(t testing.TB, exportDir string) *Server {
	t.Helper()
	s, err := StartServer(t.Context(), Options{
		ExportDir: exportDir,
		WorkDir:   t.TempDir(),
		Logf:      t.Logf,
	})
	if err != nil {
		realenv.SkipOrFatal(t, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("ganesha log tail (%s):\n%s", s.logPath, realenv.Tail(s.logPath, 30))
		}
		if err := s.Stop(); err != nil {
			t.Errorf("stop ganesha: %v", err)
		}
	})
	return s
}

// StartServer starts a server and returns once the export answers over NFS.
// The caller must call Stop. ctx bounds the wait for the host lock and the
// start-up; it does not limit the server's lifetime.
func StartServer(ctx context.Context, opts Options) (*Server, error) {
	return startServer(ctx, opts)
}

// startServer has a named error result for its cleanup-on-failure defer.
func startServer(ctx context.Context, opts Options) (_ *Server, err error) {
	if err := Check(); err != nil {
		return nil, err
	}
	if opts.ExportDir == "" {
		return nil, errors.New("ganesha: Options.ExportDir is required")
	}
	exportDir, err := filepath.Abs(opts.ExportDir)
	if err != nil {
		return nil, fmt.Errorf("ganesha: export dir: %w", err)
	}
	if strings.ContainsAny(exportDir, "\"\n") {
		return nil, fmt.Errorf("ganesha: export dir %q: quotes and newlines are not supported", exportDir)
	}
	if fi, err := os.Stat(exportDir); err != nil {
		return nil, fmt.Errorf("ganesha: export dir: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("ganesha: export dir %s is not a directory", exportDir)
	}
	pseudo := opts.Pseudo
	if pseudo == "" {
		pseudo = DefaultPseudo
	}
	if !strings.HasPrefix(pseudo, "/") || strings.ContainsAny(pseudo, "\";\n") {
		return nil, fmt.Errorf("ganesha: invalid pseudo path %q", pseudo)
	}
	startTimeout := opts.StartTimeout
	if startTimeout == 0 {
		startTimeout = defaultStartTimeout
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}

	srv := &Server{exportDir: exportDir, pseudo: pseudo, workDir: opts.WorkDir}
	if srv.workDir == "" {
		if srv.workDir, err = os.MkdirTemp("", "carve-ganesha-"); err != nil {
			return nil, fmt.Errorf("ganesha: work dir: %w", err)
		}
		srv.ownWorkDir = true
	}
	defer func() {
		if err != nil {
			_ = srv.Stop()
		}
	}()

	if srv.lock, err = hostlock.AcquireLock(ctx, hostlock.LockPath("ganesha"), logf); err != nil {
		return nil, fmt.Errorf("ganesha: %w", err)
	}
	// With the lock held nothing of ours serves NFS, so a listener on 2049
	// is a foreign server that would make ganesha exit with EADDRINUSE.
	if c, derr := net.DialTimeout("tcp", net.JoinHostPort(Host, "2049"), time.Second); derr == nil {
		c.Close()
		return nil, errors.New("ganesha: port 2049 is already in use by another NFS server " +
			"(find it with: ss -ltnp 'sport = :2049')")
	}
	if err := ensureRPCBind(ctx); err != nil {
		return nil, fmt.Errorf("ganesha: %w", err)
	}

	srv.confPath = filepath.Join(srv.workDir, "ganesha.conf")
	srv.logPath = filepath.Join(srv.workDir, "ganesha.log")
	srv.outPath = filepath.Join(srv.workDir, "ganesha.out")
	if err := os.WriteFile(srv.confPath, []byte(config(exportDir, pseudo)), 0o644); err != nil {
		return nil, fmt.Errorf("ganesha: write config: %w", err)
	}

	started := time.Now()
	srv.proc, err = realenv.StartProcess(srv.outPath, "ganesha.nfsd",
		"-F", "-f", srv.confPath, "-L", srv.logPath, "-p", filepath.Join(srv.workDir, "ganesha.pid"))
	if err != nil {
		return nil, fmt.Errorf("ganesha: %w", err)
	}
	if err := srv.waitReady(ctx, startTimeout); err != nil {
		return nil, fmt.Errorf("ganesha: %w\nproblems in ganesha's log:\n%s\nganesha output:\n%s\nganesha log tail (%s):\n%s",
			err, logProblems(srv.logPath), realenv.Tail(srv.outPath, 10), srv.logPath, realenv.Tail(srv.logPath, 15))
	}
	logf("ganesha: exporting %s as %s:%s, ready after %s (log %s)",
		exportDir, Host, pseudo, time.Since(started).Round(time.Millisecond), srv.logPath)
	return srv, nil
}

// config renders the ganesha configuration.
func config(exportDir, pseudo string) string {
	return fmt.Sprintf(`# Written by carve's internal/testenv/ganesha.
NFS_CORE_PARAM {
    Protocols = 3, 4;
    NFS_Port = 2049;
    MNT_Port = 20048;
    Enable_RQUOTA = false;
    # NFSv3 clients mount the pseudo path too.
    Mount_Path_Pseudo = true;
}
NFSv4 {
    Graceless = true;
}
EXPORT {
    Export_Id = 1;
    Path = "%s";
    Pseudo = "%s";
    Access_Type = RW;
    Squash = No_Root_Squash;
    Protocols = 3, 4;
    Transports = TCP;
    SecType = sys;
    # Tests change the exported directory behind ganesha's back; without
    # this, cached directory listings stay stale for 60 s.
    Attr_Expiration_Time = 0;
    FSAL {
        Name = VFS;
    }
}
`, exportDir, pseudo)
}

// ensureRPCBind starts rpcbind unless it already answers. It is left running:
// it is a host service shared with other servers and tests.
func ensureRPCBind(ctx context.Context) error {
	if rpcbindUp() {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	// rpcbind daemonizes itself; the command returns once it has forked.
	if _, err := realenv.Run(cctx, "rpcbind", "-w"); err != nil {
		return fmt.Errorf("start rpcbind: %w", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !rpcbindUp() {
		if time.Now().After(deadline) {
			return errors.New("rpcbind started but does not answer on 127.0.0.1:111")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

func rpcbindUp() bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort(Host, "111"), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// waitReady polls the export with nfs-ls until it answers, ganesha exits, or
// the timeout expires.
func (s *Server) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var lastErr error
	for {
		select {
		case <-s.proc.Exited():
			return fmt.Errorf("ganesha.nfsd exited during start-up: %v", s.proc.ExitErr())
		default:
		}
		// A bad export leaves ganesha running without it; fail at once.
		if p := logProblems(s.logPath); strings.Contains(p, ":CONFIG :CRIT :") {
			return errors.New("ganesha rejected its configuration")
		}
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		_, lastErr = realenv.Run(actx, "nfs-ls", s.URL(s.pseudo))
		acancel()
		if lastErr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("export %s did not answer within %s: %w (last error: %v)",
				s.URL(s.pseudo), timeout, ctx.Err(), lastErr)
		case <-s.proc.Exited():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// problemLine matches serious ganesha log lines; noiseLine the ones this
// machine type always logs (no D-Bus, no Kerberos).
var (
	problemLine = regexp.MustCompile(`:(FATAL|CRIT|MAJ) :`)
	noiseLine   = regexp.MustCompile(`:DBUS :|krb5|keytab|credentials for principal`)
)

// logProblems returns up to 20 serious lines of ganesha's log.
func logProblems(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	var lines []string
	for line := range strings.Lines(string(data)) {
		if problemLine.MatchString(line) && !noiseLine.MatchString(line) && len(lines) < 20 {
			lines = append(lines, strings.TrimRight(line, "\n"))
		}
	}
	if len(lines) == 0 {
		return "(none)"
	}
	return strings.Join(lines, "\n")
}

// Stop terminates ganesha, waits for it to exit and releases the host lock.
// It is safe to call more than once.
func (s *Server) Stop() error {
	if s.stopped {
		return nil
	}
	s.stopped = true
	var errs []error
	if s.proc != nil {
		if err := s.proc.Stop(stopGrace); err != nil {
			errs = append(errs, fmt.Errorf("stop ganesha.nfsd: %w", err))
		}
	}
	if err := s.lock.Unlock(); err != nil {
		errs = append(errs, err)
	}
	if s.ownWorkDir {
		if err := os.RemoveAll(s.workDir); err != nil {
			errs = append(errs, fmt.Errorf("remove work dir: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Server returns the NFS server address, "127.0.0.1".
func (s *Server) Server() string { return Host }

// Export returns the export's path on the NFS side, e.g. "/export".
func (s *Server) Export() string { return s.pseudo }

// ExportDir returns the exported local directory.
func (s *Server) ExportDir() string { return s.exportDir }

// LogPath returns the path of ganesha's log file.
func (s *Server) LogPath() string { return s.logPath }

// URL returns the libnfs URL of nfsPath, an absolute path on the NFS side
// such as "/export/dir". libnfs does not percent-decode: pass names raw.
func (s *Server) URL(nfsPath string) string { return "nfs://" + Host + nfsPath }

// List returns the names of the entries of the directory nfsPath (e.g.
// "/export" or "/export/sub"), as read over NFSv3 with nfs-ls. Hidden
// entries are included; "." and ".." are not. A missing directory fails with
// a mount error (MNT3ERR_ACCES), because nfs-ls mounts the path it lists.
func (s *Server) List(nfsPath string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	out, err := realenv.Run(ctx, "nfs-ls", s.URL(nfsPath))
	if err != nil {
		return nil, fmt.Errorf("list %s over NFS: %w", nfsPath, err)
	}
	names, err := parseNFSLs(out)
	if err != nil {
		return nil, fmt.Errorf("list %s over NFS: %w", nfsPath, err)
	}
	return names, nil
}

// ReadFile returns the contents of the file nfsPath (e.g. "/export/a.txt"),
// read over NFSv3 with nfs-cat.
func (s *Server) ReadFile(nfsPath string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	out, err := realenv.Run(ctx, "nfs-cat", s.URL(nfsPath))
	if err != nil {
		return nil, fmt.Errorf("read %s over NFS: %w", nfsPath, err)
	}
	return out, nil
}

// nfsLsLine matches one line of nfs-ls output, as printed by libnfs-utils 4.0 (Debian 12):
// "-rw-r--r--  1     0     0            6 a.txt" (mode, nlink, uid, gid,
// size, then one space and the name, which may itself contain spaces).
var nfsLsLine = regexp.MustCompile(`^\S{10}\s+\d+\s+\d+\s+\d+\s+\d+ (.*)$`)

func parseNFSLs(out []byte) ([]string, error) {
	names := []string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		m := nfsLsLine.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("unexpected nfs-ls output line %q", line)
		}
		if m[1] == "." || m[1] == ".." {
			continue
		}
		names = append(names, m[1])
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read nfs-ls output: %w", err)
	}
	return names, nil
}
