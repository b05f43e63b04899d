//go:build !linux

package local

import "syscall"

// sysProcAttr puts each server in its own process group so Stop ends its children too.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
