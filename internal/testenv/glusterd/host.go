// Host-level helpers: the mount table and the process table.

package glusterd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/carve-csi/carve/internal/mountinfo"
)

// glusterMounts returns the mount points of glusterfs FUSE mounts.
func glusterMounts() ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	var mounts []string
	for line := range strings.Lines(string(data)) {
		// Fields: ID parent major:minor root mountpoint opts... - fstype src superopts
		fields := strings.Fields(line)
		sep := slices.Index(fields, "-")
		if len(fields) < 5 || sep < 0 || sep+1 >= len(fields) || fields[sep+1] != "fuse.glusterfs" {
			continue
		}
		mounts = append(mounts, mountinfo.Unescape(fields[4]))
	}
	return mounts, nil
}

// waitForChildren waits until the process pid has no live children, or for
// at most timeout.
func waitForChildren(pid int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		procs, err := listProcesses()
		if err != nil {
			return
		}
		found := false
		for _, p := range procs {
			if p.ppid == pid && p.state != 'Z' {
				found = true
				break
			}
		}
		if !found {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type procInfo struct {
	pid, ppid int
	comm      string
	state     byte
}

// listProcesses reads /proc/PID/stat of all processes.
func listProcesses() ([]procInfo, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var procs []procInfo
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		// "pid (comm) state ppid ..."; comm may contain spaces and parentheses.
		s := string(stat)
		open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || closing < open {
			continue
		}
		rest := strings.Fields(s[closing+1:])
		if len(rest) < 2 || len(rest[0]) != 1 {
			continue
		}
		ppid, err := strconv.Atoi(rest[1])
		if err != nil {
			continue
		}
		procs = append(procs, procInfo{pid: pid, ppid: ppid, comm: s[open+1 : closing], state: rest[0][0]})
	}
	return procs, nil
}

// glusterProcesses returns the live (non-zombie) glusterfs and glusterfsd
// processes: bricks, self-heal and quota daemons and FUSE clients.
func glusterProcesses() (map[int]bool, error) {
	all, err := listProcesses()
	if err != nil {
		return nil, err
	}
	procs := map[int]bool{}
	for _, p := range all {
		if (p.comm == "glusterfs" || p.comm == "glusterfsd") && p.state != 'Z' {
			procs[p.pid] = true
		}
	}
	return procs, nil
}

// killNewProcesses terminates the gluster daemons that were spawned since the
// fixture started glusterd. Bricks survive glusterd, so stopping glusterd
// alone would leave them running.
func (c *Cluster) killNewProcesses() error {
	now, err := glusterProcesses()
	if err != nil {
		return err
	}
	var pids []int
	for pid := range now {
		if !c.initialProcs[pid] {
			pids = append(pids, pid)
		}
	}
	if len(pids) == 0 {
		return nil
	}
	slices.Sort(pids)
	c.logf("glusterd: terminating leftover gluster processes %v", pids)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		left, err := glusterProcesses()
		if err != nil {
			return err
		}
		var alive []int
		for _, pid := range pids {
			if left[pid] {
				alive = append(alive, pid)
			}
		}
		if len(alive) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			for _, pid := range alive {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			return fmt.Errorf("gluster processes %v ignored SIGTERM and were killed", alive)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// RunDir is where glusterd and the daemons it spawns keep pid files and
// sockets (one per brick, client and quota helper), and where it mounts its
// quota helper clients (VOL_quota_limit, VOL_quota_list).
const RunDir = "/run/gluster"

// runFiles returns the pid files and sockets directly in RunDir.
func runFiles() (map[string]bool, error) {
	entries, err := os.ReadDir(RunDir)
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("list %s: %w", RunDir, err)
	}
	files := map[string]bool{}
	for _, e := range entries {
		if n := e.Name(); !e.IsDir() && (strings.HasSuffix(n, ".pid") || strings.HasSuffix(n, ".socket")) {
			files[n] = true
		}
	}
	return files, nil
}

// removeNewRunFiles removes the pid files and sockets that the daemons of
// this run left in RunDir (hundreds accumulate over a day of test runs).
// It runs after those daemons were stopped.
func (c *Cluster) removeNewRunFiles() error {
	now, err := runFiles()
	if err != nil {
		return err
	}
	var errs []error
	for n := range now {
		if !c.initialRun[n] {
			if err := os.Remove(filepath.Join(RunDir, n)); err != nil && !os.IsNotExist(err) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// unmountStaleAux unmounts glusterd's quota helper mounts under RunDir
// while no glusterd runs: a test killed before its cleanup leaves them.
func (c *Cluster) unmountStaleAux(ctx context.Context) error {
	mounts, err := glusterMounts()
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range mounts {
		if filepath.Dir(m) == RunDir {
			c.logf("glusterd: unmounting %s, left by an earlier run", m)
			errs = append(errs, unmount(ctx, m))
		}
	}
	return errors.Join(errs...)
}
