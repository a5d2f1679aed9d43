package outbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const frame3 = frameOverhead + 3 // the frame of a 3-byte record such as "r00"

func TestFrame(t *testing.T) {
	at := time.Unix(1700000000, 123456789)
	for _, data := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte("ab"), 512)} {
		b := appendFrame([]byte("prefix"), Record{Time: at, Data: data})[len("prefix"):]
		rec, n, err := decodeFrame(append(b, "trailing"...))
		if err != nil || n != len(b) || !rec.Time.Equal(at) || !bytes.Equal(rec.Data, data) {
			t.Fatalf("decode(encode(%d bytes)) = %v, %d, %v", len(data), rec, n, err)
		}
		if cap(rec.Data) != len(rec.Data) {
			t.Errorf("Data capacity not clipped: %d > %d", cap(rec.Data), len(rec.Data))
		}
	}

	good := appendFrame(nil, Record{Time: at, Data: []byte("hello")})
	flip := func(i int) []byte { b := slices.Clone(good); b[i] ^= 0x40; return b }
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, io.EOF},
		{"short header", good[:5], io.ErrUnexpectedEOF},
		{"short payload", good[:len(good)-1], io.ErrUnexpectedEOF},
		{"length below time", append([]byte{7, 0, 0, 0}, good[4:]...), errBadLength},
		{"zeros", make([]byte, 64), errBadLength},
		{"length beyond", flip(3), io.ErrUnexpectedEOF},
		{"bad crc", flip(5), errBadChecksum},
		{"bad time", flip(10), errBadChecksum},
		{"bad data", flip(len(good) - 1), errBadChecksum},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := decodeFrame(tc.b); !errors.Is(err, tc.want) {
				t.Fatalf("decodeFrame: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		ok   bool
	}{
		{"minimal", Options{Dir: "x"}, true},
		{"full", Options{Dir: "x", SegmentBytes: 1, MaxBytes: 1}, true},
		{"no dir", Options{}, false},
		{"negative segment", Options{Dir: "x", SegmentBytes: -1}, false},
		{"negative max", Options{Dir: "x", MaxBytes: -1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.opts.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
	if _, err := Open(Options{}); err == nil {
		t.Fatal("Open without Dir succeeded")
	}
}

func TestAppendReadCommit(t *testing.T) {
	for _, tc := range []struct {
		name       string
		maxRecords int
		maxBytes   int
	}{
		{"one record a page", 1, 0},
		{"three records a page", 3, 0},
		{"seven records a page", 7, 0},
		{"byte budget below a record", 0, 1},
		{"byte budget of two and a half records", 0, frame3*2 + frame3/2},
		{"everything", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			now := clock()
			first := now().Add(time.Second) // the first record's time
			l := openLog(t, Options{Dir: dir, SegmentBytes: 3 * frame3, Now: now})
			want := names("r", 0, 20)
			appendAll(t, l, want...)
			if got := segmentFiles(t, dir); len(got) != 7 {
				t.Fatalf("segments %v, want 7 (3 records each)", got)
			}
			st := l.Stats()
			if st.PendingRecords != 20 || st.PendingBytes != 20*frame3 || st.Appends != 20 || !st.Oldest.Equal(first) {
				t.Fatalf("Stats = %+v", st)
			}

			var got []string
			from := l.Checkpoint()
			for range 100 {
				entries, err := l.Read(from, tc.maxRecords, tc.maxBytes)
				if err != nil {
					t.Fatal(err)
				}
				if len(entries) == 0 {
					break
				}
				if tc.maxRecords > 0 && len(entries) > tc.maxRecords {
					t.Fatalf("Read returned %d entries, max %d", len(entries), tc.maxRecords)
				}
				for _, e := range entries {
					got = append(got, string(e.Data))
				}
				from = entries[len(entries)-1].Next
				if err := l.Commit(from); err != nil {
					t.Fatal(err)
				}
				st := l.Stats()
				if st.PendingRecords != int64(20-len(got)) || st.PendingBytes != int64(20-len(got))*frame3 {
					t.Fatalf("after committing %d: Stats = %+v", len(got), st)
				}
				if len(got) < 20 && !st.Oldest.Equal(first.Add(time.Duration(len(got))*time.Second)) {
					t.Fatalf("after committing %d: Oldest = %v", len(got), st.Oldest)
				}
			}
			assertRecords(t, got, want)
			if st := l.Stats(); st.PendingRecords != 0 || st.PendingBytes != 0 || !st.Oldest.IsZero() {
				t.Fatalf("Stats after commit of all = %+v", st)
			}
			if got := segmentFiles(t, dir); !slices.Equal(got, []string{"00000007.seg"}) {
				t.Fatalf("segments after commit of all: %v, want only the active one", got)
			}
			// More appends continue where the relay is.
			appendAll(t, l, "r20")
			rest, _ := readAll(t, l, from, 10)
			assertRecords(t, rest, []string{"r20"})
		})
	}
}

func TestReadPositions(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, Options{Dir: dir, SegmentBytes: 2 * frame3})
	appendAll(t, l, names("r", 0, 5)...) // segments 1: r00 r01, 2: r02 r03, 3: r04

	for _, tc := range []struct {
		name    string
		from    Position
		want    []string
		wantErr bool
	}{
		{"zero position", Position{}, names("r", 0, 5), false},
		{"mid segment", Position{1, frame3}, names("r", 1, 5), false},
		{"end of a segment moves on", Position{1, 2 * frame3}, names("r", 2, 5), false},
		{"start of next segment", Position{2, 0}, names("r", 2, 5), false},
		{"end of the log", Position{3, frame3}, nil, false},
		{"beyond a segment", Position{2, 2*frame3 + 1}, nil, true},
		{"beyond the log", Position{9, 0}, nil, true},
		{"inside a record", Position{1, 5}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			entries, err := l.Read(tc.from, 0, 0)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("Read(%v) = %d entries, want an error", tc.from, len(entries))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if entries == nil {
				t.Fatal("Read returned nil, want an empty slice")
			}
			var got []string
			for _, e := range entries {
				got = append(got, string(e.Data))
			}
			assertRecords(t, got, tc.want)
		})
	}

	t.Run("record larger than maxBytes and than a segment", func(t *testing.T) {
		big := string(bytes.Repeat([]byte("x"), 3*frame3))
		appendAll(t, l, big, "r05")
		entries, err := l.Read(Position{3, frame3}, 10, 10)
		if err != nil || len(entries) != 1 || string(entries[0].Data) != big {
			t.Fatalf("Read = %d entries, %v; want the big record alone", len(entries), err)
		}
		if entries[0].Next != (Position{4, int64(frameOverhead + len(big))}) {
			t.Fatalf("big record ends at %v, want alone in segment 4", entries[0].Next)
		}
	})
}

