package sidecar

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkPublishHandler runs the publish API in process, from routing to
// the 202, with a real outbox (fsync'd group commits) in a temp dir and many
// concurrent publishers; no relay runs. A regression guard for the
// allocations and the CPU of the publish path (go run ./bench measures it
// over the network).
func BenchmarkPublishHandler(b *testing.B) {
	cfg, err := LoadConfig(map[string]string{
		"FERRY_APP_ID":     "bench",
		"FERRY_OUTBOX_DIR": b.TempDir(),
		"HOSTNAME":         "bench-0",
	})
	if err != nil {
		b.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	s, err := New(cfg, nil, reg, reg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		s.outbox.Close()
		s.rdb.Close()
	})
	h := s.publishHandler()
	body := bytes.Repeat([]byte("x"), 1024)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.SetParallelism(32) // many keep-alive clients per CPU
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := httptest.NewRequest(http.MethodPost, "/v1/publish/orders", nil)
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		w := &discardWriter{h: http.Header{}}
		for pb.Next() {
			r.Body = io.NopCloser(bytes.NewReader(body))
			clear(w.h)
			w.code = 0
			h.ServeHTTP(w, r)
			if w.code != http.StatusAccepted {
				b.Errorf("status %d, want 202", w.code)
				return
			}
		}
	})
	b.StopTimer()
	if st := s.outbox.Stats(); st.Syncs > 0 {
		b.ReportMetric(float64(st.Appends)/float64(st.Syncs), "events/fsync")
	}
}

// discardWriter is a ResponseWriter that keeps only the status.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }

// BenchmarkEventEncodeDecode is one event's way through the outbox record
// format: encoded by publish, decoded by the relay into XADD values.
func BenchmarkEventEncodeDecode(b *testing.B) {
	e := &event{
		Topic: "orders",
		Fields: []string{fieldID, "0190c6e2-8a3b-7cde-9f01-23456789abcd", fieldSource, "orders-svc",
			fieldContentType, "application/json", headerPrefix + "Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		Body: bytes.Repeat([]byte("x"), 1024),
	}
	buf := make([]byte, 0, 2048)
	now := time.Now()
	b.SetBytes(int64(len(e.Body)))
	b.ReportAllocs()
	for b.Loop() {
		buf = appendEvent(buf[:0], e)
		got, err := decodeEvent(buf)
		if err != nil {
			b.Fatal(err)
		}
		if vals := streamValues(&got, now); len(vals) != len(e.Fields)+4 {
			b.Fatalf("%d stream values, want %d", len(vals), len(e.Fields)+4)
		}
	}
}
