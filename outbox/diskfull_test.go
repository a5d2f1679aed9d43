package outbox

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/ferry-sidecar/ferry/internal/tmpfstest"
)

// logBuffer collects a Logger's lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// lines returns the lines at level (e.g. "WARN") containing substr.
func (b *logBuffer) lines(level, substr string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, l := range strings.Split(b.buf.String(), "\n") {
		if strings.Contains(l, "level="+level) && strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return out
}

// TestReserveRefusesAppends: with the volume's free space under the
// reserve, appends are refused at once with an error wrapping ENOSPC,
// nothing is written, Stats.DiskFull is set, and the log says so once;
// once the space is back, appends are accepted and one line gives the
// count.
func TestReserveRefusesAppends(t *testing.T) {
	const reserve = 1 << 20
	var free atomic.Int64
	free.Store(100 << 20)
	fsys := &faultFS{free: free.Load}
	var logs logBuffer
	l := openLog(t, Options{Dir: t.TempDir(), fs: fsys, ReserveBytes: reserve, Logger: logs.logger()})
	appendAll(t, l, "r00")

	free.Store(reserve + 10) // less than a reserve after the record
	fsys.set(func(f *faultFS) { f.writes = 0 })
	const refused = 100
	for i := range refused {
		err := l.Append(context.Background(), []byte("refused"))
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("Append %d under the reserve = %v, want ENOSPC", i, err)
		}
	}
	if st := l.Stats(); !st.DiskFull || st.Refused != refused || st.Appends != 1 {
		t.Fatalf("Stats under the reserve = %+v, want DiskFull and %d refused", st, refused)
	}
	if fsys.writes != 0 {
		t.Fatalf("%d segment writes while under the reserve, want none", fsys.writes)
	}
	if w := logs.lines("WARN", "disk full"); len(w) != 1 {
		t.Fatalf("WARN lines about the full disk: %d, want 1:\n%s", len(w), strings.Join(w, "\n"))
	}

	// Just over the reserve is not enough to end it: twice the reserve is.
	free.Store(reserve + 1<<10)
	if err := l.Append(context.Background(), []byte("refused")); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Append just over the reserve while full = %v, want ENOSPC", err)
	}
	free.Store(3 * reserve)
	appendAll(t, l, "r01")
	if st := l.Stats(); st.DiskFull || st.Refused != refused+1 {
		t.Fatalf("Stats after the space came back = %+v", st)
	}
	info := logs.lines("INFO", "disk error over")
	if len(info) != 1 || !strings.Contains(info[0], "refused=101") {
		t.Fatalf("INFO lines at the end: %q, want one with refused=101", info)
	}
	got, _ := readAll(t, l, Position{}, 0)
	assertRecords(t, got, []string{"r00", "r01"})
}

// TestDiskErrorLoggedOncePerEpisode: a kernel ENOSPC on every write (the
// statfs reserve not in the way) gives one WARN, whatever the number of
// failed appends, and one INFO with their count once a write succeeds.
func TestDiskErrorLoggedOncePerEpisode(t *testing.T) {
	fsys := &faultFS{}
	var logs logBuffer
	dir := privateTempDir(t)
	l := openLog(t, Options{Dir: dir, fs: fsys, Logger: logs.logger()})
	appendAll(t, l, "r00")
	fsys.set(func(f *faultFS) {
		f.write = func(name string) error {
			if filepath.Ext(name) == segmentExt {
				return syscall.ENOSPC
			}
			return nil
		}
	})
	for range 50 {
		if err := l.Append(context.Background(), []byte("bad")); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("Append = %v, want ENOSPC", err)
		}
	}
	if !l.Stats().DiskFull {
		t.Fatal("Stats.DiskFull false after ENOSPC")
	}
	fsys.set(func(f *faultFS) { f.write = nil })
	appendAll(t, l, "r01")
	warn, info := logs.lines("WARN", ""), logs.lines("INFO", "disk error over")
	if len(warn) != 1 || len(info) != 1 || !strings.Contains(info[0], "refused=50") {
		t.Fatalf("logs: WARN %q, INFO %q; want one of each, the INFO with refused=50", warn, info)
	}
	if st := l.Stats(); st.DiskFull || st.Refused != 50 {
		t.Fatalf("Stats = %+v", st)
	}
	if fi, err := os.Stat(filepath.Join(dir, "00000001.seg")); err != nil || fi.Size() != 2*frame3 {
		t.Fatalf("segment after the episode: %v, %v; want the two records only", fi, err)
	}
}

