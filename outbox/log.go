package outbox

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	// ErrFull is returned by Append when the outbox already holds MaxBytes of
	// records not yet committed. Commit frees space.
	ErrFull = errors.New("outbox full")
	// ErrClosed is returned by Append and Commit after Close.
	ErrClosed = errors.New("outbox closed")
	// ErrFailed is wrapped by every Append error once a disk error could not
	// be repaired; the error also wraps the cause (e.g. syscall.EROFS). Only
	// a new Open clears it.
	ErrFailed = errors.New("outbox failed")
	// ErrLocked is returned by Open when another process holds Dir: two
	// logs appending to one directory would corrupt each other.
	ErrLocked = errors.New("outbox directory locked by another process")
	// ErrTooLarge is returned by Append for data longer than a frame can hold
	// (4 GiB - 9 bytes).
	ErrTooLarge = errors.New("record too large")
)

// CorruptError is a damaged frame at Offset of a segment.
type CorruptError struct {
	Segment uint64
	Offset  int64
	Err     error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("segment %08d at %d: %v", e.Segment, e.Offset, e.Err)
}

func (e *CorruptError) Unwrap() error { return e.Err }

// Record is one appended message.
type Record struct {
	// Time is Options.Now at Append, stored in the record.
	Time time.Time
	Data []byte
}

// Position is a place in the log: a byte offset in a segment. The zero
// Position is the start of the log.
type Position struct {
	Segment uint64
	Offset  int64
}

func (p Position) less(q Position) bool {
	return p.Segment < q.Segment || p.Segment == q.Segment && p.Offset < q.Offset
}

// Entry is a record returned by Read with the position just after it, which
// is what to pass to Commit once the record is relayed, and to the next Read.
type Entry struct {
	Record
	Next Position
}

// Stats describes the log's content and activity.
type Stats struct {
	// PendingRecords are appended and durable, not yet committed.
	PendingRecords int64
	// PendingBytes are the framed bytes of those records.
	PendingBytes int64
	// Oldest is the Time of the first pending record; zero when none.
	Oldest time.Time
	// Corruptions counts segments quarantined since Open.
	Corruptions int64
	// Appends counts records made durable since Open.
	Appends uint64
	// Syncs counts fsyncs done for appends since Open; Appends/Syncs is the
	// number of records per group commit.
	Syncs uint64
	// DiskFull is true while appends are refused for lack of space: the
	// volume's free space is under Options.ReserveBytes, or a write met
	// ENOSPC. It turns false once the relay has freed space (Commit) or an
	// append succeeds.
	DiskFull bool
	// Refused counts appends refused since Open by a disk error: a full
	// volume, or a failed write or fsync.
	Refused uint64
}

const (
	segmentExt = ".seg"
	// maxBatchBytes bounds the bytes queued for the next write; an Append
	// that would exceed it waits (honouring its ctx) for the writer.
	maxBatchBytes = 4 << 20
	// maxSpareBytes bounds the write buffer kept for reuse.
	maxSpareBytes = 8 << 20
	// defaultReadBytes is Read's budget when maxBytes ≤ 0.
	defaultReadBytes = 1 << 20
	// retireBytes: an active segment this large is closed and deleted as
	// soon as everything in it is committed, instead of waiting for
	// SegmentBytes; with the volume short of space, any size is.
	retireBytes = 1 << 20
)

func segmentName(seq uint64) string { return fmt.Sprintf("%08d%s", seq, segmentExt) }

// segment is what the Log knows of one segment file.
type segment struct {
	seq  uint64
	size int64 // durable size
	// pendRecords and pendBytes count the records of this segment at or
	// after the checkpoint.
	pendRecords int64
	pendBytes   int64
}

// batch is a group of appends written and synced together.
type batch struct {
	buf   []byte        // frames, back to back
	n     int           // records in buf
	keep  []span        // AppendBatch ranges of buf that go into one segment
	taken chan struct{} // made on demand; closed when the writer takes the batch
	done  chan struct{} // closed once durable and err are set
	// durable is how many records, from the start of buf, are on disk; err
	// is the error that stopped the rest.
	durable int
	err     error
}

