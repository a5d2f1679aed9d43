package outbox

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"
)

func FuzzDecode(f *testing.F) {
	f.Add([]byte{})
	f.Add(appendFrame(nil, Record{Time: time.Unix(1, 2), Data: []byte("hello")}))
	f.Add(make([]byte, 32))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, n, err := decodeFrame(b)
		if err != nil {
			if n != 0 {
				t.Fatalf("error %v with n = %d", err, n)
			}
			return
		}
		if n < frameOverhead || n > len(b) {
			t.Fatalf("n = %d for %d bytes", n, len(b))
		}
		if again := appendFrame(nil, rec); !bytes.Equal(again, b[:n]) {
			t.Fatalf("re-encoding differs:\n%x\n%x", again, b[:n])
		}
	})
}

// FuzzTruncate encodes records split from the input, cuts the stream
// anywhere and checks that decoding yields exactly the records wholly before
// the cut.
func FuzzTruncate(f *testing.F) {
	f.Add([]byte("a\x00bc\x00\x00def"), uint(9))
	f.Add([]byte("single"), uint(100))
	f.Add([]byte{}, uint(0))
	f.Add(bytes.Repeat([]byte("x\x00"), 40), uint(333))
	f.Fuzz(func(t *testing.T, in []byte, cut uint) {
		records := bytes.Split(in, []byte{0})
		var stream []byte
		var ends []int
		for i, data := range records {
			stream = appendFrame(stream, Record{Time: time.Unix(int64(i), int64(len(data))), Data: data})
			ends = append(ends, len(stream))
		}
		c := int(cut % uint(len(stream)+1))
		b := stream[:c]
		for i := 0; ; i++ {
			rec, n, err := decodeFrame(b)
			if err != nil {
				whole := 0
				for whole < len(ends) && ends[whole] <= c {
					whole++
				}
				if i != whole {
					t.Fatalf("decoded %d records, %d lie wholly before the cut at %d", i, whole, c)
				}
				wantErr := io.ErrUnexpectedEOF
				if len(b) == 0 {
					wantErr = io.EOF
				}
				if !errors.Is(err, wantErr) {
					t.Fatalf("after %d records: %v, want %v", i, err, wantErr)
				}
				return
			}
			if i >= len(records) || !bytes.Equal(rec.Data, records[i]) || rec.Time.UnixNano() != time.Unix(int64(i), int64(len(records[i]))).UnixNano() {
				t.Fatalf("record %d: %q, want %q", i, rec.Data, records[i])
			}
			b = b[n:]
		}
	})
}