func TestCommitPositions(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, Options{Dir: dir, SegmentBytes: 2 * frame3})
	appendAll(t, l, names("r", 0, 5)...)
	for _, tc := range []struct {
		name    string
		p       Position
		wantErr bool
		wantCP  Position
	}{
		{"inside a record", Position{1, 3}, true, Position{}},
		{"beyond the durable end", Position{3, frame3 + 1}, true, Position{}},
		{"beyond the last segment", Position{4, 0}, true, Position{}},
		{"one record", Position{1, frame3}, false, Position{1, frame3}},
		{"end of a segment normalises to the next", Position{1, 2 * frame3}, false, Position{2, 0}},
		{"older is a no-op", Position{1, frame3}, false, Position{2, 0}},
		{"same is a no-op", Position{2, 0}, false, Position{2, 0}},
		{"to the end", Position{3, frame3}, false, Position{3, frame3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := l.Commit(tc.p)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Commit(%v) = %v, want error %v", tc.p, err, tc.wantErr)
			}
			if cp := l.Checkpoint(); cp != tc.wantCP {
				t.Fatalf("Checkpoint() = %v, want %v", cp, tc.wantCP)
			}
		})
	}
	if st := l.Stats(); st.PendingRecords != 0 || st.PendingBytes != 0 {
		t.Fatalf("Stats = %+v", st)
	}
	if got := segmentFiles(t, dir); !slices.Equal(got, []string{"00000003.seg"}) {
		t.Fatalf("segments %v", got)
	}
	l.Close()
	if err := l.Commit(Position{3, frame3}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Commit after Close = %v, want ErrClosed", err)
	}
}

func TestGroupCommitSharesFsync(t *testing.T) {
	fsys := &faultFS{}
	entered, release := blockFirstSync(t, fsys)
	l := openLog(t, Options{Dir: t.TempDir(), fs: fsys})
	t.Cleanup(release)

	const n = 64
	errs := make(chan error, n)
	for i := range n {
		go func() { errs <- l.Append(context.Background(), []byte(names("r", i, i+1)[0])) }()
	}
	<-entered // the first batch is being synced
	waitFor(t, "all appends queued", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.reserved == n*frame3
	})
	release()
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	st := l.Stats()
	if st.Appends != n || st.Syncs > 2 || st.Syncs >= st.Appends {
		t.Fatalf("Stats = %+v: want %d appends in at most 2 fsyncs", st, n)
	}
	got, _ := readAll(t, l, Position{}, 0)
	slices.Sort(got)
	assertRecords(t, got, names("r", 0, n))
	select {
	case <-l.Notify():
	default:
		t.Fatal("Notify not signalled after a group commit")
	}
}

