package outbox

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// recover rebuilds the Log's state from Dir; see Open.
//
// It is one pass on purpose: its steps (list, order, validate, quarantine,
// place the checkpoint) share the segment list and must run in this order.
func (l *Log) recover() error {
	cp, err := l.loadCheckpoint()
	if err != nil {
		return err
	}
	dirEntries, err := l.fs.ReadDir(l.opts.Dir)
	if err != nil {
		return fmt.Errorf("list dir: %w", err)
	}
	changed := false
	var seqs []uint64
	maxSeq := cp.Segment
	for _, e := range dirEntries {
		name := e.Name()
		switch {
		case name == checkpointName+".tmp":
			if err := l.fs.Remove(l.path(name)); err != nil {
				return fmt.Errorf("remove checkpoint tmp: %w", err)
			}
			changed = true
		case strings.HasSuffix(name, segmentExt+".tmp"):
			// A quarantine that crashed before its last rename.
			base := strings.TrimSuffix(name, ".tmp")
			seq, ok := parseSegmentName(base)
			if !ok {
				continue
			}
			if _, err := l.fs.Stat(l.path(base)); err == nil {
				err = l.fs.Remove(l.path(name))
				if err != nil {
					return fmt.Errorf("remove segment tmp: %w", err)
				}
			} else if errors.Is(err, os.ErrNotExist) {
				if err := l.fs.Rename(l.path(name), l.path(base)); err != nil {
					return fmt.Errorf("rename segment tmp: %w", err)
				}
				seqs = append(seqs, seq)
			} else {
				return fmt.Errorf("stat segment: %w", err)
			}
			changed = true
		default:
			if seq, ok := parseSegmentName(name); ok {
				seqs = append(seqs, seq)
			} else if i := strings.Index(name, segmentExt+".corrupt"); i > 0 {
				if seq, ok := parseSegmentName(name[:i+len(segmentExt)]); ok {
					maxSeq = max(maxSeq, seq)
				}
			}
		}
	}
	slices.Sort(seqs)
	seqs = slices.Compact(seqs)
	if len(seqs) > 0 {
		maxSeq = max(maxSeq, seqs[len(seqs)-1])
	}
	l.w.nextSeq = maxSeq + 1

	// Segments before the checkpoint's were committed; a crash between the
	// checkpoint rename and their deletion leaves them behind.
	for len(seqs) > 0 && seqs[0] < cp.Segment {
		if err := l.fs.Remove(l.path(segmentName(seqs[0]))); err != nil {
			return fmt.Errorf("delete committed segment: %w", err)
		}
		changed = true
		seqs = seqs[1:]
	}
	switch {
	case len(seqs) == 0:
		cp.Offset = 0 // nothing left at or after it: an empty log
	case seqs[0] > cp.Segment:
		cp = Position{Segment: seqs[0]}
	}

	for i, seq := range seqs {
		if fi, err := l.fs.Stat(l.path(segmentName(seq))); err == nil && fi.Size() == 0 {
			// Left by a roll whose directory fsync failed, or by a crash
			// right after a roll: nothing in it, only a file to drop.
			if err := l.fs.Remove(l.path(segmentName(seq))); err != nil {
				return fmt.Errorf("delete empty segment: %w", err)
			}
			changed = true
			continue
		}
		start := int64(0)
		if seq == cp.Segment {
			start = cp.Offset
		}
		s, start, first, err := l.recoverSegment(seq, start, i == len(seqs)-1)
		if err != nil {
			return err
		}
		if seq == cp.Segment {
			cp.Offset = start
		}
		if l.stats.PendingRecords == 0 && s.pendRecords > 0 {
			l.stats.Oldest = first
		}
		l.stats.PendingRecords += s.pendRecords
		l.stats.PendingBytes += s.pendBytes
		l.segs = append(l.segs, s)
	}
	l.cp = cp
	if changed {
		if err := syncDir(l.fs, l.opts.Dir); err != nil {
			return fmt.Errorf("sync dir: %w", err)
		}
	}
	return nil
}