// TestRelayedActiveSegmentRetired: once everything in the active segment
// is committed, the segment is deleted if it holds retireBytes or the
// volume is short of space; the next append starts a new segment, and a
// reopen finds the log consistent.
func TestRelayedActiveSegmentRetired(t *testing.T) {
	t.Run("volume short of space", func(t *testing.T) {
		const reserve = 1 << 20
		var free atomic.Int64
		free.Store(100 << 20)
		fsys := &faultFS{free: free.Load}
		dir := t.TempDir()
		l := openLog(t, Options{Dir: dir, fs: fsys, ReserveBytes: reserve})
		appendAll(t, l, names("r", 0, 3)...)
		_, end := readAll(t, l, Position{}, 0)
		if err := l.Commit(end); err != nil {
			t.Fatal(err)
		}
		if got := segmentFiles(t, dir); len(got) != 1 {
			t.Fatalf("small relayed segment with room to spare: segments %v, want it kept", got)
		}
		appendAll(t, l, "r03")
		free.Store(3 * reserve) // under four reserves
		_, end = readAll(t, l, end, 0)
		if err := l.Commit(end); err != nil {
			t.Fatal(err)
		}
		if got := segmentFiles(t, dir); len(got) != 0 {
			t.Fatalf("relayed segment on a volume short of space: segments %v, want none", got)
		}
		checkAfterRetire(t, l, dir, end, Options{Dir: dir, ReserveBytes: reserve})
	})
	t.Run("a segment of retireBytes", func(t *testing.T) {
		dir := t.TempDir()
		l := openLog(t, Options{Dir: dir})
		big := bytes.Repeat([]byte("x"), retireBytes/4)
		for range 4 {
			if err := l.Append(context.Background(), big); err != nil {
				t.Fatal(err)
			}
		}
		entries, err := l.Read(Position{}, 0, 8<<20)
		if err != nil || len(entries) != 4 {
			t.Fatalf("Read = %d entries, %v", len(entries), err)
		}
		end := entries[3].Next
		if err := l.Commit(end); err != nil {
			t.Fatal(err)
		}
		if got := segmentFiles(t, dir); len(got) != 0 {
			t.Fatalf("relayed segment of %d bytes: segments %v, want none", end.Offset, got)
		}
		checkAfterRetire(t, l, dir, end, Options{Dir: dir})
	})
}

// checkAfterRetire checks a log whose only segment was retired at end.
func checkAfterRetire(t *testing.T, l *Log, dir string, end Position, reopen Options) {
	t.Helper()
	if st := l.Stats(); st.PendingRecords != 0 || st.PendingBytes != 0 {
		t.Fatalf("Stats after retiring = %+v", st)
	}
	if e, err := l.Read(end, 0, 0); err != nil || len(e) != 0 {
		t.Fatalf("Read from the retired end = %v, %v; want nothing", e, err)
	}
	if err := l.Commit(end); err != nil {
		t.Fatalf("Commit of the retired end again = %v", err)
	}
	appendAll(t, l, "n00", "n01")
	got, next := readAll(t, l, end, 0)
	assertRecords(t, got, []string{"n00", "n01"})
	if next.Segment != end.Segment+1 {
		t.Fatalf("new records in segment %d, want %d", next.Segment, end.Segment+1)
	}
	l.Close()
	l2 := openLog(t, reopen)
	got, _ = readAll(t, l2, l2.Checkpoint(), 0)
	assertRecords(t, got, []string{"n00", "n01"})
}

