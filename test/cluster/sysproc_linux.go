package cluster

import "syscall"

// sysProcAttr puts each child in its own process group, so Stop can signal it
// and anything it spawned, and asks the kernel to SIGKILL it if the harness
// dies without calling Stop. Pdeathsig fires when the forking OS thread exits;
// Go only retires threads of goroutines that exit while locked to them, which
// the harness never does.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
