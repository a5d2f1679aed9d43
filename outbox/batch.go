package outbox

import (
	"context"
	"errors"
	"fmt"
)

// ErrBatchTooLarge is returned by AppendBatch for records that cannot be
// written together: more framed bytes than one segment (or one group
// commit) holds.
var ErrBatchTooLarge = errors.New("batch larger than one outbox segment")

// AppendBatch appends records as one unit: they go into the same group
// commit, contiguously and into one segment, so that one write and one
// fsync make them durable together (more appends arriving at the same time
// may share it). It returns nil only once every record is fsync'd; on an
// error none was acknowledged, and a write that failed part-way is
// truncated by the repair (a crash during the fsync can still leave a
// prefix of the batch durable, as it can any unacknowledged append). The
// errors are Append's, and ErrBatchTooLarge. An empty batch is a no-op.
func (l *Log) AppendBatch(ctx context.Context, records [][]byte) error {
	if len(records) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("append batch: %w", err)
	}
	var size int64
	for _, r := range records {
		if len(r) > maxDataSize {
			return fmt.Errorf("append batch: %w", ErrTooLarge)
		}
		size += int64(frameOverhead + len(r))
	}
	if size > l.opts.SegmentBytes || size > maxBatchBytes {
		return fmt.Errorf("append batch: %w", ErrBatchTooLarge)
	}
	if l.diskFull() {
		if err := l.checkSpace(size); err != nil {
			l.refuse(len(records), err)
			return fmt.Errorf("append batch: %w", err)
		}
	}
	ns := l.now().UnixNano()
	crcs := make([]uint32, len(records))
	for i, r := range records {
		crcs[i] = payloadCRC(ns, r)
	}
	b, first, err := l.enqueueBatch(ctx, records, ns, crcs, size)
	if err != nil {
		return fmt.Errorf("append batch: %w", err)
	}
	select {
	case l.kick <- struct{}{}:
	default:
	}
	<-b.done
	if first+len(records) <= b.durable {
		return nil
	}
	if b.err == nil { // cannot happen: a short batch carries its error
		return errors.New("append batch: not all records durable")
	}
	return fmt.Errorf("append batch: %w", b.err)
}

// enqueueBatch adds the frames of records to the open batch in one
// critical section and marks them as one span the writer keeps in one
// segment. first is the index of the first of them in the batch.
func (l *Log) enqueueBatch(ctx context.Context, records [][]byte, ns int64, crcs []uint32, size int64) (*batch, int, error) {
	for {
		l.mu.Lock()
		switch {
		case l.closed:
			l.mu.Unlock()
			return nil, 0, ErrClosed
		case l.failed != nil:
			err := l.failed
			l.mu.Unlock()
			return nil, 0, err
		case l.opts.MaxBytes > 0 && l.stats.PendingBytes+l.reserved+size > l.opts.MaxBytes:
			l.mu.Unlock()
			return nil, 0, ErrFull
		}
		b := l.open
		if len(b.buf) > 0 && int64(len(b.buf))+size > maxBatchBytes {
			if b.taken == nil {
				b.taken = make(chan struct{})
			}
			taken := b.taken
			l.mu.Unlock()
			select {
			case <-taken:
				continue
			case <-ctx.Done():
				return nil, 0, ctx.Err()
			}
		}
		start := len(b.buf)
		for i, r := range records {
			b.buf = appendFrameCRC(b.buf, ns, r, crcs[i])
		}
		b.keep = append(b.keep, span{start, len(b.buf)})
		first := b.n
		b.n += len(records)
		l.reserved += size
		l.mu.Unlock()
		return b, first, nil
	}
}

// span is a byte range of a batch's buf that must not be split between
// segments (an AppendBatch).
type span struct{ start, end int }

// splitAt returns where a chunk that would end at off must end instead so
// that no span is cut: the start of the span off falls inside, or off.
func splitAt(keep []span, off int) int {
	for _, s := range keep {
		if s.start < off && off < s.end {
			return s.start
		}
	}
	return off
}

// countFrames counts the frames in buf, which holds whole frames.
func countFrames(buf []byte) int {
	n := 0
	for off := 0; off < len(buf); off += frameLen(buf[off:]) {
		n++
	}
	return n
}