// Log is a durable append-only log. Its methods are safe for concurrent use;
// Read and Commit are meant for one relay.
type Log struct {
	lock   *os.File // holds the flock on Dir/LOCK until Close
	opts   Options
	fs     fileSystem
	logger *slog.Logger
	now    func() time.Time
	notify chan struct{}
	kick   chan struct{}
	exited chan struct{}

	commitMu sync.Mutex // serialises Commit; guards cpf and cpSeq
	cpf      file       // the checkpoint file, open for in-place writes; nil until prepared
	cpSeq    uint64     // sequence number of its newest slot

	// reserve is the free space kept on the volume (Options.ReserveBytes
	// or its default); 0 when free space cannot be known.
	reserve int64

	// wmu guards w: the writer holds it while it writes a batch, Commit
	// while it retires the active segment.
	wmu sync.Mutex

	mu       sync.Mutex
	open     *batch // appends waiting for the writer
	spare    []byte
	closed   bool
	failed   error
	reserved int64 // framed bytes queued or in flight, not yet durable
	segs     []segment
	cp       Position
	stats    Stats
	ep       episode
	// inEpisode and full mirror ep.active and ep.full for the hot path.
	inEpisode, full atomic.Bool

	// writing is set while a batch is being written, by the writer
	// goroutine or by an appender (appendInline); lastN is the number of
	// records in the previous group commit.
	writing bool
	lastN   int

	w writer // owned by whoever is writing (and by Close after the writer exits)
}

// episode is a time during which a disk error refuses appends. It is
// logged once when it starts and once, with the count, when it ends.
type episode struct {
	active  bool
	full    bool // for lack of space (Stats.DiskFull)
	since   time.Time
	refused int64
}

// writer is the state of the writer goroutine.
type writer struct {
	f       file // active segment, nil before the first roll
	seq     uint64
	size    int64 // durable size of the active segment
	nextSeq uint64
}

// maxLinger bounds how long the writer holds a batch smaller than the
// previous one before its write and fsync. An fsync costs about as much CPU
// for one record as for fifty, and under load the appenders that the last
// group commit released are about to append again: a short wait lets them
// share this fsync instead of paying for another. Below lingerMinBatch the
// writer never waits: small batches mean a low, paced rate (each event its
// own fsync is then the lowest latency), not appenders about to come back.
const maxLinger = 200 * time.Microsecond

// lingerMinBatch is the previous group commit below which the writer does
// not linger. At 2,000 events/s paced, batches of one and two alternate
// (an fsync on a busy disk outlasts the 0.5 ms between events), and
// lingering after a batch of two added its whole 200 µs to the next event.
const lingerMinBatch = 4

// Open opens the log in opts.Dir, creating the directory if needed, and
// recovers it: it reads the checkpoint, validates every frame after it,
// truncates a torn tail and quarantines corrupt segments. New records go to a
// new segment.
func Open(opts Options) (*Log, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	l := &Log{
		opts:   opts,
		fs:     opts.fs,
		logger: opts.Logger,
		now:    opts.Now,
		notify: make(chan struct{}, 1),
		kick:   make(chan struct{}, 1),
		exited: make(chan struct{}),
		open:   &batch{done: make(chan struct{})},
	}
	if err := l.createDir(); err != nil {
		return nil, fmt.Errorf("open outbox: %w", err)
	}
	lock, err := lockDir(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("open outbox: %w", err)
	}
	l.lock = lock
	l.checkVolume()
	if err := l.recover(); err != nil {
		if l.cpf != nil {
			l.cpf.Close()
		}
		lock.Close()
		return nil, fmt.Errorf("open outbox: %w", err)
	}
	if err := l.checkSpace(0); err != nil {
		// A volume left full: appends wait for the relay to free space.
		l.refuse(0, err)
	}
	go l.run()
	return l, nil
}

// checkVolume sets the reserve from the volume's size and warns when
// MaxBytes is more than the volume can hold: the disk then fills first.
func (l *Log) checkVolume() {
	total, _, err := l.fs.Statfs(l.opts.Dir)
	if err != nil {
		l.logger.Debug("free space of the outbox volume unknown: no reserve kept", "err", err)
		return
	}
	l.reserve = l.opts.ReserveBytes
	if l.reserve == 0 {
		l.reserve = defaultReserve(total)
	}
	if room := total - l.reserve; l.opts.MaxBytes > 0 && l.opts.MaxBytes > room {
		l.logger.Warn("outbox MaxBytes is more than its volume can hold: publishes will be refused when the volume fills, before MaxBytes",
			"max_bytes", l.opts.MaxBytes, "volume_bytes", total, "reserve_bytes", l.reserve)
	}
}

// errStatfs is Statfs's error where free space cannot be known.
var errStatfs = errors.New("statfs not supported")

// checkSpace returns an error wrapping syscall.ENOSPC when writing need
// more bytes would leave less free space than the reserve (twice the
// reserve while the disk is full, so that the state does not flap), nil
// when there is room or free space cannot be known.
func (l *Log) checkSpace(need int64) error {
	if l.reserve == 0 {
		return nil
	}
	_, free, err := l.fs.Statfs(l.opts.Dir)
	if err != nil {
		return nil // the write itself will tell
	}
	l.mu.Lock()
	keep := l.reserve
	if l.ep.full {
		keep *= 2
	}
	l.mu.Unlock()
	if free-need < keep {
		return fmt.Errorf("outbox volume has %d bytes free, under the %d-byte reserve kept for the relay: %w", free, keep, syscall.ENOSPC)
	}
	return nil
}

