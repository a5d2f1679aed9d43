package tmpfstest

import (
	"errors"
	"strconv"
	"syscall"
)

func mount(dir string, size int64) error {
	return syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size="+strconv.FormatInt(size, 10)+",mode=0700")
}

func unmount(dir string) error {
	err := syscall.Unmount(dir, 0)
	if errors.Is(err, syscall.EBUSY) {
		// A process of the test still holds a file: detach now, freed
		// when it lets go.
		err = syscall.Unmount(dir, syscall.MNT_DETACH)
	}
	return err
}

func stat(dir string) (Usage, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return Usage{}, err
	}
	bs := st.Bsize
	return Usage{Total: int64(st.Blocks) * bs, Used: int64(st.Blocks-st.Bfree) * bs, Free: int64(st.Bavail) * bs}, nil
}
