package outbox

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
)

func batchOf(n, size int, prefix string) [][]byte {
	recs := make([][]byte, n)
	for i := range recs {
		b := make([]byte, size)
		copy(b, fmt.Sprintf("%s%03d", prefix, i))
		recs[i] = b
	}
	return recs
}

func TestAppendBatchOneSync(t *testing.T) {
	l := openLog(t, Options{Dir: t.TempDir()})
	appendAll(t, l, "before")
	syncs := l.Stats().Syncs
	recs := batchOf(100, 1024, "r")
	if err := l.AppendBatch(context.Background(), recs); err != nil {
		t.Fatalf("AppendBatch: %v", err)
	}
	if d := l.Stats().Syncs - syncs; d != 1 {
		t.Fatalf("syncs for one batch of 100: %d, want 1", d)
	}
	got, err := l.Read(l.Checkpoint(), 1000, 1<<30)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if len(got) != 101 || string(got[0].Data) != "before" {
		t.Fatalf("read %d records", len(got))
	}
	for i, e := range got[1:] {
		if string(e.Data[:4]) != fmt.Sprintf("r%03d", i) || len(e.Data) != 1024 {
			t.Fatalf("record %d: %q…", i, e.Data[:4])
		}
	}
	if err := l.AppendBatch(context.Background(), nil); err != nil {
		t.Fatalf("empty batch: %v", err)
	}
}

// A batch that does not fit in what is left of the active segment goes
// whole into the next one.
func TestAppendBatchNotSplitAcrossSegments(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, Options{Dir: dir, SegmentBytes: 4096})
	appendAll(t, l, string(make([]byte, 3000)))
	syncs := l.Stats().Syncs
	if err := l.AppendBatch(context.Background(), batchOf(3, 500, "b")); err != nil {
		t.Fatalf("AppendBatch: %v", err)
	}
	if d := l.Stats().Syncs - syncs; d != 1 {
		t.Fatalf("syncs: %d, want 1 (the batch must not be split)", d)
	}
	got, err := l.Read(l.Checkpoint(), 100, 1<<20)
	if err != nil || len(got) != 4 {
		t.Fatalf("Read: %d records, %v", len(got), err)
	}
	if got[1].Next.Segment != got[3].Next.Segment || got[0].Next.Segment == got[1].Next.Segment {
		t.Fatalf("segments: %v %v %v %v", got[0].Next, got[1].Next, got[2].Next, got[3].Next)
	}
}

func TestAppendBatchRefusals(t *testing.T) {
	l := openLog(t, Options{Dir: t.TempDir(), SegmentBytes: 4096, MaxBytes: 3000})
	if err := l.AppendBatch(context.Background(), batchOf(10, 500, "x")); !errors.Is(err, ErrBatchTooLarge) {
		t.Fatalf("batch over a segment: %v, want ErrBatchTooLarge", err)
	}
	if err := l.AppendBatch(context.Background(), batchOf(6, 500, "x")); !errors.Is(err, ErrFull) {
		t.Fatalf("batch over MaxBytes: %v, want ErrFull", err)
	}
	if st := l.Stats(); st.PendingRecords != 0 {
		t.Fatalf("a refused batch left %d records", st.PendingRecords)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.AppendBatch(ctx, batchOf(1, 10, "c")); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	l.Close()
	if err := l.AppendBatch(context.Background(), batchOf(1, 10, "c")); !errors.Is(err, ErrClosed) {
		t.Fatalf("closed: %v", err)
	}
}

// A failed fsync refuses the whole batch and leaves none of it readable.
func TestAppendBatchSyncFailure(t *testing.T) {
	fsys := &faultFS{}
	l := openLog(t, Options{Dir: t.TempDir(), fs: fsys})
	appendAll(t, l, "r00", "r01")
	fsys.set(func(f *faultFS) { f.sync = failOnce(syscall.EIO) })
	err := l.AppendBatch(context.Background(), [][]byte{[]byte("b0"), []byte("b1"), []byte("b2")})
	mustErrorIs(t, err, syscall.EIO)
	got, _ := readAll(t, l, Position{}, 0)
	assertRecords(t, got, []string{"r00", "r01"})
	if err := l.AppendBatch(context.Background(), [][]byte{[]byte("r02"), []byte("r03")}); err != nil {
		t.Fatalf("AppendBatch after repair: %v", err)
	}
	got, _ = readAll(t, l, Position{}, 0)
	assertRecords(t, got, []string{"r00", "r01", "r02", "r03"})
}