// diskFull reports whether appends are being refused for lack of space.
func (l *Log) diskFull() bool { return l.full.Load() }

// refuse counts n appends refused by err, starting an episode (logged
// once) if none is under way.
func (l *Log) refuse(n int, err error) {
	full := errors.Is(err, syscall.ENOSPC)
	l.mu.Lock()
	start := !l.ep.active
	if start {
		l.ep = episode{active: true, since: time.Now()}
	}
	l.ep.full = l.ep.full || full
	l.ep.refused += int64(n)
	l.stats.Refused += uint64(n)
	l.stats.DiskFull = l.ep.full
	l.inEpisode.Store(true)
	l.full.Store(l.ep.full)
	l.mu.Unlock()
	switch {
	case !start:
	case full:
		l.logger.Warn("outbox disk full: refusing appends until the relay frees space", "reserve_bytes", l.reserve, "err", err)
	default:
		l.logger.Warn("outbox disk error: refusing appends until a write succeeds", "err", err)
	}
}

// endEpisode ends the episode under way, if any, and logs what it refused.
func (l *Log) endEpisode() {
	if !l.inEpisode.Load() {
		return
	}
	l.mu.Lock()
	ep := l.ep
	l.ep = episode{}
	l.stats.DiskFull = false
	l.inEpisode.Store(false)
	l.full.Store(false)
	l.mu.Unlock()
	if ep.active {
		l.logger.Info("outbox disk error over: appends accepted again", "disk_full", ep.full, "refused", ep.refused,
			"duration", time.Since(ep.since).Round(time.Millisecond).String())
	}
}

func (l *Log) path(name string) string { return filepath.Join(l.opts.Dir, name) }

// The outbox holds message bodies: its directory is private to the user
// ferry runs as, and so is every file in it (the umask can only narrow this).
const (
	dirPerm  os.FileMode = 0o700
	filePerm os.FileMode = 0o600
)

// createDir makes Dir and, when it is new, makes its entry durable too.
func (l *Log) createDir() error {
	dir := filepath.Clean(l.opts.Dir)
	if fi, err := l.fs.Stat(dir); err == nil {
		if perm := fi.Mode().Perm(); perm&^dirPerm != 0 {
			l.logger.Warn("outbox directory is open to other users; its files hold message bodies",
				"dir", dir, "mode", fmt.Sprintf("%#o", perm), "want", fmt.Sprintf("%#o", dirPerm))
		}
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("stat dir: %w", err)
	}
	if err := l.fs.MkdirAll(dir, dirPerm); err != nil {
		return fmt.Errorf("create dir: %w", err)
	}
	if err := syncDir(l.fs, filepath.Dir(dir)); err != nil {
		return fmt.Errorf("sync dir: %w", err)
	}
	return nil
}

// Append adds a record holding data, stamped with Options.Now, and returns
// nil only once it is fsync'd. Appends that arrive together share one write
// and one fsync. ctx is honoured while the record waits to be queued; once
// queued, Append waits for the outcome of its write. data is copied and may
// be reused when Append returns.
//
// Errors: ErrFull (immediately, no waiting), ErrClosed, ErrTooLarge, ctx's
// error, or a disk error wrapping the syscall error (errors.Is(err,
// syscall.ENOSPC), syscall.EROFS, …) and, once the log could not repair
// itself, ErrFailed.
//
// It is long because the queueing decisions (full, closed, failed, inline
// write, linger) must be taken under one lock, in this order.
func (l *Log) Append(ctx context.Context, data []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("append record: %w", err)
	}
	if len(data) > maxDataSize {
		return fmt.Errorf("append record: %w", ErrTooLarge)
	}
	size := int64(frameOverhead + len(data))
	if l.diskFull() {
		// Refused at once, without queueing, until the space is back.
		if err := l.checkSpace(size); err != nil {
			l.refuse(1, err)
			return fmt.Errorf("append record: %w", err)
		}
	}
	ns := l.now().UnixNano()
	crc := payloadCRC(ns, data) // outside the lock: it reads all of data

	var b *batch
	var idx int
	for {
		l.mu.Lock()
		switch {
		case l.closed:
			l.mu.Unlock()
			return fmt.Errorf("append record: %w", ErrClosed)
		case l.failed != nil:
			err := l.failed
			l.mu.Unlock()
			return fmt.Errorf("append record: %w", err)
		case l.opts.MaxBytes > 0 && l.stats.PendingBytes+l.reserved+size > l.opts.MaxBytes:
			l.mu.Unlock()
			return fmt.Errorf("append record: %w", ErrFull)
		}
		b = l.open
		if len(b.buf) > 0 && int64(len(b.buf))+size > maxBatchBytes {
			// The writer is behind: wait for it to take this batch.
			if b.taken == nil {
				b.taken = make(chan struct{})
			}
			taken := b.taken
			l.mu.Unlock()
			select {
			case <-taken:
				continue
			case <-ctx.Done():
				return fmt.Errorf("append record: %w", ctx.Err())
			}
		}
		b.buf = appendFrameCRC(b.buf, ns, data, crc)
		idx = b.n
		b.n++
		l.reserved += size
		if b.n == 1 && !l.writing && l.lastN < lingerMinBatch {
			// Nothing is being written and the load is light: write it
			// here rather than wake the writer goroutine and wait for it.
			failed := l.takeLocked()
			l.mu.Unlock()
			l.appendInline(b, failed)
			return b.result(idx)
		}
		l.mu.Unlock()
		break
	}
	select {
	case l.kick <- struct{}{}:
	default:
	}
	<-b.done
	return b.result(idx)
}

