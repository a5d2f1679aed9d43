package publish

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-sidecar/ferry/metrics"
	"github.com/ferry-sidecar/ferry/stream"
	"github.com/ferry-sidecar/ferry/tracing"
)

// otelVars are the variables that turn tracing on or shape it; the tests
// set each one (blank is unset to the SDK and to tracing.New).
var otelVars = []string{
	"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_SAMPLER",
	"OTEL_TRACES_SAMPLER_ARG", "OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER",
}

func setOtel(tb testing.TB, env map[string]string) {
	for _, k := range otelVars {
		tb.Setenv(k, env[k])
	}
}

func newTracer(tb testing.TB) *tracing.Tracer {
	tb.Helper()
	tr, err := tracing.New(context.Background(), tracing.Settings{ServiceName: "orders"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := tr.Shutdown(ctx); err != nil {
			tb.Error(err)
		}
	})
	return tr
}

// lastRecord is an Appender that keeps the last record.
type lastRecord struct{ data []byte }

func (l *lastRecord) Append(_ context.Context, data []byte) error {
	l.data = append(l.data[:0], data...)
	return nil
}

func (l *lastRecord) AppendBatch(_ context.Context, records [][]byte) error {
	if len(records) > 0 {
		l.data = append(l.data[:0], records[len(records)-1]...)
	}
	return nil
}

// With no OTLP variable set, the tracer is off and a publish allocates
// exactly what it allocates with no tracer at all, and stores no "tp".
func TestTracingOffCostsNothing(t *testing.T) {
	setOtel(t, nil)
	off := newTracer(t)
	if off.Enabled() {
		t.Fatal("tracing on with no OTLP endpoint set")
	}
	// allocs is the mean number of allocations per publish over many runs.
	// testing.AllocsPerRun truncates the mean to a whole number, and with
	// -race sync.Pool drops a quarter of what is put back at random, so
	// the pooled record buffer is reallocated on some publishes only: a
	// truncated mean flips between two values. The mean does not.
	allocs := func(tr *tracing.Tracer) (float64, *lastRecord) {
		out := &lastRecord{}
		h := New(Options{AppID: "a", MaxBodyBytes: 1 << 20, MaxTopicLabels: 10, Tracer: tr}, out,
			metrics.New(prometheus.NewRegistry(), "t", nil), nil).Handler()
		r := httptest.NewRequest(http.MethodPost, "/v1/publish/orders", nil)
		r.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		r.Header.Set("Idempotency-Key", "k1")
		w := &discardWriter{h: http.Header{}}
		publish := func() {
			r.Body = io.NopCloser(strings.NewReader("{}"))
			clear(w.h)
			h.ServeHTTP(w, r)
			if w.code != http.StatusAccepted {
				t.Fatalf("status %d", w.code)
			}
		}
		publish() // warm up
		const runs = 4000
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range runs {
			publish()
		}
		runtime.ReadMemStats(&after)
		return float64(after.Mallocs-before.Mallocs) / runs, out
	}
	without, _ := allocs(nil)
	with, out := allocs(off)
	if with-without > 0.5 {
		t.Errorf("allocs per publish: %.2f with the off tracer, %.2f without a tracer", with, without)
	}
	ev, err := stream.DecodeEvent(out.data)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(ev.Fields); i += 2 {
		if ev.Fields[i] == stream.FieldTraceparent {
			t.Errorf("record has %s=%s with tracing off", ev.Fields[i], ev.Fields[i+1])
		}
	}
}

// BenchmarkPublishHandlerTracing is BenchmarkPublishHandler with tracing
// on, exporting over OTLP/HTTP to a loopback collector that drains the
// bodies: at 100% (the app's traceparent is sampled) and at 10% of new
// traces (no traceparent, parentbased_traceidratio 0.1). Compare its
// ns/op with BenchmarkPublishHandler's.
func BenchmarkPublishHandlerTracing(b *testing.B) {
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer collector.Close()
	for _, c := range []struct {
		name string
		env  map[string]string
	}{
		{"sampled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": collector.URL}},
		{"ratio10", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": collector.URL,
			"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}},
	} {
		b.Run(c.name, func(b *testing.B) {
			setOtel(b, c.env)
			benchPublish(b, newTracer(b))
		})
	}
}