func TestConcurrentAppendAndRelay(t *testing.T) {
	l := openLog(t, Options{Dir: t.TempDir(), SegmentBytes: 1 << 10, MaxBytes: 64 << 10})
	const writers, each = 8, 100
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; {
				err := l.Append(context.Background(), []byte{byte(w), byte(i)})
				switch {
				case errors.Is(err, ErrFull):
					<-time.After(time.Millisecond) // back off, as the publish API's client would
				case err != nil:
					t.Error(err)
					return
				default:
					i++
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	next := make([]int, writers)
	from := Position{}
	total := 0
	for total < writers*each {
		entries, err := l.Read(from, 50, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) == 0 {
			select {
			case <-l.Notify():
			case <-done:
				if e, err := l.Read(from, 1, 0); err != nil || len(e) == 0 {
					t.Fatalf("writers done, relayed %d of %d records: %v", total, writers*each, err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no progress")
			}
			continue
		}
		for _, e := range entries {
			w, i := int(e.Data[0]), int(e.Data[1])
			if i != next[w]%256 {
				t.Fatalf("writer %d: record %d, want %d", w, i, next[w])
			}
			next[w]++
			total++
		}
		from = entries[len(entries)-1].Next
		if err := l.Commit(from); err != nil {
			t.Fatal(err)
		}
	}
	<-done
	if st := l.Stats(); st.PendingRecords != 0 || st.Appends != writers*each {
		t.Fatalf("Stats = %+v", st)
	}
}

func TestReopen(t *testing.T) {
	for _, tc := range []struct {
		name  string
		close bool // false: the process "crashed"; a new Log opens the same dir
	}{
		{"after Close", true},
		{"after a crash", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openLog(t, Options{Dir: dir, SegmentBytes: 3 * frame3})
			appendAll(t, l, names("r", 0, 10)...)
			entries, err := l.Read(Position{}, 4, 0)
			if err != nil {
				t.Fatal(err)
			}
			cp := entries[3].Next
			if err := l.Commit(cp); err != nil {
				t.Fatal(err)
			}
			if tc.close {
				if err := l.Close(); err != nil {
					t.Fatal(err)
				}
			} else {
				l.lock.Close() // what the kernel does when a process dies
			}

			l2 := openLog(t, Options{Dir: dir, SegmentBytes: 3 * frame3})
			if got := l2.Checkpoint(); got != cp {
				t.Fatalf("Checkpoint() = %v, want %v", got, cp)
			}
			if st := l2.Stats(); st.PendingRecords != 6 || st.PendingBytes != 6*frame3 || st.Corruptions != 0 {
				t.Fatalf("Stats = %+v", st)
			}
			got, end := readAll(t, l2, l2.Checkpoint(), 4)
			assertRecords(t, got, names("r", 4, 10))

			appendAll(t, l2, "r10")
			e, err := l2.Read(end, 1, 0)
			if err != nil || len(e) != 1 || string(e[0].Data) != "r10" {
				t.Fatalf("Read after reopen = %v, %v", e, err)
			}
			if e[0].Next.Segment != 5 {
				t.Fatalf("new record in segment %d, want a new segment 5", e[0].Next.Segment)
			}
		})
	}
}

func TestCheckpointRecovery(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cp     []byte // checkpoint file content; nil ⇒ none
		wantCP Position
		want   []string
	}{
		{"missing", nil, Position{2, 0}, names("r", 0, 4)},
		{"damaged", []byte("garbage"), Position{2, 0}, names("r", 0, 4)},
		{"before the first segment", encodeLegacyCheckpoint(Position{1, 2 * frame3}), Position{2, 0}, names("r", 0, 4)},
		{"in the first segment", encodeLegacyCheckpoint(Position{2, frame3}), Position{2, frame3}, names("r", 1, 4)},
		{"off a record boundary", encodeLegacyCheckpoint(Position{2, 5}), Position{2, 0}, names("r", 0, 4)},
		{"beyond its segment", encodeLegacyCheckpoint(Position{2, 1000}), Position{2, 0}, names("r", 0, 4)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openLog(t, Options{Dir: dir})
			appendAll(t, l, names("r", 0, 4)...)
			l.Close()
			// Segment 1 becomes 2, as if 1 had been committed and deleted.
			if err := os.Rename(filepath.Join(dir, "00000001.seg"), filepath.Join(dir, "00000002.seg")); err != nil {
				t.Fatal(err)
			}
			if tc.cp == nil {
				if err := os.Remove(filepath.Join(dir, checkpointName)); err != nil {
					t.Fatal(err)
				}
			} else if err := os.WriteFile(filepath.Join(dir, checkpointName), tc.cp, 0o644); err != nil {
				t.Fatal(err)
			}
			l2 := openLog(t, Options{Dir: dir})
			if got := l2.Checkpoint(); got != tc.wantCP {
				t.Fatalf("Checkpoint() = %v, want %v", got, tc.wantCP)
			}
			got, _ := readAll(t, l2, l2.Checkpoint(), 0)
			assertRecords(t, got, tc.want)
			if st := l2.Stats(); st.PendingRecords != int64(len(tc.want)) {
				t.Fatalf("Stats = %+v", st)
			}
		})
	}
}

func TestCommittedSegmentsDeletedOnOpen(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, Options{Dir: dir, SegmentBytes: frame3})
	appendAll(t, l, names("r", 0, 3)...)
	l.Close()
	// A crash after the checkpoint rename, before the segments were deleted.
	if err := os.WriteFile(filepath.Join(dir, checkpointName), encodeLegacyCheckpoint(Position{3, 0}), 0o644); err != nil {
		t.Fatal(err)
	}
	l2 := openLog(t, Options{Dir: dir, SegmentBytes: frame3})
	if got := segmentFiles(t, dir); !slices.Equal(got, []string{"00000003.seg"}) {
		t.Fatalf("segments %v", got)
	}
	got, _ := readAll(t, l2, l2.Checkpoint(), 0)
	assertRecords(t, got, []string{"r02"})
}

