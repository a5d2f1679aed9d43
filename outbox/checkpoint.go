package outbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
)

// The checkpoint file is preallocated once and then overwritten in place,
// so that committing needs no free space: a full volume never stops the
// relay from recording what it sent, and so from freeing the space.
//
// It holds two slots, cpStride bytes apart so that they never share a
// sector or a file-system block. A write goes to the slot its sequence
// number picks (seq%2), with pwrite and fdatasync; the other slot keeps the
// previous checkpoint. On read the valid slot with the higher sequence
// number wins, so a torn write of one slot falls back to the one before it:
// records relayed again, never skipped.
//
// Slot layout, little endian:
//
//	[0:4]   magic "FCP2"
//	[4:12]  sequence number, ≥ 1
//	[12:20] segment
//	[20:28] offset
//	[28:32] CRC-32C of [0:28]
//
// The file of earlier versions (written as tmp, fsync, rename) held
// segment, offset and CRC in 20 bytes; Open migrates it in place: it keeps
// those bytes and writes slot 1, so a migration cut short still reads as
// the old checkpoint.
const (
	checkpointName   = "checkpoint"
	cpSlotSize       = 32
	cpStride         = 4096
	cpFileSize       = 2 * cpStride
	cpMagic          = 0x32504346 // "FCP2"
	legacyCPFileSize = 20
)

var errBadCheckpoint = errors.New("bad checkpoint")

func cpSlotOffset(seq uint64) int64 { return int64(seq%2) * cpStride }