// result is the outcome of record idx of a written batch.
func (b *batch) result(idx int) error {
	if idx < b.durable {
		return nil
	}
	return fmt.Errorf("append record: %w", b.err)
}

// appendInline writes a batch an appender took for itself, then hands
// whatever queued meanwhile (or a Close) to the writer goroutine. At a
// light, paced load this saves two goroutine hand-offs per append (to the
// writer and back), each a thread wake-up that a busy machine can delay
// by milliseconds.
func (l *Log) appendInline(b *batch, failed error) {
	l.commitBatch(b, failed)
	l.mu.Lock()
	more := l.open.n > 0 || l.closed
	l.mu.Unlock()
	if more {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
}

// Notify returns a channel that receives a value (without blocking the
// writer) after every group commit that made records durable. It has
// capacity 1 and is meant for one reader, the relay.
func (l *Log) Notify() <-chan struct{} { return l.notify }

// Checkpoint returns the committed position, as persisted. It may name the
// start of a later segment than the position passed to Commit when that one
// ended a segment.
func (l *Log) Checkpoint() Position {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cp
}

// Stats returns a snapshot of the log's statistics.
func (l *Log) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

// Err returns the error that failed the log (it wraps ErrFailed), or nil
// while the log works.
func (l *Log) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failed
}

// Close waits for queued appends to be written and synced, closes the files
// and makes further Appends fail with ErrClosed. Closing twice is a no-op.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default:
	}
	<-l.exited
	defer l.lock.Close() // releases the flock
	l.commitMu.Lock()
	if l.cpf != nil {
		l.cpf.Close()
		l.cpf = nil
	}
	l.commitMu.Unlock()
	f := l.w.f
	l.w.f = nil
	if f == nil {
		return nil
	}
	// Every batch was synced already; this one catches nothing new but
	// costs nothing either.
	err := f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("close segment: %w", err)
	}
	return nil
}

// run is the writer goroutine: it takes the queued batch, writes and syncs
// it, and reports the outcome to its appenders. While an appender writes
// its own batch (appendInline), the goroutine leaves the next batch to the
// kick that appender sends when it is done.
func (l *Log) run() {
	defer close(l.exited)
	for range l.kick {
		for {
			l.linger()
			l.mu.Lock()
			b := l.open
			if b.n == 0 || l.writing {
				closed := l.closed && !l.writing
				l.mu.Unlock()
				if closed && b.n == 0 {
					return
				}
				break
			}
			failed := l.takeLocked()
			l.mu.Unlock()
			l.commitBatch(b, failed)
		}
	}
}

// takeLocked makes the open batch the one being written (l.writing) and
// opens a new one; l.mu is held. It returns the error that failed the
// log, if any.
func (l *Log) takeLocked() (failed error) {
	b := l.open
	l.open = &batch{buf: l.spare[:0], done: make(chan struct{})}
	l.spare = nil
	l.writing = true
	l.lastN = b.n
	if b.taken != nil {
		close(b.taken)
	}
	return l.failed
}

// commitBatch writes and syncs b (taken by takeLocked), reports the
// outcome to its appenders and ends l.writing.
func (l *Log) commitBatch(b *batch, failed error) {
	written := 0
	if failed != nil {
		b.err = failed
	} else if b.err = l.checkSpace(int64(len(b.buf))); b.err == nil {
		l.wmu.Lock()
		b.durable, written, b.err = l.writeBatch(b.buf, b.keep)
		l.wmu.Unlock()
	}
	switch {
	case b.err == nil:
		l.endEpisode()
	case failed == nil && !errors.Is(b.err, ErrFailed):
		l.refuse(b.n-b.durable, b.err)
	}

	l.mu.Lock()
	l.reserved -= int64(len(b.buf) - written) // the durable part moved to stats.PendingBytes
	if cap(b.buf) <= maxSpareBytes {
		l.spare = b.buf[:0]
	}
	l.writing = false
	l.mu.Unlock()
	close(b.done)
	if b.durable > 0 {
		select {
		case l.notify <- struct{}{}:
		default:
		}
	}
}