func TestErrFull(t *testing.T) {
	l := openLog(t, Options{Dir: t.TempDir(), MaxBytes: 3 * frame3})
	appendAll(t, l, names("r", 0, 3)...)
	if err := l.Append(context.Background(), []byte("r03")); !errors.Is(err, ErrFull) {
		t.Fatalf("Append beyond MaxBytes = %v, want ErrFull", err)
	}
	if err := l.Append(context.Background(), nil); !errors.Is(err, ErrFull) {
		t.Fatalf("empty Append beyond MaxBytes = %v, want ErrFull", err)
	}
	entries, err := l.Read(Position{}, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Commit(entries[1].Next); err != nil {
		t.Fatal(err)
	}
	appendAll(t, l, "r03", "r04")
	if err := l.Append(context.Background(), []byte("r05")); !errors.Is(err, ErrFull) {
		t.Fatalf("Append beyond MaxBytes = %v, want ErrFull", err)
	}
	got, _ := readAll(t, l, l.Checkpoint(), 0)
	assertRecords(t, got, names("r", 2, 5))
}

func TestAppendErrors(t *testing.T) {
	l := openLog(t, Options{Dir: t.TempDir()})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Append(ctx, []byte("x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with a cancelled ctx = %v", err)
	}
	if st := l.Stats(); st.Appends != 0 {
		t.Fatalf("cancelled Append was written: %+v", st)
	}
	appendAll(t, l, "r00")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if err := l.Append(context.Background(), []byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close = %v, want ErrClosed", err)
	}
}

func TestCloseWaitsForAppends(t *testing.T) {
	fsys := &faultFS{}
	entered, release := blockFirstSync(t, fsys)
	dir := t.TempDir()
	l := openLog(t, Options{Dir: dir, fs: fsys})
	t.Cleanup(release)
	errs := make(chan error, 2)
	go func() { errs <- l.Append(context.Background(), []byte("r00")) }()
	<-entered
	go func() { errs <- l.Append(context.Background(), []byte("r01")) }()
	waitFor(t, "second append queued", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.open.n == 1
	})
	closed := make(chan error)
	go func() { closed <- l.Close() }()
	release()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("in-flight Append = %v", err)
		}
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	l2 := openLog(t, Options{Dir: dir})
	got, _ := readAll(t, l2, Position{}, 0)
	assertRecords(t, got, names("r", 0, 2))
}

