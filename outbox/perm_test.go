package outbox

import (
	"bytes"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// noUmask clears the process umask for the test, so that the modes seen are
// the ones the outbox asked for and not narrowed by the environment.
func noUmask(t *testing.T) {
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })
}

// assertPrivate fails unless dir is 0700 and every file in it 0600.
func assertPrivate(t *testing.T, dir string) (files int) {
	t.Helper()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("outbox directory mode %#o, want 0700", perm)
	}
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		files++
		if perm := info.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s mode %#o, want 0600", d.Name(), perm)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestFreshOutboxIsPrivate: a new outbox directory is 0700 and its
// segments, checkpoint and LOCK are 0600 (they hold message bodies), even
// with a umask of 0; so is a segment rewritten by a quarantine.
func TestFreshOutboxIsPrivate(t *testing.T) {
	noUmask(t)
	dir := filepath.Join(t.TempDir(), "outbox")
	l := openLog(t, Options{Dir: dir, SegmentBytes: 4 * frame3})
	appendAll(t, l, names("r", 0, 12)...)
	entries, err := l.Read(Position{}, 5, 0)
	if err != nil || len(entries) != 5 {
		t.Fatalf("Read: %d entries, %v", len(entries), err)
	}
	if err := l.Commit(entries[len(entries)-1].Next); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"LOCK", checkpointName, segmentName(2), segmentName(3)} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if n := assertPrivate(t, dir); n < 4 {
		t.Errorf("%d files checked, want the LOCK, the checkpoint and segments", n)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	// A corrupt middle segment: the repaired copy is written anew.
	editFile(t, filepath.Join(dir, segmentName(2)), func(b []byte) []byte { b[frame3+frameOverhead] ^= 0xff; return b })
	l = openLog(t, Options{Dir: dir})
	if st := l.Stats(); st.Corruptions != 1 {
		t.Fatalf("Stats after the corruption = %+v, want one quarantine", st)
	}
	assertPrivate(t, dir)
}

// TestOpenWarnsAboutAWideDirectory: an existing directory that others can
// read gets a warning naming it and its mode; the outbox still opens and
// the mode is left as the operator set it. A private one gets no warning.
func TestOpenWarnsAboutAWideDirectory(t *testing.T) {
	noUmask(t)
	for _, tc := range []struct {
		mode os.FileMode
		warn bool
	}{
		{0o755, true},
		{0o770, true},
		{0o701, true},
		{0o700, false},
	} {
		dir := filepath.Join(t.TempDir(), "outbox")
		if err := os.Mkdir(dir, tc.mode); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
		l := openLog(t, Options{Dir: dir, Logger: log})
		appendAll(t, l, "r")
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		out := buf.String()
		warned := strings.Contains(out, "level=WARN") && strings.Contains(out, "outbox directory is open to other users")
		if warned != tc.warn {
			t.Errorf("directory %#o: warned %v, want %v; log:\n%s", tc.mode, warned, tc.warn, out)
		}
		if tc.warn && (!strings.Contains(out, "dir="+dir) || !strings.Contains(out, fmt.Sprintf("mode=%#o", tc.mode))) {
			t.Errorf("warning does not name the directory and its mode %#o:\n%s", tc.mode, out)
		}
		if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != tc.mode {
			t.Errorf("directory mode changed to %v, want %#o left alone", fi.Mode().Perm(), tc.mode)
		}
	}
}
