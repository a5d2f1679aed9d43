//go:build !linux

package tmpfstest

import "errors"

var errNotLinux = errors.New("tmpfs mounts are only done on Linux")

func mount(string, int64) error  { return errNotLinux }
func unmount(string) error       { return errNotLinux }
func stat(string) (Usage, error) { return Usage{}, errNotLinux }