// parseSegmentName returns the sequence number of a segment file name.
func parseSegmentName(name string) (uint64, bool) {
	digits, ok := strings.CutSuffix(name, segmentExt)
	if !ok || len(digits) < 8 || strings.TrimLeft(digits, "0123456789") != "" {
		return 0, false
	}
	seq, err := strconv.ParseUint(digits, 10, 64)
	return seq, err == nil && seq > 0
}

// recoverSegment validates segment seq from start on, repairs it if needed
// and returns what it holds. start is reset to 0 if it is not a frame
// boundary.
func (l *Log) recoverSegment(seq uint64, start int64, last bool) (s segment, _ int64, first time.Time, err error) {
	name := segmentName(seq)
	f, err := l.fs.OpenFile(l.path(name), os.O_RDONLY, 0)
	if err != nil {
		return s, 0, first, fmt.Errorf("open segment: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return s, 0, first, fmt.Errorf("stat segment: %w", err)
	}
	size := st.Size()
	if start > size {
		start = -1
	} else if start > 0 {
		if _, err := l.countFrames(seq, 0, start); err != nil {
			start = -1
		}
	}
	if start < 0 {
		l.logger.Error("ignore checkpoint off a record boundary, relaying its segment again", "segment", name)
		start = 0
	}

	end, n, first, bad, err := scanFrames(f, start, size)
	if err != nil {
		return s, 0, first, fmt.Errorf("read segment %s: %w", name, err)
	}
	s = segment{seq: seq, size: size, pendRecords: n, pendBytes: size - start}
	if bad == nil {
		return s, start, first, nil
	}
	ce := &CorruptError{Segment: seq, Offset: end, Err: bad}
	s.size, s.pendBytes = end, end-start
	if last {
		torn, err := tornTail(f, end, size)
		if err != nil {
			return s, 0, first, fmt.Errorf("read segment %s: %w", name, err)
		}
		if torn {
			if err := l.truncateSegment(name, end); err != nil {
				return s, 0, first, err
			}
			l.logger.Warn("truncate torn tail", "segment", name, "offset", end, "bytes", size-end, "err", ce)
			return s, start, first, nil
		}
	}
	moved, err := l.quarantine(f, name, end)
	if err != nil {
		return s, 0, first, err
	}
	l.stats.Corruptions++
	l.logger.Error("quarantine corrupt segment", "segment", name, "offset", end, "moved_to", moved, "err", ce)
	return s, start, first, nil
}

// scanFrames validates the frames of r from start to size. It returns the
// end of the valid frames, their count and the time of the first, and bad,
// the reason the frame at end is invalid (nil if end == size); err is a read
// error.
func scanFrames(r io.ReaderAt, start, size int64) (end, n int64, first time.Time, bad, err error) {
	br := bufio.NewReaderSize(io.NewSectionReader(r, start, size-start), 1<<20)
	var hdr [headerSize]byte
	var payload []byte
	for end = start; end < size; {
		if size-end < headerSize {
			return end, n, first, io.ErrUnexpectedEOF, nil
		}
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return end, n, first, nil, err
		}
		fl := int64(frameLen(hdr[:]))
		switch {
		case fl < frameOverhead:
			return end, n, first, errBadLength, nil
		case fl > size-end:
			return end, n, first, io.ErrUnexpectedEOF, nil
		}
		payload = slices.Grow(payload[:0], int(fl-headerSize))[:fl-headerSize]
		if _, err := io.ReadFull(br, payload); err != nil {
			return end, n, first, nil, err
		}
		if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(hdr[4:]) {
			return end, n, first, errBadChecksum, nil
		}
		if n == 0 {
			first = time.Unix(0, int64(binary.LittleEndian.Uint64(payload)))
		}
		n++
		end += fl
	}
	return end, n, first, nil, nil
}

