package local

import "syscall"

// sysProcAttr puts each server in its own process group (so Stop ends its children too)
// and asks the kernel to kill it if the process that started it dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