func encodeCPSlot(seq uint64, p Position) []byte {
	b := make([]byte, 0, cpSlotSize)
	b = binary.LittleEndian.AppendUint32(b, cpMagic)
	b = binary.LittleEndian.AppendUint64(b, seq)
	b = binary.LittleEndian.AppendUint64(b, p.Segment)
	b = binary.LittleEndian.AppendUint64(b, uint64(p.Offset))
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodeCPSlot(b []byte) (seq uint64, p Position, ok bool) {
	if len(b) < cpSlotSize || binary.LittleEndian.Uint32(b) != cpMagic ||
		crc32.Checksum(b[:28], castagnoli) != binary.LittleEndian.Uint32(b[28:]) {
		return 0, Position{}, false
	}
	seq = binary.LittleEndian.Uint64(b[4:])
	p = Position{Segment: binary.LittleEndian.Uint64(b[12:]), Offset: int64(binary.LittleEndian.Uint64(b[20:]))}
	return seq, p, seq > 0 && p.Offset >= 0
}

// encodeLegacyCheckpoint is the checkpoint file of earlier versions:
// segment (8 bytes), offset (8), CRC-32C of those (4).
func encodeLegacyCheckpoint(p Position) []byte {
	b := make([]byte, 0, legacyCPFileSize)
	b = binary.LittleEndian.AppendUint64(b, p.Segment)
	b = binary.LittleEndian.AppendUint64(b, uint64(p.Offset))
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodeLegacyCheckpoint(b []byte) (Position, error) {
	if len(b) != legacyCPFileSize || crc32.Checksum(b[:16], castagnoli) != binary.LittleEndian.Uint32(b[16:]) {
		return Position{}, errBadCheckpoint
	}
	p := Position{Segment: binary.LittleEndian.Uint64(b), Offset: int64(binary.LittleEndian.Uint64(b[8:]))}
	if p.Offset < 0 {
		return Position{}, fmt.Errorf("%w: negative offset", errBadCheckpoint)
	}
	return p, nil
}

// decodeCheckpointFile returns the checkpoint held by the content b of a
// checkpoint file and the sequence number of its slot: 0 for an empty file
// (no checkpoint yet) and for the old format.
func decodeCheckpointFile(b []byte) (Position, uint64, error) {
	switch len(b) {
	case 0:
		return Position{}, 0, nil
	case legacyCPFileSize:
		p, err := decodeLegacyCheckpoint(b)
		return p, 0, err
	}
	var best Position
	var bestSeq uint64
	for _, off := range []int64{0, cpStride} {
		if int64(len(b)) < off+cpSlotSize {
			continue
		}
		if seq, p, ok := decodeCPSlot(b[off:]); ok && seq > bestSeq {
			best, bestSeq = p, seq
		}
	}
	if bestSeq > 0 {
		return best, bestSeq, nil
	}
	if len(b) > legacyCPFileSize {
		// A migration cut short before its slot was durable.
		if p, err := decodeLegacyCheckpoint(b[:legacyCPFileSize]); err == nil {
			return p, 0, nil
		}
	}
	return Position{}, 0, errBadCheckpoint
}

// readCheckpointFile returns the first cpFileSize bytes of the checkpoint
// file, nil when there is none.
func (l *Log) readCheckpointFile() ([]byte, error) {
	f, err := l.fs.OpenFile(l.path(checkpointName), os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open checkpoint: %w", err)
	}
	defer f.Close()
	b := make([]byte, cpFileSize)
	n, err := f.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read checkpoint: %w", err)
	}
	return b[:n], nil
}

// loadCheckpoint returns the persisted checkpoint and makes the file ready
// for in-place writes, migrating the old format. None, or a damaged one, is
// the zero Position (everything is relayed again: a duplicate, not a loss).
// A file that cannot be prepared (a full volume left by an earlier version)
// does not fail Open: Commit tries again, and meanwhile releases relayed
// segments whole.
func (l *Log) loadCheckpoint() (Position, error) {
	b, err := l.readCheckpointFile()
	if err != nil {
		return Position{}, err
	}
	p, seq, err := decodeCheckpointFile(b)
	if err != nil {
		l.logger.Error("ignore damaged checkpoint, relaying from the start", "err", err)
		p, seq = Position{}, 0
	}
	if seq > 0 && len(b) == cpFileSize {
		f, err := l.fs.OpenFile(l.path(checkpointName), os.O_RDWR, 0)
		if err == nil {
			l.cpf, l.cpSeq = f, seq
			return p, nil
		}
		l.logger.Warn("checkpoint not writable yet", "err", err)
		return p, nil
	}
	if err := l.prepareCheckpoint(p, seq, b); err != nil {
		l.logger.Warn("checkpoint not writable yet: relayed segments are released whole until it is", "err", err)
	}
	return p, nil
}

// prepareCheckpoint writes the whole checkpoint file, p in the slot after
// seq, keeping the bytes of head (the file's content) elsewhere, and keeps
// it open for Commit.
func (l *Log) prepareCheckpoint(p Position, seq uint64, head []byte) error {
	f, err := l.fs.OpenFile(l.path(checkpointName), os.O_RDWR|os.O_CREATE, filePerm)
	if err != nil {
		return fmt.Errorf("create checkpoint: %w", err)
	}
	seq++
	image := make([]byte, cpFileSize)
	copy(image, head)
	copy(image[cpSlotOffset(seq):], encodeCPSlot(seq, p))
	if _, err := f.WriteAt(image, 0); err != nil {
		f.Close()
		return fmt.Errorf("write checkpoint: %w", err)
	}
	if err := f.Sync(); err != nil { // the size changed: a full fsync
		f.Close()
		return fmt.Errorf("sync checkpoint: %w", err)
	}
	if len(head) == 0 {
		if err := syncDir(l.fs, l.opts.Dir); err != nil {
			f.Close()
			return fmt.Errorf("sync dir: %w", err)
		}
	}
	l.cpf, l.cpSeq = f, seq
	return nil
}

// writeCheckpoint persists p: one slot overwritten in place (pwrite,
// fdatasync), no free space needed. Without a prepared file it prepares
// one first. commitMu must be held.
func (l *Log) writeCheckpoint(p Position) error {
	if l.cpf == nil {
		b, err := l.readCheckpointFile()
		if err != nil {
			return err
		}
		_, seq, _ := decodeCheckpointFile(b)
		return l.prepareCheckpoint(p, seq, b)
	}
	seq := l.cpSeq + 1
	if _, err := l.cpf.WriteAt(encodeCPSlot(seq, p), cpSlotOffset(seq)); err != nil {
		return fmt.Errorf("write checkpoint: %w", err)
	}
	if err := datasync(l.cpf); err != nil {
		return fmt.Errorf("sync checkpoint: %w", err)
	}
	l.cpSeq = seq
	return nil
}