// tornTail reports whether the invalid frame at off, in the last segment of
// size bytes, is the remains of a write cut short by a crash rather than
// damage to acknowledged data: nothing valid may follow it. That is the case
// when the rest is zeros (a file extended but not written), when the frames
// from off on run into or up to EOF and none of them is valid. When unsure
// (garbage that cannot be followed) it answers false: quarantine keeps the
// bytes, truncation would not.
func tornTail(r io.ReaderAt, off, size int64) (bool, error) {
	zero, err := allZero(r, off, size)
	if err != nil || zero {
		return zero, err
	}
	var hdr [headerSize]byte
	for pos := off; pos < size; {
		if size-pos < headerSize {
			return true, nil
		}
		if _, err := r.ReadAt(hdr[:], pos); err != nil {
			return false, err
		}
		fl := int64(frameLen(hdr[:]))
		if fl < frameOverhead {
			return allZero(r, pos, size)
		}
		if fl > size-pos {
			return true, nil
		}
		if pos != off {
			frame := make([]byte, fl)
			if _, err := r.ReadAt(frame, pos); err != nil {
				return false, err
			}
			if _, _, err := decodeFrame(frame); err == nil {
				return false, nil
			}
		}
		pos += fl
	}
	return true, nil
}

// allZero reports whether r holds only zero bytes from off to size.
func allZero(r io.ReaderAt, off, size int64) (bool, error) {
	buf := make([]byte, min(size-off, 64<<10))
	for off < size {
		b := buf[:min(int64(len(buf)), size-off)]
		if _, err := r.ReadAt(b, off); err != nil {
			return false, err
		}
		for _, c := range b {
			if c != 0 {
				return false, nil
			}
		}
		off += int64(len(b))
	}
	return true, nil
}

// truncateSegment cuts a torn tail off segment name.
func (l *Log) truncateSegment(name string, size int64) error {
	f, err := l.fs.OpenFile(l.path(name), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open segment: %w", err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return fmt.Errorf("truncate segment %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync segment %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close segment %s: %w", name, err)
	}
	return nil
}

// quarantine moves segment name aside to a .corrupt file, never deleting
// it, and puts its first size bytes (the valid frames) back under its name:
// copy to name.tmp, fsync, rename name to the .corrupt name, rename the tmp
// to name, fsync the directory. Open finishes a quarantine cut short by a
// crash (a .tmp without its segment). It returns the .corrupt file's name.
func (l *Log) quarantine(src io.ReaderAt, name string, size int64) (string, error) {
	path := l.path(name)
	tmp := path + ".tmp"
	out, err := l.fs.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, filePerm)
	if err != nil {
		return "", fmt.Errorf("create segment tmp: %w", err)
	}
	if _, err := io.Copy(io.NewOffsetWriter(out, 0), io.NewSectionReader(src, 0, size)); err != nil {
		out.Close()
		return "", fmt.Errorf("copy segment %s: %w", name, err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return "", fmt.Errorf("sync segment tmp: %w", err)
	}
	if err := out.Close(); err != nil {
		return "", fmt.Errorf("close segment tmp: %w", err)
	}
	moved := ""
	for i := 0; i < 1000 && moved == ""; i++ {
		candidate := name + ".corrupt"
		if i > 0 {
			candidate += "." + strconv.Itoa(i)
		}
		if _, err := l.fs.Stat(l.path(candidate)); errors.Is(err, os.ErrNotExist) {
			moved = candidate
		}
	}
	if moved == "" {
		return "", fmt.Errorf("quarantine segment %s: no free .corrupt name", name)
	}
	if err := l.fs.Rename(path, l.path(moved)); err != nil {
		return "", fmt.Errorf("rename corrupt segment: %w", err)
	}
	if err := l.fs.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("rename segment tmp: %w", err)
	}
	if err := syncDir(l.fs, l.opts.Dir); err != nil {
		return "", fmt.Errorf("sync dir: %w", err)
	}
	return moved, nil
}
