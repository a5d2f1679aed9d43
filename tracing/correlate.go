package tracing

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
)

// LogAttr gives trace_id and span_id of the span in ctx for a log line, as
// one attribute (an inlined group); with no valid span it is the empty Attr,
// which handlers drop.
func LogAttr(ctx context.Context) slog.Attr { return logAttr(trace.SpanContextFromContext(ctx)) }

// LogAttr gives trace_id and span_id of the process span (see LogAttr).
func (p Process) LogAttr() slog.Attr { return logAttr(p.spanContext()) }

// ParentLogAttr gives trace_id and span_id of a stored traceparent: the
// publisher's span, for the log lines of a ferry whose tracing is off (or
// of an entry it cannot process, such as a corrupt one).
func ParentLogAttr(traceparent string) slog.Attr {
	return logAttr(parseTraceparent(traceparent, ""))
}

func logAttr(sc trace.SpanContext) slog.Attr {
	if !sc.IsValid() {
		return slog.Attr{}
	}
	return slog.Attr{Value: slog.GroupValue(
		slog.String("trace_id", sc.TraceID().String()),
		slog.String("span_id", sc.SpanID().String()),
	)}
}

// ExemplarLabels are the exemplar labels naming the sampled span in ctx
// ({"trace_id": …}), or nil when there is none: an exemplar must point at a
// trace that was kept.
func ExemplarLabels(ctx context.Context) prometheus.Labels {
	return exemplar(trace.SpanContextFromContext(ctx))
}

func exemplar(sc trace.SpanContext) prometheus.Labels {
	if !sc.IsSampled() {
		return nil
	}
	return prometheus.Labels{"trace_id": sc.TraceID().String()}
}

// Observe records v on o with the exemplar of the sampled span in ctx, or
// without one. Exemplars are exposed only in the OpenMetrics format:
// promhttp.HandlerOpts{EnableOpenMetrics: true}.
func Observe(ctx context.Context, o prometheus.Observer, v float64) {
	observe(o, v, trace.SpanContextFromContext(ctx))
}

// Observe records v with the process span's trace as exemplar
// (ferry_end_to_end_seconds).
func (p Process) Observe(o prometheus.Observer, v float64) { observe(o, v, p.spanContext()) }

// Observe records v with the attempt span's trace as exemplar
// (ferry_delivery_duration_seconds).
func (a Attempt) Observe(o prometheus.Observer, v float64) { observe(o, v, a.spanContext()) }

func observe(o prometheus.Observer, v float64, sc trace.SpanContext) {
	if sc.IsSampled() {
		if eo, ok := o.(prometheus.ExemplarObserver); ok {
			eo.ObserveWithExemplar(v, exemplar(sc))
			return
		}
	}
	o.Observe(v)
}
