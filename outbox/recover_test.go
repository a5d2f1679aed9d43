package outbox

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// writeLog writes n records "r00"… into dir with perRecord records a
// segment, and closes the log.
func writeLog(t *testing.T, dir string, n, perSegment int) {
	t.Helper()
	l, err := Open(Options{Dir: dir, SegmentBytes: int64(perSegment * frame3)})
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, l, names("r", 0, n)...)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func editFile(t *testing.T, path string, edit func([]byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, edit(b), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestTornTail(t *testing.T) {
	partial := appendFrame(nil, Record{Data: []byte("torn record")})
	for _, tc := range []struct {
		name string
		edit func([]byte) []byte
		want []string
	}{
		{"partial header", func(b []byte) []byte { return append(b, partial[:5]...) }, names("r", 0, 6)},
		{"partial payload", func(b []byte) []byte { return append(b, partial[:len(partial)-3]...) }, names("r", 0, 6)},
		{"zero-filled tail", func(b []byte) []byte { return append(b, make([]byte, 4096)...) }, names("r", 0, 6)},
		{"partial frame then zeros", func(b []byte) []byte {
			return append(append(b, partial[:12]...), make([]byte, 100)...)
		}, names("r", 0, 6)},
		{"bad final frame", func(b []byte) []byte { b[len(b)-1] ^= 1; return b }, names("r", 0, 5)},
		{"zeroed final frame", func(b []byte) []byte { clear(b[len(b)-frame3:]); return b }, names("r", 0, 5)},
		{"zeroed final frames", func(b []byte) []byte { clear(b[len(b)-2*frame3+4:]); return b }, names("r", 0, 4)},
		{"bad frame then partial frame", func(b []byte) []byte {
			b[len(b)-1] ^= 1
			return append(b, partial[:len(partial)-1]...)
		}, names("r", 0, 5)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeLog(t, dir, 6, 4) // segment 1: r00–r03, segment 2: r04 r05
			last := filepath.Join(dir, "00000002.seg")
			editFile(t, last, tc.edit)

			l := openLog(t, Options{Dir: dir})
			got, _ := readAll(t, l, Position{}, 0)
			assertRecords(t, got, tc.want)
			st := l.Stats()
			if st.Corruptions != 0 || st.PendingRecords != int64(len(tc.want)) || st.PendingBytes != int64(len(tc.want)*frame3) {
				t.Fatalf("Stats = %+v", st)
			}
			wantSize := int64((len(tc.want) - 4) * frame3)
			if fi, err := os.Stat(last); err != nil || fi.Size() != wantSize {
				t.Fatalf("last segment not truncated to %d: %v, %v", wantSize, fi, err)
			}
			if m, _ := filepath.Glob(filepath.Join(dir, "*.corrupt*")); len(m) != 0 {
				t.Fatalf("torn tail quarantined: %v", m)
			}
			appendAll(t, l, "new")
			got, _ = readAll(t, l, Position{}, 0)
			assertRecords(t, got, append(tc.want, "new"))
		})
	}
}

// TestCorruption flips bytes at known offsets, like Prometheus's
// TestWALRepair_ReadingError, and asserts exactly which records survive.
func TestCorruption(t *testing.T) {
	// 12 records, 4 a segment: segment 1 r00–r03, 2 r04–r07, 3 r08–r11.
	at := func(record, byteInFrame int) int { return (record%4)*frame3 + byteInFrame }
	for _, tc := range []struct {
		name    string
		segment uint64
		edit    func([]byte) []byte
		want    []string
	}{
		{
			name:    "data of a record in the first segment",
			segment: 1,
			edit:    func(b []byte) []byte { b[at(1, frameOverhead)] ^= 0xff; return b },
			want:    append(names("r", 0, 1), names("r", 4, 12)...),
		},
		{
			name:    "checksum of the first record of a middle segment",
			segment: 2,
			edit:    func(b []byte) []byte { b[at(4, 5)] ^= 0x01; return b },
			want:    append(names("r", 0, 4), names("r", 8, 12)...),
		},
		{
			name:    "length of a record in a middle segment",
			segment: 2,
			edit:    func(b []byte) []byte { b[at(6, 0)] = 200; return b },
			want:    append(names("r", 0, 6), names("r", 8, 12)...),
		},
		{
			name:    "time of the last record of a middle segment",
			segment: 2,
			edit:    func(b []byte) []byte { b[at(7, headerSize+2)] ^= 0x10; return b },
			want:    append(names("r", 0, 7), names("r", 8, 12)...),
		},
		{
			name:    "incomplete frame ending a middle segment",
			segment: 2,
			edit:    func(b []byte) []byte { return b[:len(b)-2] },
			want:    append(names("r", 0, 7), names("r", 8, 12)...),
		},
		{
			name:    "zeroed record in a middle segment",
			segment: 2,
			edit:    func(b []byte) []byte { clear(b[at(5, 0):at(6, 0)]); return b },
			want:    append(names("r", 0, 5), names("r", 8, 12)...),
		},
		{
			name:    "record followed by valid records in the last segment",
			segment: 3,
			edit:    func(b []byte) []byte { b[at(9, frameOverhead+1)] ^= 0x01; return b },
			want:    names("r", 0, 9),
		},
		{
			name:    "garbage length followed by data in the last segment",
			segment: 3,
			edit:    func(b []byte) []byte { copy(b[at(10, 0):], []byte{3, 0, 0, 0}); return b },
			want:    names("r", 0, 10),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeLog(t, dir, 12, 4)
			seg := filepath.Join(dir, segmentName(tc.segment))
			orig, err := os.ReadFile(seg)
			if err != nil {
				t.Fatal(err)
			}
			editFile(t, seg, tc.edit)
			edited, _ := os.ReadFile(seg)

			l := openLog(t, Options{Dir: dir})
			got, _ := readAll(t, l, Position{}, 0)
			assertRecords(t, got, tc.want)
			st := l.Stats()
			if st.Corruptions != 1 || st.PendingRecords != int64(len(tc.want)) || st.PendingBytes != int64(len(tc.want)*frame3) {
				t.Fatalf("Stats = %+v", st)
			}
			moved, err := os.ReadFile(seg + ".corrupt")
			if err != nil {
				t.Fatalf("no .corrupt file: %v", err)
			}
			if !bytes.Equal(moved, edited) {
				t.Fatal(".corrupt file does not hold the damaged segment as found")
			}
			repaired, err := os.ReadFile(seg)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(orig, repaired) || len(repaired)%frame3 != 0 {
				t.Fatalf("repaired segment (%d bytes) is not a frame prefix of the original", len(repaired))
			}

			// The log goes on, and a second Open finds nothing to repair.
			appendAll(t, l, "new")
			l.Close()
			l2 := openLog(t, Options{Dir: dir})
			got, _ = readAll(t, l2, Position{}, 0)
			assertRecords(t, got, append(tc.want, "new"))
			if st := l2.Stats(); st.Corruptions != 0 {
				t.Fatalf("second Open: Stats = %+v", st)
			}
		})
	}
}