func TestDiskErrors(t *testing.T) {
	eio := syscall.EIO
	for _, tc := range []struct {
		name      string
		setup     func(f *faultFS)
		wantIs    []error
		recovered bool // later Appends work
	}{
		{
			name:      "fsync failure",
			setup:     func(f *faultFS) { f.sync = failOnce(eio) },
			wantIs:    []error{syscall.EIO},
			recovered: true,
		},
		{
			name:      "disk full on write",
			setup:     func(f *faultFS) { f.write = failOnce(syscall.ENOSPC) },
			wantIs:    []error{syscall.ENOSPC},
			recovered: true,
		},
		{
			name:      "read-only file system",
			setup:     func(f *faultFS) { f.write = failOnce(syscall.EROFS) },
			wantIs:    []error{syscall.EROFS},
			recovered: true,
		},
		{
			name: "fsync failure, then the reopen fails",
			setup: func(f *faultFS) {
				f.sync = failOnce(eio)
				f.open = func(name string, flag int) error {
					if flag&os.O_WRONLY != 0 {
						return syscall.EROFS
					}
					return nil
				}
			},
			wantIs: []error{ErrFailed, syscall.EIO, syscall.EROFS},
		},
		{
			name: "fsync failure, then the truncate fails",
			setup: func(f *faultFS) {
				f.sync = func(name string) error {
					if filepath.Ext(name) == segmentExt {
						return eio // every fsync fails, the repair's too
					}
					return nil
				}
			},
			wantIs: []error{ErrFailed, syscall.EIO},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			fsys := &faultFS{}
			l := openLog(t, Options{Dir: dir, fs: fsys})
			appendAll(t, l, "r00", "r01")
			fsys.set(tc.setup)

			err := l.Append(context.Background(), []byte("bad"))
			if err == nil {
				t.Fatal("Append succeeded despite the disk error")
			}
			mustErrorIs(t, err, tc.wantIs...)
			fsys.set(func(f *faultFS) { f.open = nil }) // Read must work

			got, _ := readAll(t, l, Position{}, 0)
			assertRecords(t, got, []string{"r00", "r01"})
			if st := l.Stats(); st.Appends != 2 || st.PendingRecords != 2 || st.PendingBytes != 2*frame3 {
				t.Fatalf("Stats = %+v", st)
			}
			if fi, err := os.Stat(filepath.Join(dir, "00000001.seg")); tc.recovered && (err != nil || fi.Size() != 2*frame3) {
				t.Fatalf("segment not cut back to its durable size: %v, %v", fi.Size(), err)
			}

			err = l.Append(context.Background(), []byte("r02"))
			if !tc.recovered {
				mustErrorIs(t, err, tc.wantIs...)
				mustErrorIs(t, l.Err(), tc.wantIs...)
				return
			}
			if err != nil {
				t.Fatalf("Append after repair = %v", err)
			}
			if l.Err() != nil {
				t.Fatalf("Err() = %v", l.Err())
			}
			l.Close()
			l2 := openLog(t, Options{Dir: dir})
			got, _ = readAll(t, l2, Position{}, 0)
			assertRecords(t, got, names("r", 0, 3))
		})
	}
}

func TestSegmentCreateError(t *testing.T) {
	dir := t.TempDir()
	fsys := &faultFS{}
	l := openLog(t, Options{Dir: dir, SegmentBytes: frame3, fs: fsys})
	appendAll(t, l, "r00")
	fsys.set(func(f *faultFS) {
		f.open = func(name string, flag int) error {
			if flag&os.O_CREATE != 0 && filepath.Ext(name) == segmentExt {
				return syscall.ENOSPC
			}
			return nil
		}
	})
	err := l.Append(context.Background(), []byte("r01"))
	mustErrorIs(t, err, syscall.ENOSPC)
	fsys.set(func(f *faultFS) { f.open = nil })
	appendAll(t, l, "r01")
	got, _ := readAll(t, l, Position{}, 0)
	assertRecords(t, got, names("r", 0, 2))
}

