package tmpfstest

import (
	"fmt"
	"os"
	"testing"
)

// RequireEnv is the variable that turns a skip for want of a tmpfs into a
// failure.
const RequireEnv = "FERRY_REQUIRE_TMPFS"

// Mount mounts a tmpfs of size bytes on a new temporary directory, returns
// the directory and unmounts it when the test ends. Register it before
// anything that keeps files open on it (Cleanup runs last-in, first-out).
func Mount(t testing.TB, size int64) string {
	t.Helper()
	dir := t.TempDir()
	if err := mount(dir, size); err != nil {
		msg := fmt.Sprintf("cannot mount a %d-byte tmpfs on %s (needs root or CAP_SYS_ADMIN on Linux): %v", size, dir, err)
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("%s; %s=1 makes this a failure", msg, RequireEnv)
		}
		t.Skipf("%s; set %s=1 to make this a failure", msg, RequireEnv)
	}
	t.Cleanup(func() {
		if err := unmount(dir); err != nil {
			t.Errorf("unmount tmpfs %s: %v", dir, err)
		}
	})
	return dir
}

// Usage is the space of the file system holding dir: its total size, what
// is used and what is free for an unprivileged writer.
type Usage struct {
	Total, Used, Free int64
}

// Stat returns the Usage of the file system holding dir.
func Stat(t testing.TB, dir string) Usage {
	t.Helper()
	u, err := stat(dir)
	if err != nil {
		t.Fatalf("statfs %s: %v", dir, err)
	}
	return u
}
