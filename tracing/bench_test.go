package tracing

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// event runs every helper one event meets on its way, in order: the
// publish span and its stored context, the relay's send (a batch of one),
// the process span with one attempt, its injected traceparent, both
// histogram observations and the outcome. hdr is the publish request's.
func event(tr *Tracer, hdr, out http.Header, hist prometheus.Observer) {
	_, p := tr.StartPublish(context.Background(), hdr, "orders")
	p.SetMessageID("m1")
	tp := p.Traceparent()
	p.End(http.StatusAccepted)

	s := tr.StartSend()
	s.Add("orders", "m1", tp)
	s.End(nil)

	proc := tr.StartProcess(Message{Topic: "orders", Group: "billing", ID: "m1", Traceparent: tp, Header: hdr})
	a := proc.StartAttempt("/orders", 1)
	a.Inject(out)
	a.Observe(hist, 0.004)
	a.End(http.StatusOK, "success")
	proc.Observe(hist, 0.25)
	proc.End(Outcome{Attempt: 1, Result: "success"})
}

func benchEvent(b *testing.B, env map[string]string, hdr http.Header) {
	// The collector only drains the body: what is measured is ferry's side
	// (spans, batching, protobuf, the POST), not a decoder's.
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer collector.Close()
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER"} {
		b.Setenv(k, "")
	}
	for k, v := range env {
		if v == "receiver" {
			v = collector.URL
		}
		b.Setenv(k, v)
	}
	tr, err := New(context.Background(), Settings{ServiceName: "orders"})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := tr.Shutdown(ctx); err != nil {
			b.Fatal(err)
		}
	}()
	hist := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h", Buckets: prometheus.DefBuckets})
	out := http.Header{}
	b.ReportAllocs()
	cpu := cpuTime()
	for b.Loop() {
		event(tr, hdr, out, hist)
	}
	// Process CPU time per event, the exporter's goroutines included: on a
	// shared machine it says more than the wall clock.
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkObserveBaseline is the part of BenchmarkEventOff that is not
// tracing: the two histogram observations ferry makes anyway.
func BenchmarkObserveBaseline(b *testing.B) {
	hist := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h", Buckets: prometheus.DefBuckets})
	b.ReportAllocs()
	cpu := cpuTime()
	for b.Loop() {
		hist.Observe(0.004)
		hist.Observe(0.25)
	}
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
}

// BenchmarkEventOff is the whole per-event cost with no OTLP endpoint: it
// must stay at 0 allocs/op.
func BenchmarkEventOff(b *testing.B) {
	benchEvent(b, nil, http.Header{"Traceparent": {appTraceparent}})
}

// BenchmarkEventSampled is 100% sampling (the app's traceparent is
// sampled), exporting over OTLP/HTTP to a loopback collector: 6 spans per
// event. Spans beyond the batcher's queue (OTEL_BSP_MAX_QUEUE_SIZE, 2048)
// are dropped, as in production under that load.
func BenchmarkEventSampled(b *testing.B) {
	benchEvent(b, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "receiver"}, http.Header{"Traceparent": {appTraceparent}})
}

// BenchmarkEventRatio10 is 10% sampling of new traces (parentbased_traceidratio
// 0.1, publish requests without traceparent).
func BenchmarkEventRatio10(b *testing.B) {
	benchEvent(b, map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "receiver",
		"OTEL_TRACES_SAMPLER":         "parentbased_traceidratio",
		"OTEL_TRACES_SAMPLER_ARG":     "0.1",
	}, http.Header{})
}

// BenchmarkEventNotSampled is an app that sends a traceparent with the
// sampled flag off: ferry follows its decision.
func BenchmarkEventNotSampled(b *testing.B) {
	benchEvent(b, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "receiver"},
		http.Header{"Traceparent": {"00-" + appTraceID + "-" + appSpanID + "-00"}})
}
