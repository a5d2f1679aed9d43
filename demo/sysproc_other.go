//go:build !linux

package main

import "syscall"

// sysProcAttr puts a child in its own process group: Ctrl-C reaches only the
// demo, which stops children in order.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
