package delivery

import (
	"log/slog"

	"github.com/ferry-sidecar/ferry/stream"
	"github.com/ferry-sidecar/ferry/tracing"
)

// Reasons of the "wait" events on a process span: waits that spend no
// attempt (tracing.WaitReasonKey).
const (
	waitRateLimit  = "rate-limit"          // FERRY_DELIVERY_RATE
	waitBreaker    = "breaker-open"        // the topic's breaker refused the attempt
	waitHeld       = "duplicate-in-flight" // another copy of the id is being delivered here
	waitDedupeBusy = "dedupe-busy"         // another replica holds the id's dedupe claim
	waitRedis      = "redis"               // Redis did not answer (dedupe, count, ack, dead letter)
	waitApp        = "app-unavailable"     // the app is unreachable: parked until it is back
)

// resultAbandoned ends an attempt span cut off by shutdown (not counted as
// an attempt: the entry stays pending).
const resultAbandoned = "abandoned"

// startProcess starts d's process span, under the publisher's stored
// context ("tp") or the app's carried traceparent. With tracing off it is
// the zero Process, and costs no allocation.
func (s *Subscriber) startProcess(d *delivery) tracing.Process {
	if !s.deps.Tracer.Enabled() {
		return tracing.Process{}
	}
	tp, _ := d.msg.Fields[stream.FieldTraceparent].(string)
	return s.deps.Tracer.StartProcess(tracing.Message{
		Topic: s.opts.Topic, Group: s.opts.AppID, ID: d.msg.ID,
		Traceparent: tp, Header: d.msg.Header, Replay: d.replay,
	})
}

// traceOutcome is o completed with d's last attempt, for Process.End.
func (d *delivery) traceOutcome(o tracing.Outcome) tracing.Outcome {
	if d.lastResult != "" {
		o.Attempt, o.Result = d.attempt, string(d.lastResult)
	}
	o.Status = d.lastStatus
	return o
}

// endTraces ends the process spans of the deliveries left pending at
// stop, once every goroutine of Run has ended: their attempt spans keep
// their parent, and a redelivery starts a new process span.
func (s *Subscriber) endTraces() {
	if !s.deps.Tracer.Enabled() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.tracked {
		d.trace.End(d.traceOutcome(tracing.Outcome{}))
	}
}

// traceValue puts the trace_id and span_id of d on a log line: its
// process span, or with tracing off the publisher's stored context. Pass
// it as `"", traceValue{d}` (the empty key inlines the group): it is
// worked out only when the line is written, and being one pointer it
// boxes without an allocation, so a disabled debug line costs nothing.
type traceValue struct{ d *delivery }

// LogValue implements slog.LogValuer: an inlined group, or the empty
// value, which handlers drop.
func (v traceValue) LogValue() slog.Value {
	a := v.d.trace.LogAttr()
	if a.Value.Kind() != slog.KindGroup {
		tp, _ := v.d.msg.Fields[stream.FieldTraceparent].(string)
		if tp == "" {
			tp = v.d.msg.Header.Get("Traceparent")
		}
		a = tracing.ParentLogAttr(tp)
	}
	return a.Value
}
