package outbox

import (
	"io"
	"os"
)

// fileSystem is the slice of the os package the Log uses, so tests can inject
// write, fsync and open failures (ENOSPC, EROFS, EIO) without root tricks.
type fileSystem interface {
	OpenFile(name string, flag int, perm os.FileMode) (file, error)
	Remove(name string) error
	Rename(oldpath, newpath string) error
	ReadDir(name string) ([]os.DirEntry, error)
	MkdirAll(path string, perm os.FileMode) error
	Stat(name string) (os.FileInfo, error)
	// Statfs reports the size of the file system holding path and the
	// bytes an unprivileged writer may still use; errStatfs where unknown.
	Statfs(path string) (total, free int64, err error)
}

// file is the slice of *os.File the Log uses.
type file interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Truncate(size int64) error
	Stat() (os.FileInfo, error)
	Close() error
}

// osFS is the real file system.
type osFS struct{}

func (osFS) OpenFile(name string, flag int, perm os.FileMode) (file, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err // not a typed nil in an interface
	}
	return f, nil
}

func (osFS) Remove(name string) error                     { return os.Remove(name) }
func (osFS) Rename(oldpath, newpath string) error         { return os.Rename(oldpath, newpath) }
func (osFS) ReadDir(name string) ([]os.DirEntry, error)   { return os.ReadDir(name) }
func (osFS) MkdirAll(path string, perm os.FileMode) error { return os.MkdirAll(path, perm) }
func (osFS) Stat(name string) (os.FileInfo, error)        { return os.Stat(name) }
func (osFS) Statfs(path string) (total, free int64, err error) {
	return statfs(path)
}

// datasync makes the data written to f durable, without the metadata that
// reading it back does not need (fdatasync where the platform has it).
func datasync(f file) error {
	if fd, ok := f.(interface{ Fd() uintptr }); ok {
		return fdatasync(fd.Fd())
	}
	return f.Sync()
}

// syncDir fsyncs a directory so that entries created, renamed or removed in
// it survive a crash.
func syncDir(fsys fileSystem, dir string) error {
	d, err := fsys.OpenFile(dir, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return err
	}
	return d.Close()
}
