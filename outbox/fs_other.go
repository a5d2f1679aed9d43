//go:build !linux

package outbox

import "syscall"

// statfs is not implemented off Linux: the free-space reserve is not
// enforced there, and a full disk is met as ENOSPC only.
func statfs(string) (total, free int64, err error) { return 0, 0, errStatfs }

func fdatasync(fd uintptr) error { return syscall.Fsync(int(fd)) }