// linger waits, at most maxLinger, while the open batch is smaller than
// the previous group commit; each Append's kick ends the wait early once
// the batch has caught up.
func (l *Log) linger() {
	var t *time.Timer
	for {
		l.mu.Lock()
		n, closed, lastN := l.open.n, l.closed, l.lastN
		l.mu.Unlock()
		if n == 0 || n >= lastN || lastN < lingerMinBatch || closed {
			break
		}
		if t == nil {
			t = time.NewTimer(maxLinger)
		}
		select {
		case <-l.kick:
			continue
		case <-t.C:
		}
		break
	}
	if t != nil {
		t.Stop()
	}
}

// writeBatch writes and syncs the frames in buf, rolling segments as needed,
// and returns how many records, and bytes, are durable. A keep span is
// never split between two segments.
func (l *Log) writeBatch(buf []byte, keep []span) (durable, written int, err error) {
	w := &l.w
	for off := 0; off < len(buf); {
		if w.f == nil || w.size > 0 && w.size+int64(frameLen(buf[off:])) > l.opts.SegmentBytes {
			if err := l.roll(); err != nil {
				return durable, written, err
			}
		}
		start, n := off, 0
		for off < len(buf) {
			fl := frameLen(buf[off:])
			if n > 0 && w.size+int64(off-start+fl) > l.opts.SegmentBytes {
				break
			}
			off += fl
			n++
		}
		if off < len(buf) && len(keep) > 0 {
			if cut := splitAt(keep, off); cut != off && (cut > start || w.size > 0) {
				if cut == start { // the span does not fit in what is left of this segment
					off = start
					if err := l.roll(); err != nil {
						return durable, written, err
					}
					continue
				}
				off, n = cut, countFrames(buf[start:cut])
			}
		}
		chunk := buf[start:off]
		if _, err := w.f.WriteAt(chunk, w.size); err != nil {
			return durable, written, l.repair(fmt.Errorf("write segment %s: %w", segmentName(w.seq), err))
		}
		if err := w.f.Sync(); err != nil {
			return durable, written, l.repair(fmt.Errorf("sync segment %s: %w", segmentName(w.seq), err))
		}
		w.size += int64(len(chunk))
		durable += n
		written += len(chunk)

		l.mu.Lock()
		s := &l.segs[len(l.segs)-1] // the active segment
		s.size = w.size
		s.pendRecords += int64(n)
		s.pendBytes += int64(len(chunk))
		if l.stats.PendingRecords == 0 {
			l.stats.Oldest = frameTime(chunk)
		}
		l.stats.PendingRecords += int64(n)
		l.stats.PendingBytes += int64(len(chunk))
		l.reserved -= int64(len(chunk))
		l.stats.Appends += uint64(n)
		l.stats.Syncs++
		l.mu.Unlock()
	}
	return durable, written, nil
}

