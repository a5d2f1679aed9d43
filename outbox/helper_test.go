package outbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// faultFS is the real file system with injectable failures. A hook returns a
// non-nil error to fail the operation on the named file (a base name).
type faultFS struct {
	osFS
	mu    sync.Mutex
	open  func(name string, flag int) error
	write func(name string) error
	sync  func(name string) error
	// free, when set, replaces the free space Statfs reports.
	free   func() int64
	syncs  int // Sync calls on segment files
	writes int // WriteAt calls on segment files
}

func (f *faultFS) hooks() (open func(string, int) error, write, sync func(string) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.open, f.write, f.sync
}

func (f *faultFS) set(fn func(f *faultFS)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *faultFS) OpenFile(name string, flag int, perm os.FileMode) (file, error) {
	if open, _, _ := f.hooks(); open != nil {
		if err := open(filepath.Base(name), flag); err != nil {
			return nil, &os.PathError{Op: "open", Path: name, Err: err}
		}
	}
	of, err := f.osFS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &faultFile{file: of, fs: f, name: filepath.Base(name)}, nil
}

func (f *faultFS) Statfs(path string) (total, free int64, err error) {
	total, free, err = f.osFS.Statfs(path)
	f.mu.Lock()
	fn := f.free
	f.mu.Unlock()
	if fn != nil {
		free = fn()
	}
	return total, free, err
}

type faultFile struct {
	file
	fs   *faultFS
	name string
}

func (f *faultFile) WriteAt(b []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	if strings.HasSuffix(f.name, segmentExt) {
		f.fs.writes++
	}
	f.fs.mu.Unlock()
	if _, write, _ := f.fs.hooks(); write != nil {
		if err := write(f.name); err != nil {
			// A short write, as a full disk gives.
			n, _ := f.file.WriteAt(b[:len(b)/2], off)
			return n, &os.PathError{Op: "write", Path: f.name, Err: err}
		}
	}
	return f.file.WriteAt(b, off)
}

func (f *faultFile) Sync() error {
	f.fs.mu.Lock()
	if strings.HasSuffix(f.name, segmentExt) {
		f.fs.syncs++
	}
	f.fs.mu.Unlock()
	if _, _, sync := f.fs.hooks(); sync != nil {
		if err := sync(f.name); err != nil {
			return &os.PathError{Op: "sync", Path: f.name, Err: err}
		}
	}
	return f.file.Sync()
}

// failOnce returns a hook failing the first call on a segment file with err.
func failOnce(err error) func(string) error {
	var once sync.Once
	return func(name string) error {
		if !strings.HasSuffix(name, segmentExt) {
			return nil
		}
		var fail error
		once.Do(func() { fail = err })
		return fail
	}
}

func openLog(t testing.TB, opts Options) *Log {
	t.Helper()
	l, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func appendAll(t testing.TB, l *Log, data ...string) {
	t.Helper()
	for _, d := range data {
		if err := l.Append(context.Background(), []byte(d)); err != nil {
			t.Fatalf("Append(%q): %v", d, err)
		}
	}
}

func names(prefix string, from, to int) []string {
	var s []string
	for i := from; i < to; i++ {
		s = append(s, fmt.Sprintf("%s%02d", prefix, i))
	}
	return s
}

// readAll reads every durable record after from, in pages of n.
func readAll(t testing.TB, l *Log, from Position, n int) ([]string, Position) {
	t.Helper()
	var got []string
	for range 100000 {
		entries, err := l.Read(from, n, 0)
		if err != nil {
			t.Fatalf("Read(%v): %v", from, err)
		}
		if len(entries) == 0 {
			return got, from
		}
		for _, e := range entries {
			got = append(got, string(e.Data))
		}
		from = entries[len(entries)-1].Next
	}
	t.Fatal("readAll: too many pages")
	return nil, from
}

func assertRecords(t testing.TB, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("records:\n got %q\nwant %q", got, want)
	}
}

func segmentFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	return m
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// clock is a Now that advances one second per call.
func clock() func() time.Time {
	var mu sync.Mutex
	t := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t = t.Add(time.Second)
		return t
	}
}

func mustErrorIs(t testing.TB, err error, targets ...error) {
	t.Helper()
	for _, target := range targets {
		if !errors.Is(err, target) {
			t.Fatalf("error %v: want errors.Is %v", err, target)
		}
	}
}
