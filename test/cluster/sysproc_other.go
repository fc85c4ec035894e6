//go:build !linux

package cluster

import "syscall"

// sysProcAttr puts each child in its own process group. Outside Linux there is
// no parent-death signal, so children outlive a harness that is SIGKILLed.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