// roll makes a new, empty segment the active one. The previous segment is
// already synced.
func (l *Log) roll() error {
	w := &l.w
	seq := w.nextSeq
	w.nextSeq++ // even on failure: a half-made file must not block the next try
	name := segmentName(seq)
	f, err := l.fs.OpenFile(l.path(name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, filePerm)
	if err != nil {
		return fmt.Errorf("create segment %s: %w", name, err)
	}
	if err := syncDir(l.fs, l.opts.Dir); err != nil {
		f.Close()
		// An empty segment left behind is harmless: recovery drops it.
		_ = l.fs.Remove(l.path(name))
		return fmt.Errorf("sync dir for segment %s: %w", name, err)
	}
	if w.f != nil {
		if err := w.f.Close(); err != nil {
			// Its content was synced; a close error loses nothing.
			l.logger.Warn("close segment", "segment", segmentName(w.seq), "err", err)
		}
	}
	w.f, w.seq, w.size = f, seq, 0
	l.mu.Lock()
	l.segs = append(l.segs, segment{seq: seq})
	l.mu.Unlock()
	return nil
}

// repair handles a failed write or fsync of the active segment. The file
// descriptor is abandoned, never synced again: after a failed fsync the
// kernel may have dropped the dirty pages and a retry would report success
// for data that is not on disk. The segment is reopened, cut back to its
// last durable size and synced. If that fails too, the log is failed.
// repair returns the error to give the batch's appenders.
func (l *Log) repair(cause error) error {
	w := &l.w
	name := segmentName(w.seq)
	w.f.Close()
	w.f = nil
	f, err := l.fs.OpenFile(l.path(name), os.O_WRONLY, 0)
	if err == nil {
		err = f.Truncate(w.size)
		if err == nil {
			err = f.Sync()
		}
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		failed := fmt.Errorf("%w: %w; repair segment %s: %w", ErrFailed, cause, name, err)
		l.mu.Lock()
		l.failed = failed
		l.mu.Unlock()
		l.logger.Error("outbox failed", "segment", name, "err", failed)
		return failed
	}
	w.f = f
	// Logged by the episode (refuse), once, not per failed batch.
	return fmt.Errorf("%w (segment cut back to %d bytes)", cause, w.size)
}

var errBeyond = errors.New("position beyond the durable end of the log")

// find resolves p to an index in l.segs and an offset in that segment; the
// index is -1 when the log has no segment. A position before the first
// segment resolves to the start of the first. l.mu must be held.
func (l *Log) find(p Position) (int, int64, error) {
	if len(l.segs) == 0 {
		if p.Offset != 0 && l.cp.less(p) {
			return -1, 0, fmt.Errorf("position %d:%d: %w", p.Segment, p.Offset, errBeyond)
		}
		return -1, 0, nil
	}
	i, found := slices.BinarySearchFunc(l.segs, p.Segment, func(s segment, seq uint64) int {
		return cmpUint64(s.seq, seq)
	})
	switch {
	case i == 0 && !found:
		return 0, 0, nil
	case i == len(l.segs), !found && p.Offset != 0, p.Offset < 0, found && p.Offset > l.segs[i].size:
		return -1, 0, fmt.Errorf("position %d:%d: %w", p.Segment, p.Offset, errBeyond)
	case !found:
		return i, 0, nil // start of a missing segment: the next one
	}
	return i, p.Offset, nil
}

func cmpUint64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// locate resolves p to a segment with data at off, stepping over segment
// ends, with the segment's durable end. off == end means no data after p.
func (l *Log) locate(p Position) (seq uint64, off, end int64, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i, off, err := l.find(p)
	if err != nil || i < 0 {
		return 0, 0, 0, err
	}
	for off == l.segs[i].size && i+1 < len(l.segs) {
		i, off = i+1, 0
	}
	return l.segs[i].seq, off, l.segs[i].size, nil
}

// Read returns the durable records after from, in order: at most maxRecords
// (≤ 0 ⇒ no limit) and about maxBytes of frames (≤ 0 ⇒ 1 MiB), but at least
// one record if there is any. It returns an empty slice when there is none
// yet. Pass the last Entry.Next to the next Read and to Commit. Entry data
// is the caller's. A position after the durable end is an error; a damaged
// frame is a *CorruptError.
func (l *Log) Read(from Position, maxRecords, maxBytes int) ([]Entry, error) {
	if maxBytes <= 0 {
		maxBytes = defaultReadBytes
	}
	budget := int64(maxBytes)
	entries := []Entry{}
	for {
		seq, off, end, err := l.locate(from)
		if err != nil {
			return nil, fmt.Errorf("read log: %w", err)
		}
		if off == end {
			return entries, nil
		}
		entries, off, err = l.readSegment(entries, seq, off, end, maxRecords, &budget)
		if err != nil {
			return nil, fmt.Errorf("read log: %w", err)
		}
		if off < end || maxRecords > 0 && len(entries) >= maxRecords || budget <= 0 {
			return entries, nil
		}
		from = Position{Segment: seq, Offset: off}
	}
}

// readSegment appends the records of segment seq from off towards end to
// entries, within the limits, and returns the offset it stopped at.
func (l *Log) readSegment(entries []Entry, seq uint64, off, end int64, maxRecords int, budget *int64) ([]Entry, int64, error) {
	name := segmentName(seq)
	f, err := l.fs.OpenFile(l.path(name), os.O_RDONLY, 0)
	if err != nil {
		return entries, off, fmt.Errorf("open segment: %w", err)
	}
	defer f.Close()
	want := min(end-off, max(*budget, frameOverhead))
	buf := make([]byte, want)
	if _, err := f.ReadAt(buf, off); err != nil {
		return entries, off, fmt.Errorf("read segment %s: %w", name, err)
	}
	p := 0
	for p < len(buf) && (maxRecords <= 0 || len(entries) < maxRecords) && *budget > 0 {
		rec, n, err := decodeFrame(buf[p:])
		if errors.Is(err, io.ErrUnexpectedEOF) && int64(len(buf)) < end-off {
			if p > 0 || len(entries) > 0 {
				break // the budget ends inside this frame
			}
			// The first record is larger than the budget: read all of it.
			fl := int64(frameLen(buf))
			if fl > end-off {
				return entries, off, &CorruptError{Segment: seq, Offset: off, Err: errBadLength}
			}
			buf = make([]byte, fl)
			if _, err := f.ReadAt(buf, off); err != nil {
				return entries, off, fmt.Errorf("read segment %s: %w", name, err)
			}
			continue
		}
		if err != nil {
			return entries, off, &CorruptError{Segment: seq, Offset: off + int64(p), Err: err}
		}
		p += n
		*budget -= int64(n)
		entries = append(entries, Entry{Record: rec, Next: Position{Segment: seq, Offset: off + int64(p)}})
	}
	return entries, off + int64(p), nil
}

// Commit records that everything before p has been relayed: it persists p as
// the checkpoint (one slot of the preallocated checkpoint file overwritten in
// place, no free space needed), deletes the segments wholly before it and
// frees their space for MaxBytes. Once everything in the active segment is
// committed and the segment holds retireBytes or the volume is short of
// space, that segment is closed and deleted too (the next append starts a
// new one), so relayed space comes back without waiting for a roll. p must
// be a position returned by Read (an Entry.Next) or the current
// checkpoint; a position beyond the durable end, or inside a record, is an
// error. Committing a position at or before the checkpoint is a no-op.
//
// When the checkpoint cannot be written (its file could not be made on a
// volume left full by an earlier version), Commit still releases the
// segments relayed whole, which needs no checkpoint: Open starts at the
// oldest segment left. It then tries the checkpoint again.
func (l *Log) Commit(p Position) error {
	l.commitMu.Lock()
	defer l.commitMu.Unlock()
	err := l.commit(p, true)
	if err == nil && l.cpf == nil {
		// Released whole without a checkpoint file: make it now that the
		// relay freed space.
		l.mu.Lock()
		cp := l.cp
		l.mu.Unlock()
		if err = l.writeCheckpoint(cp); err != nil {
			err = fmt.Errorf("commit checkpoint: %w", err)
		}
	}
	if err == nil && l.diskFull() && l.checkSpace(0) == nil {
		l.endEpisode() // the relay freed the space
	}
	return err
}

// commit does Commit's work; commitMu is held. fallback allows releasing
// whole segments when the checkpoint cannot be written.
func (l *Log) commit(p Position, fallback bool) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return fmt.Errorf("commit checkpoint: %w", ErrClosed)
	}
	i, off, err := l.find(p)
	if err != nil || i < 0 {
		l.mu.Unlock()
		if err != nil {
			return fmt.Errorf("commit checkpoint: %w", err)
		}
		return nil
	}
	for off == l.segs[i].size && i+1 < len(l.segs) {
		i, off = i+1, 0
	}
	np := Position{Segment: l.segs[i].seq, Offset: off}
	if !l.cp.less(np) {
		l.mu.Unlock()
		return nil
	}
	ci, coff, _ := l.find(l.cp) // the checkpoint always resolves
	from := int64(0)
	if ci == i {
		from = coff
	}
	l.mu.Unlock()

	// Only Commit removes segments and it holds commitMu, so i stays valid;
	// the writer only adds segments after it.
	n, err := l.countFrames(np.Segment, from, off)
	if err != nil {
		return fmt.Errorf("commit checkpoint: %w", err)
	}
	if err := l.writeCheckpoint(np); err != nil {
		err = fmt.Errorf("commit checkpoint: %w", err)
		if fallback && l.releaseWhole(i, np) {
			return l.commit(p, false)
		}
		return err
	}

	l.mu.Lock()
	drop := make([]uint64, 0, i)
	for _, s := range l.segs[:i] {
		l.stats.PendingRecords -= s.pendRecords
		l.stats.PendingBytes -= s.pendBytes
		drop = append(drop, s.seq)
	}
	s := &l.segs[i]
	s.pendRecords -= n
	s.pendBytes -= off - from
	l.stats.PendingRecords -= n
	l.stats.PendingBytes -= off - from
	l.segs = slices.Delete(l.segs, 0, i)
	l.cp = np
	l.mu.Unlock()
	l.removeSegments(drop)

	if off >= retireBytes || l.spaceShort() {
		l.retire(np)
	}
	l.refreshOldest()
	return nil
}

