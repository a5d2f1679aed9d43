package publish

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-sidecar/ferry/metrics"
	"github.com/ferry-sidecar/ferry/outbox"
	"github.com/ferry-sidecar/ferry/tracing"
)

// BenchmarkPublishHandler runs the publish API in process, from routing to
// the 202, with a real outbox (fsync'd group commits) in a temp dir and many
// concurrent publishers; no relay runs. A regression guard for the
// allocations and the CPU of the publish path (go run ./bench measures it
// over the network).
func BenchmarkPublishHandler(b *testing.B) { benchPublish(b, nil) }

// benchPublish is BenchmarkPublishHandler with tr as Options.Tracer.
func benchPublish(b *testing.B, tr *tracing.Tracer) {
	ob, err := outbox.Open(outbox.Options{Dir: b.TempDir(), MaxBytes: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ob.Close() })
	h := New(Options{AppID: "bench", MaxBodyBytes: 1 << 20, MaxTopicLabels: 100, Tracer: tr}, ob, metrics.New(prometheus.NewRegistry(), "bench", nil), nil).Handler()
	body := bytes.Repeat([]byte("x"), 1024)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.SetParallelism(32) // many keep-alive clients per CPU
	b.ResetTimer()
	cpu := cpuTime()
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
	// Process CPU per publish, fsyncs and the exporter's goroutines
	// included: on a shared machine it says more than the wall clock.
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
	if st := ob.Stats(); st.Syncs > 0 {
		b.ReportMetric(float64(st.Appends)/float64(st.Syncs), "events/fsync")
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// discardWriter is a ResponseWriter that keeps only the status.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }
