package main

import "syscall"

// sysProcAttr puts a child in its own process group (Ctrl-C reaches only the
// demo, which stops children in order) and has the kernel send it SIGTERM if
// the demo itself dies without cleaning up.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