// releaseWhole drops the segments before index i, and the one at i too if
// everything in it is relayed (np is its end), without a checkpoint. It
// reports whether it dropped any.
func (l *Log) releaseWhole(i int, np Position) bool {
	l.mu.Lock()
	drop := make([]uint64, 0, i)
	for _, s := range l.segs[:i] {
		l.stats.PendingRecords -= s.pendRecords
		l.stats.PendingBytes -= s.pendBytes
		drop = append(drop, s.seq)
	}
	l.segs = slices.Delete(l.segs, 0, i)
	if start := (Position{Segment: l.segs[0].seq}); l.cp.less(start) {
		l.cp = start
	}
	l.mu.Unlock()
	l.removeSegments(drop)
	retired := l.retire(np)
	l.refreshOldest()
	return len(drop) > 0 || retired
}

// retire deletes the first segment if everything in it is relayed (np is
// its end), closing it first if the writer has it open; the next append
// starts a new segment. It reports whether it did.
func (l *Log) retire(np Position) bool {
	relayed := func() bool {
		return len(l.segs) > 0 && l.segs[0].seq == np.Segment && l.segs[0].size == np.Offset
	}
	l.mu.Lock()
	ok := relayed()
	l.mu.Unlock()
	if !ok {
		return false // without waiting for the writer's batch
	}
	l.wmu.Lock() // the writer is between batches
	l.mu.Lock()
	if !relayed() { // the writer added to it meanwhile
		l.mu.Unlock()
		l.wmu.Unlock()
		return false
	}
	s := l.segs[0]
	l.stats.PendingRecords -= s.pendRecords // 0: all relayed
	l.stats.PendingBytes -= s.pendBytes
	l.segs = slices.Delete(l.segs, 0, 1)
	if l.cp.less(np) {
		l.cp = np
	}
	l.mu.Unlock()
	if l.w.f != nil && l.w.seq == s.seq {
		if err := l.w.f.Close(); err != nil {
			// Its content was synced; a close error loses nothing.
			l.logger.Warn("close segment", "segment", segmentName(s.seq), "err", err)
		}
		l.w.f = nil
	}
	l.wmu.Unlock()
	l.removeSegments([]uint64{s.seq})
	return true
}