func TestAppendHonoursContextWhileQueueing(t *testing.T) {
	fsys := &faultFS{}
	entered, release := blockFirstSync(t, fsys)
	dir := t.TempDir()
	l := openLog(t, Options{Dir: dir, fs: fsys})
	t.Cleanup(release)
	big := bytes.Repeat([]byte("x"), 1<<20)
	errs := make(chan error, 4)
	go func() { errs <- l.Append(context.Background(), []byte("in flight")) }()
	<-entered
	for range 3 { // fill the next batch up to maxBatchBytes
		go func() { errs <- l.Append(context.Background(), big) }()
	}
	waitFor(t, "next batch filled", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.open.n == 3
	})
	ctx, cancel := context.WithCancel(context.Background())
	waiting := make(chan error)
	go func() { waiting <- l.Append(ctx, big) }()
	waitFor(t, "append waiting for room", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.open.taken != nil
	})
	cancel()
	if err := <-waiting; !errors.Is(err, context.Canceled) {
		t.Fatalf("Append while the batch is full = %v, want context.Canceled", err)
	}
	release()
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if st := l.Stats(); st.Appends != 4 {
		t.Fatalf("Stats = %+v, want the 4 queued appends only", st)
	}
}

// blockFirstSync makes the first fsync of a segment wait until release is
// called; entered
// is closed once it waits. Register release with t.Cleanup after openLog,
// so that a failing test does not hang in Close.
func blockFirstSync(t *testing.T, fsys *faultFS) (entered <-chan struct{}, release func()) {
	in := make(chan struct{})
	out := make(chan struct{})
	var once, releaseOnce sync.Once
	fsys.sync = func(name string) error {
		if filepath.Ext(name) == segmentExt {
			once.Do(func() { close(in); <-out })
		}
		return nil
	}
	release = func() { releaseOnce.Do(func() { close(out) }) }
	return in, release
}

// Lone appenders write their own batch (appendInline) while bursts go
// through the writer goroutine; a Close in the middle of both loses no
// record whose Append returned nil, and every other Append says ErrClosed.
func TestInlineAndQueuedAppendsRaceClose(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, Options{Dir: dir})
	// A burst makes the last group commit large (the writer goroutine path),
	// then lone appends make it small again (the inline path).
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 20 {
				if err := l.Append(context.Background(), fmt.Appendf(nil, "burst-%d-%d", g, i)); err != nil {
					t.Errorf("burst Append: %v", err)
				}
			}
		})
	}
	wg.Wait()
	appendAll(t, l, names("lone", 0, 5)...)

	var mu sync.Mutex
	acked := map[string]bool{}
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				rec := fmt.Sprintf("race-%d-%d", g, i)
				err := l.Append(context.Background(), []byte(rec))
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Append(%s) = %v, want nil or ErrClosed", rec, err)
					return
				}
				mu.Lock()
				acked[rec] = true
				mu.Unlock()
			}
		})
	}
	waitFor(t, "appends racing", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 20
	})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	l2 := openLog(t, Options{Dir: dir})
	got, _ := readAll(t, l2, Position{}, 0)
	have := map[string]bool{}
	for _, r := range got {
		have[r] = true
	}
	if len(got) < 8*20+5+len(acked) {
		t.Errorf("%d records after reopen, want at least %d", len(got), 8*20+5+len(acked))
	}
	for rec := range acked {
		if !have[rec] {
			t.Errorf("%s was acknowledged and is gone after Close", rec)
		}
	}
	for _, rec := range names("lone", 0, 5) {
		if !have[rec] {
			t.Errorf("%s is gone", rec)
		}
	}
}

// A Close while a lone appender is syncing its own batch waits for that
// sync: the writer goroutine does not exit under it, and the record is
// durable.
func TestCloseWaitsForInlineAppend(t *testing.T) {
	// Only the first segment sync blocks; any later one (Close's) passes.
	fsys := &faultFS{}
	in, out := make(chan struct{}), make(chan struct{})
	var syncs atomic.Int32
	fsys.sync = func(name string) error {
		if filepath.Ext(name) == segmentExt && syncs.Add(1) == 1 {
			close(in)
			<-out
		}
		return nil
	}
	entered := (<-chan struct{})(in)
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(out) }) }
	dir := t.TempDir()
	l := openLog(t, Options{Dir: dir, fs: fsys})
	t.Cleanup(release)
	appended := make(chan error, 1)
	go func() { appended <- l.Append(context.Background(), []byte("r00")) }()
	<-entered // in the appender's own sync: nothing queued for the writer goroutine
	closed := make(chan error, 1)
	go func() { closed <- l.Close() }()
	waitFor(t, "Close to begin", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.closed
	})
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while an append was syncing", err)
	case <-time.After(100 * time.Millisecond): // a negative check: Close must still wait
	}
	release()
	if err := <-appended; err != nil {
		t.Fatalf("Append = %v", err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	l2 := openLog(t, Options{Dir: dir})
	got, _ := readAll(t, l2, Position{}, 0)
	assertRecords(t, got, names("r", 0, 1))
}
