package outbox

import (
	"bytes"
	"context"
	"testing"
	"time"
)

func BenchmarkAppend(b *testing.B) {
	l := openLog(b, Options{Dir: b.TempDir()})
	data := bytes.Repeat([]byte("x"), 1024)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.SetParallelism(32) // many publishers per CPU, as behind an HTTP server
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := l.Append(context.Background(), data); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	if st := l.Stats(); st.Syncs > 0 {
		b.ReportMetric(float64(st.Appends)/float64(st.Syncs), "records/fsync")
	}
}

func BenchmarkEncode(b *testing.B) {
	rec := Record{Time: time.Now(), Data: bytes.Repeat([]byte("x"), 1024)}
	buf := make([]byte, 0, 2048)
	b.SetBytes(int64(len(rec.Data)))
	b.ReportAllocs()
	for b.Loop() {
		buf = appendFrame(buf[:0], rec)
	}
}

func BenchmarkDecode(b *testing.B) {
	frame := appendFrame(nil, Record{Time: time.Now(), Data: bytes.Repeat([]byte("x"), 1024)})
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := decodeFrame(frame); err != nil {
			b.Fatal(err)
		}
	}
}
