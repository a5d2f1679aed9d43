package delivery

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/ferry-sidecar/ferry/tracing"
)

// BenchmarkDeliverTracing is BenchmarkDeliver with tracing on, exporting
// over OTLP/HTTP to a loopback collector that drains the bodies: "off"
// (no endpoint: the tracer ferry builds then), "sampled" (the app's
// traceparent is sampled: every process and attempt span is exported) and
// "ratio10" (no traceparent, traceidratio 0.1).
func BenchmarkDeliverTracing(b *testing.B) {
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer collector.Close()
	sampled := http.Header{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}
	for _, c := range []struct {
		name string
		env  map[string]string
		hdr  http.Header
	}{
		{"off", nil, sampled},
		{"sampled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": collector.URL}, sampled},
		{"ratio10", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": collector.URL,
			"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}, http.Header{}},
	} {
		b.Run(c.name, func(b *testing.B) {
			for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
				"OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER"} {
				b.Setenv(k, c.env[k])
			}
			tr, err := tracing.New(context.Background(), tracing.Settings{ServiceName: "billing"})
			if err != nil {
				b.Fatal(err)
			}
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				_ = tr.Shutdown(ctx)
			}()
			benchDeliver(b, c.hdr, func(d *Deps) { d.Tracer = tr })
		})
	}
}