// removeSegments deletes the files of relayed segments.
func (l *Log) removeSegments(seqs []uint64) {
	for _, seq := range seqs {
		if err := l.fs.Remove(l.path(segmentName(seq))); err != nil {
			// Open deletes segments before the checkpoint; nothing is lost.
			l.logger.Warn("delete segment", "segment", segmentName(seq), "err", err)
		}
	}
}

// spaceShort reports whether the volume is short of space: appends are
// being refused, or less than four reserves are free.
func (l *Log) spaceShort() bool {
	if l.diskFull() {
		return true
	}
	if l.reserve == 0 {
		return false
	}
	_, free, err := l.fs.Statfs(l.opts.Dir)
	return err == nil && free < 4*l.reserve
}

// refreshOldest sets Stats.Oldest to the time of the first pending record.
func (l *Log) refreshOldest() {
	l.mu.Lock()
	pending, cp := l.stats.PendingRecords > 0, l.cp
	if !pending {
		l.stats.Oldest = time.Time{}
	}
	l.mu.Unlock()
	if pending {
		// Only Commit lowers PendingRecords, so a record after cp exists.
		if e, err := l.Read(cp, 1, 1); err == nil && len(e) == 1 {
			l.mu.Lock()
			l.stats.Oldest = e[0].Time
			l.mu.Unlock()
		}
	}
}

// countFrames counts the frames of segment seq between from and to, which
// must both be frame boundaries.
func (l *Log) countFrames(seq uint64, from, to int64) (int64, error) {
	if from == to {
		return 0, nil
	}
	name := segmentName(seq)
	f, err := l.fs.OpenFile(l.path(name), os.O_RDONLY, 0)
	if err != nil {
		return 0, fmt.Errorf("open segment: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(io.NewSectionReader(f, from, to-from), 64<<10)
	var hdr [headerSize]byte
	var n int64
	for pos := from; pos < to; n++ {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				break
			}
			return 0, fmt.Errorf("read segment %s: %w", name, err)
		}
		fl := int64(frameLen(hdr[:]))
		if fl < frameOverhead || pos+fl > to {
			break
		}
		if _, err := br.Discard(int(fl - headerSize)); err != nil {
			return 0, fmt.Errorf("read segment %s: %w", name, err)
		}
		pos += fl
		if pos == to {
			return n + 1, nil
		}
	}
	return 0, fmt.Errorf("position %d:%d is not a record boundary", seq, to)
}

// lockDir takes an exclusive, non-blocking flock on dir/LOCK. The kernel
// releases it when the process dies, so a crash never leaves it stale.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, filePerm)
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		// No room for the LOCK file on a volume left full (the first Open
		// makes it, so only a volume never opened here): lock the
		// directory itself, which needs no space.
		f, err = os.Open(dir)
	}
	if err != nil {
		return nil, fmt.Errorf("lock dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
		}
		return nil, fmt.Errorf("lock dir: %w", err)
	}
	return f, nil
}