// TestCommitWithoutCheckpointReleasesWholeSegments: when the checkpoint
// file cannot be made (a volume left full by an earlier version), Commit
// fails but still deletes the segments relayed whole, and a reopen starts
// at the oldest segment left: nothing relayed twice beyond it, nothing
// skipped.
func TestCommitWithoutCheckpointReleasesWholeSegments(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, Options{Dir: dir, SegmentBytes: 2 * frame3})
	appendAll(t, l, names("r", 0, 5)...) // segments 1: r00 r01, 2: r02 r03, 3: r04
	l.Close()
	if err := os.Remove(filepath.Join(dir, checkpointName)); err != nil {
		t.Fatal(err)
	}
	fsys := &faultFS{open: func(name string, flag int) error {
		if name == checkpointName && flag&os.O_CREATE != 0 {
			return syscall.ENOSPC
		}
		return nil
	}}
	l2 := openLog(t, Options{Dir: dir, SegmentBytes: 2 * frame3, fs: fsys})
	entries, err := l2.Read(Position{}, 3, 0) // r00 r01 r02
	if err != nil {
		t.Fatal(err)
	}
	err = l2.Commit(entries[2].Next)
	mustErrorIs(t, err, syscall.ENOSPC)
	if got := segmentFiles(t, dir); !slices.Equal(got, []string{"00000002.seg", "00000003.seg"}) {
		t.Fatalf("segments after a commit without checkpoint: %v", got)
	}
	if st := l2.Stats(); st.PendingRecords != 3 {
		t.Fatalf("Stats = %+v, want the 3 records of the segments left", st)
	}
	l2.Close()
	l3 := openLog(t, Options{Dir: dir, SegmentBytes: 2 * frame3})
	got, _ := readAll(t, l3, l3.Checkpoint(), 0)
	assertRecords(t, got, names("r", 2, 5))
	// With room again, the checkpoint file is made and commits work.
	_, end := readAll(t, l3, l3.Checkpoint(), 0)
	if err := l3.Commit(end); err != nil {
		t.Fatal(err)
	}
}

// TestMaxBytesOverVolumeWarns: MaxBytes beyond what the volume holds is
// logged at Open.
func TestMaxBytesOverVolumeWarns(t *testing.T) {
	var logs logBuffer
	dir := t.TempDir()
	total, _, err := osFS{}.Statfs(dir)
	if err != nil {
		t.Skipf("statfs not available: %v", err)
	}
	openLog(t, Options{Dir: dir, MaxBytes: total + 1, Logger: logs.logger()})
	if w := logs.lines("WARN", "more than its volume can hold"); len(w) != 1 {
		t.Fatalf("WARN lines: %q, want one", w)
	}
	var quiet logBuffer
	openLog(t, Options{Dir: privateTempDir(t), MaxBytes: 1 << 20, Logger: quiet.logger()})
	if w := quiet.lines("WARN", ""); len(w) != 0 {
		t.Fatalf("WARN lines with MaxBytes within the volume: %q", w)
	}
}

// fillTmpfs appends records of size bytes until the outbox refuses one; it
// returns how many were accepted and the refusal.
func fillTmpfs(t *testing.T, l *Log, size int) (int, error) {
	t.Helper()
	data := bytes.Repeat([]byte("x"), size)
	for n := range 100000 {
		if err := l.Append(context.Background(), data); err != nil {
			return n, err
		}
	}
	t.Fatal("the volume never filled")
	return 0, nil
}

