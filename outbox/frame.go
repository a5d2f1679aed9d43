package outbox

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"math"
	"time"
)

// Frame layout, little endian:
//
//	[0:4]  payload length (≥ 8)
//	[4:8]  CRC-32C (Castagnoli) of the payload
//	[8:16] record time, unix nanoseconds
//	[16:]  record data
const (
	headerSize    = 8
	timeSize      = 8
	frameOverhead = headerSize + timeSize
	// maxDataSize keeps the payload length within the uint32 length field.
	maxDataSize = math.MaxUint32 - timeSize
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	errBadLength   = errors.New("bad frame length")
	errBadChecksum = errors.New("bad frame checksum")
)

// payloadCRC is the checksum of the payload of a frame carrying ns and data,
// computed without assembling the payload.
func payloadCRC(ns int64, data []byte) uint32 {
	// The 8 time bytes go through the table by hand: a stack array handed
	// to crc32 escapes to the heap, one allocation per Append.
	crc := ^uint32(0)
	for i := range timeSize {
		crc = castagnoli[byte(crc)^byte(uint64(ns)>>(8*i))] ^ crc>>8
	}
	return crc32.Update(^crc, castagnoli, data)
}

// appendFrameCRC appends the frame of (ns, data) with its precomputed
// checksum crc to dst.
func appendFrameCRC(dst []byte, ns int64, data []byte, crc uint32) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(timeSize+len(data)))
	dst = binary.LittleEndian.AppendUint32(dst, crc)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(ns))
	return append(dst, data...)
}

// appendFrame appends the frame of rec to dst. len(rec.Data) must not exceed
// maxDataSize.
func appendFrame(dst []byte, rec Record) []byte {
	ns := rec.Time.UnixNano()
	return appendFrameCRC(dst, ns, rec.Data, payloadCRC(ns, rec.Data))
}

// frameLen is the length of the frame starting at b, read from its header;
// b must hold at least a header.
func frameLen(b []byte) int {
	return headerSize + int(binary.LittleEndian.Uint32(b))
}

// frameTime is the record time of the frame starting at b; b must hold at
// least headerSize+timeSize bytes.
func frameTime(b []byte) time.Time {
	return time.Unix(0, int64(binary.LittleEndian.Uint64(b[headerSize:])))
}

// decodeFrame decodes the frame at the start of b and returns its record and
// its length. rec.Data aliases b (with its capacity clipped). It returns
// io.EOF for an empty b, io.ErrUnexpectedEOF when b ends inside the frame,
// errBadLength or errBadChecksum for a damaged frame.
func decodeFrame(b []byte) (rec Record, n int, err error) {
	if len(b) == 0 {
		return Record{}, 0, io.EOF
	}
	if len(b) < headerSize {
		return Record{}, 0, io.ErrUnexpectedEOF
	}
	size := binary.LittleEndian.Uint32(b)
	if size < timeSize {
		return Record{}, 0, errBadLength
	}
	if uint64(len(b)-headerSize) < uint64(size) {
		return Record{}, 0, io.ErrUnexpectedEOF
	}
	n = headerSize + int(size)
	payload := b[headerSize:n:n]
	if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(b[4:]) {
		return Record{}, 0, errBadChecksum
	}
	rec.Time = time.Unix(0, int64(binary.LittleEndian.Uint64(payload)))
	rec.Data = payload[timeSize:]
	return rec, n, nil
}