func TestQuarantineTwice(t *testing.T) {
	dir := t.TempDir()
	writeLog(t, dir, 8, 4)
	seg := filepath.Join(dir, segmentName(1))
	for round := range 2 {
		editFile(t, seg, func(b []byte) []byte { b[len(b)-1] ^= 1; return b })
		l, err := Open(Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if st := l.Stats(); st.Corruptions != 1 {
			t.Fatalf("round %d: Stats = %+v", round, st)
		}
		l.Close()
	}
	for _, name := range []string{".corrupt", ".corrupt.1"} {
		if _, err := os.Stat(seg + name); err != nil {
			t.Fatalf("missing %s: %v", name, err)
		}
	}
}

func TestQuarantineCutShort(t *testing.T) {
	dir := t.TempDir()
	writeLog(t, dir, 8, 4)
	seg := filepath.Join(dir, segmentName(1))
	b, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	// A crash after renaming the segment aside, before renaming the repaired
	// copy into place.
	if err := os.Rename(seg, seg+".corrupt"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(seg+".tmp", b[:2*frame3], 0o644); err != nil {
		t.Fatal(err)
	}
	l := openLog(t, Options{Dir: dir})
	got, _ := readAll(t, l, Position{}, 0)
	assertRecords(t, got, append(names("r", 0, 2), names("r", 4, 8)...))
	if _, err := os.Stat(seg + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("tmp left behind: %v", err)
	}
	appendAll(t, l, "new")
	e, err := l.Read(Position{2, 4 * frame3}, 1, 0)
	if err != nil || len(e) != 1 || e[0].Next.Segment != 3 {
		t.Fatalf("new record: %v, %v; want it in segment 3", e, err)
	}
}