// TestFullTmpfsHeals, on a real 4 MiB tmpfs (the kernel's ENOSPC): fill it
// until an append is refused with ENOSPC; commit everything; the space
// comes back and appends are accepted, without a reopen. Then fill it
// again, "crash", reopen on the full volume, and heal the same way.
func TestFullTmpfsHeals(t *testing.T) {
	const volume = 4 << 20
	dir := tmpfstest.Mount(t, volume)
	var logs logBuffer
	opts := Options{Dir: dir, Logger: logs.logger()}
	l := openLog(t, opts)
	heal := func(l *Log, phase string) {
		t.Helper()
		if err := l.Append(context.Background(), make([]byte, 1000)); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("%s: Append on the full volume = %v, want ENOSPC", phase, err)
		}
		if !l.Stats().DiskFull {
			t.Fatalf("%s: Stats.DiskFull false on a full volume", phase)
		}
		_, end := readAll(t, l, l.Checkpoint(), 1000)
		if err := l.Commit(end); err != nil {
			t.Fatalf("%s: Commit on the full volume: %v", phase, err)
		}
		u := tmpfstest.Stat(t, dir)
		if u.Used > 64<<10 {
			t.Fatalf("%s: %d bytes used after everything was committed, want near zero", phase, u.Used)
		}
		if st := l.Stats(); st.DiskFull || st.PendingRecords != 0 {
			t.Fatalf("%s: Stats after the commit = %+v", phase, st)
		}
		appendAll(t, l, phase+" again")
		got, _ := readAll(t, l, end, 0)
		assertRecords(t, got, []string{phase + " again"})
	}

	n, err := fillTmpfs(t, l, 1000)
	mustErrorIs(t, err, syscall.ENOSPC)
	t.Logf("%d records of 1000 bytes accepted on a %d-byte volume, then %v", n, volume, err)
	heal(l, "without reopen")

	n, err = fillTmpfs(t, l, 1000)
	mustErrorIs(t, err, syscall.ENOSPC)
	crash(l)
	l2 := openLog(t, opts)
	if st := l2.Stats(); st.PendingRecords != int64(n)+1 {
		t.Fatalf("reopened on the full volume: Stats %+v, want %d pending", st, n+1)
	}
	heal(l2, "after reopen")
	if w := logs.lines("WARN", ""); len(w) > 3 {
		t.Fatalf("%d WARN lines for two episodes and a reopen, want at most 3:\n%s", len(w), strings.Join(w, "\n"))
	}
}

// TestFullTmpfsLeftByOlderVersion, on a real tmpfs: a volume filled by a
// version that had written no checkpoint yet, and so full that not even
// the checkpoint file can be made. Open succeeds; the first commit
// releases the relayed segments whole, then makes the checkpoint file.
func TestFullTmpfsLeftByOlderVersion(t *testing.T) {
	dir := tmpfstest.Mount(t, 4<<20)
	opts := Options{Dir: dir, SegmentBytes: 1 << 20}
	l := openLog(t, opts)
	n, err := fillTmpfs(t, l, 1000)
	mustErrorIs(t, err, syscall.ENOSPC)
	l.Close()
	if err := os.Remove(filepath.Join(dir, checkpointName)); err != nil {
		t.Fatal(err)
	}
	// Take the rest of the space, as other files on the volume would.
	fill, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := fill.Write(make([]byte, 4096)); err != nil {
			break
		}
	}
	fill.Close()
	if u := tmpfstest.Stat(t, dir); u.Free != 0 {
		t.Fatalf("volume not full: %+v", u)
	}

	l2 := openLog(t, opts)
	if st := l2.Stats(); st.PendingRecords != int64(n) || !st.DiskFull {
		t.Fatalf("Stats at Open on the full volume = %+v, want %d pending and DiskFull", st, n)
	}
	_, end := readAll(t, l2, l2.Checkpoint(), 1000)
	if err := l2.Commit(end); err != nil {
		t.Fatalf("Commit = %v, want the checkpoint made once the segments were released", err)
	}
	if got := segmentFiles(t, dir); len(got) != 0 {
		t.Fatalf("segments after everything was committed: %v", got)
	}
	if b := readCheckpointBytes(t, dir); len(b) != cpFileSize {
		t.Fatalf("checkpoint file %d bytes, want %d", len(b), cpFileSize)
	}
	if err := os.Remove(filepath.Join(dir, "filler")); err != nil {
		t.Fatal(err)
	}
	appendAll(t, l2, "after")
	if st := l2.Stats(); st.DiskFull || st.PendingRecords != 1 {
		t.Fatalf("Stats after = %+v", st)
	}
}

// crash leaves l as a killed process would: its descriptors closed by the
// kernel (so that deleted files free their space), nothing synced or
// flushed by Close.
func crash(l *Log) {
	l.wmu.Lock()
	if l.w.f != nil {
		l.w.f.Close()
		l.w.f = nil
	}
	l.wmu.Unlock()
	l.commitMu.Lock()
	if l.cpf != nil {
		l.cpf.Close()
		l.cpf = nil
	}
	l.commitMu.Unlock()
	l.lock.Close()
}

// privateTempDir is a temp dir with the outbox's own mode (0700), so that
// tests counting warnings see no permission warning.
func privateTempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}
