package tracing

import (
	"context"
	"encoding/hex"
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Attribute keys ferry adds to the semantic conventions' (ferry.* is its
// own namespace, as the conventions ask of custom attributes).
const (
	AttemptKey          = attribute.Key("ferry.attempt")           // 1-based attempt number (Ferry-Attempt)
	ResultKey           = attribute.Key("ferry.result")            // the result label of ferry_delivery_attempts_total
	DedupeHitKey        = attribute.Key("ferry.dedupe.hit")        // acked without delivery: the group had it already
	DeadLetterReasonKey = attribute.Key("ferry.deadletter.reason") // poison, exhausted, expired, dropped
	ReplayKey           = attribute.Key("ferry.replay")            // a replayed entry (Ferry-Replay: true)
	DelayKey            = attribute.Key("ferry.delay")             // seconds until the next try, on retry and wait events
	WaitReasonKey       = attribute.Key("ferry.wait.reason")       // why a delivery waited without spending an attempt
)

const (
	resultSuccess     = "success"
	traceparentLen    = 55
	headerTraceparent = "Traceparent"
	headerTracestate  = "Tracestate"
	operationPublish  = "publish"
	operationSend     = "send"
	operationProcess  = "process"
	eventRetry        = "retry"
	eventWait         = "wait"
)

// system is the messaging.system value of ferry's spans. The conventions
// list no value for Redis Streams, and what the app talks to is ferry: its
// API, its wire format, its delivery semantics; Redis is ferry's storage.
// A custom value is what the conventions prescribe for a system not listed.
var system = semconv.MessagingSystemKey.String("ferry")

// Span kinds, made once: an option is an interface value.
var (
	kindServer   = trace.WithSpanKind(trace.SpanKindServer)
	kindProducer = trace.WithSpanKind(trace.SpanKindProducer)
	kindConsumer = trace.WithSpanKind(trace.SpanKindConsumer)
	kindClient   = trace.WithSpanKind(trace.SpanKindClient)
)

// Publish is the server span of one publish request. Its zero value (an
// off Tracer) does nothing.
type Publish struct{ span trace.Span }

// StartPublish starts the SERVER span "publish {topic}" as a child of the
// request's W3C traceparent (a new trace when there is none). The returned
// context carries it (for LogAttr). End it when the answer is written.
func (t *Tracer) StartPublish(ctx context.Context, h http.Header, topic string) (context.Context, Publish) {
	if !t.Enabled() {
		return ctx, Publish{}
	}
	// Canonical names: HeaderCarrier's lower-case lookups would allocate.
	ctx = propagation.TraceContext{}.Extract(ctx, carrier{h.Get(headerTraceparent), h.Get(headerTracestate)})
	ctx, span := t.tracer.Start(ctx, operationPublish+" "+topic,
		kindServer,
		trace.WithAttributes(
			system,
			semconv.MessagingDestinationName(topic),
			// The publish span is the message's creation context: the relay's
			// send span links to it and the consumer's process span hangs under it.
			semconv.MessagingOperationTypeCreate,
			semconv.MessagingOperationName(operationPublish),
			semconv.HTTPRequestMethodPost,
		))
	return ctx, Publish{span: span}
}

// SetMessageID records the id of a single-message publish.
func (p Publish) SetMessageID(id string) {
	if p.span == nil || !p.span.IsRecording() {
		return
	}
	p.span.SetAttributes(semconv.MessagingMessageID(id))
}

// SetBatch records a batch publish of n messages (CloudEvents batch, Dapr
// bulk): one span for the request, its context stored with every message.
func (p Publish) SetBatch(n int) {
	if p.span == nil || !p.span.IsRecording() {
		return
	}
	p.span.SetAttributes(semconv.MessagingBatchMessageCount(n))
}

// Traceparent is the value to store in the record's stream.FieldTraceparent, or ""
// when tracing is off (store nothing then). It is set also when the span is
// sampled out: its flags tell the other side not to sample either.
func (p Publish) Traceparent() string {
	if p.span == nil {
		return ""
	}
	return formatTraceparent(p.span.SpanContext())
}

// End ends the span with the HTTP status of the answer; a 5xx is an error
// (a server span's 4xx is the client's).
func (p Publish) End(status int) {
	if p.span == nil {
		return
	}
	if p.span.IsRecording() {
		p.span.SetAttributes(semconv.HTTPResponseStatusCode(status))
		if status >= 500 {
			p.span.SetAttributes(semconv.ErrorTypeKey.String(strconv.Itoa(status)))
			p.span.SetStatus(codes.Error, "")
		}
	}
	p.span.End()
}

// Send is the relay's record of one pipelined XADD batch. Its zero value
// (an off Tracer) does nothing. Use one per batch: StartSend before the
// pipeline is built, Add per record, End when Exec returned.
type Send struct {
	t     *Tracer
	start time.Time
	recs  []sendRec
}

type sendRec struct {
	topic, id string
	sc        trace.SpanContext
}

// StartSend notes the start of a batch.
func (t *Tracer) StartSend() Send {
	if !t.Enabled() {
		return Send{}
	}
	return Send{t: t, start: time.Now()}
}

// Add records one record of the batch: its topic, message id and stored
// stream.FieldTraceparent ("" for records written while tracing was off).
func (s *Send) Add(topic, msgID, traceparent string) {
	if s.t == nil {
		return
	}
	s.recs = append(s.recs, sendRec{topic: topic, id: msgID, sc: parseTraceparent(traceparent, "")})
}

// End makes the PRODUCER spans of the batch, one "send {topic}" per topic
// in it, from StartSend to now. Following the messaging conventions for
// batch sends, each links to the publish span of every record it carried
// (with messaging.message.id on the link); it is also the child of the
// first sampled of them, so that a sampled message's own trace shows the
// time it spent in the outbox. err is the pipeline's error, already
// redacted by the caller: it becomes the status description.
func (s *Send) End(err error) {
	if s.t == nil || len(s.recs) == 0 {
		return
	}
	end := time.Now()
	done := make([]bool, len(s.recs))
	for i := range s.recs {
		if done[i] {
			continue
		}
		topic := s.recs[i].topic
		var parent trace.SpanContext
		links := make([]trace.Link, 0, len(s.recs)-i)
		n := 0
		for j := i; j < len(s.recs); j++ {
			r := &s.recs[j]
			if done[j] || r.topic != topic {
				continue
			}
			done[j] = true
			n++
			if !r.sc.IsValid() {
				continue
			}
			if !parent.IsValid() || (!parent.IsSampled() && r.sc.IsSampled()) {
				parent = r.sc
			}
			links = append(links, trace.Link{SpanContext: r.sc, Attributes: []attribute.KeyValue{semconv.MessagingMessageID(r.id)}})
		}
		attrs := []attribute.KeyValue{
			system,
			semconv.MessagingDestinationName(topic),
			semconv.MessagingOperationTypeSend,
			semconv.MessagingOperationName(operationSend),
		}
		if n == 1 {
			attrs = append(attrs, semconv.MessagingMessageID(s.recs[i].id))
		} else {
			attrs = append(attrs, semconv.MessagingBatchMessageCount(n))
		}
		ctx := context.Background()
		if parent.IsValid() {
			ctx = trace.ContextWithRemoteSpanContext(ctx, parent)
		}
		_, span := s.t.tracer.Start(ctx, operationSend+" "+topic,
			kindProducer,
			trace.WithTimestamp(s.start),
			trace.WithLinks(links...),
			trace.WithAttributes(attrs...))
		if err != nil {
			span.SetAttributes(semconv.ErrorTypeKey.String("redis"))
			span.SetStatus(codes.Error, err.Error())
		}
		span.End(trace.WithTimestamp(end))
	}
	s.recs = s.recs[:0]
}

// Message is what StartProcess needs of a stream entry.
type Message struct {
	Topic string
	Group string // the consumer group: the subscriber's app id
	ID    string // ferry message id
	// Traceparent is the entry's stream.FieldTraceparent: the publisher's span.
	// Empty (the publisher traced nothing) ⇒ the app's carried traceparent
	// in Header is the parent; neither ⇒ a new trace.
	Traceparent string
	Header      http.Header // carried headers (h:*): Traceparent, Tracestate
	Replay      bool
}

// Process is the consumer span of one message on its way to the app, from
// the first attempt to the ack or dead letter, across every retry. Keep it
// with the delivery; its zero value (an off Tracer) does nothing.
type Process struct {
	t    *Tracer
	span trace.Span
}

// StartProcess starts the CONSUMER span "process {topic}" as a child of the
// publisher's stored context.
func (t *Tracer) StartProcess(m Message) Process {
	if !t.Enabled() {
		return Process{}
	}
	ts := m.Header.Get(headerTracestate)
	sc := parseTraceparent(m.Traceparent, ts)
	if !sc.IsValid() {
		sc = parseTraceparent(m.Header.Get(headerTraceparent), ts)
	}
	ctx := context.Background()
	if sc.IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, sc)
	}
	attrs := make([]attribute.KeyValue, 0, 7)
	attrs = append(attrs,
		system,
		semconv.MessagingDestinationName(m.Topic),
		semconv.MessagingConsumerGroupName(m.Group),
		semconv.MessagingMessageID(m.ID),
		semconv.MessagingOperationTypeProcess,
		semconv.MessagingOperationName(operationProcess),
	)
	if m.Replay {
		attrs = append(attrs, ReplayKey.Bool(true))
	}
	_, span := t.tracer.Start(ctx, operationProcess+" "+m.Topic,
		kindConsumer,
		trace.WithAttributes(attrs...))
	return Process{t: t, span: span}
}

// Attempt is the client span of one HTTP attempt to the app. Its zero value
// does nothing.
type Attempt struct{ span trace.Span }

// StartAttempt starts the CLIENT span "POST {route}" under the process
// span. Call Inject on the request's headers, then End with its outcome.
func (p Process) StartAttempt(route string, attempt int) Attempt {
	if p.span == nil {
		return Attempt{}
	}
	ctx := trace.ContextWithSpan(context.Background(), p.span)
	_, span := p.t.tracer.Start(ctx, http.MethodPost+" "+route,
		kindClient,
		trace.WithAttributes(
			semconv.HTTPRequestMethodPost,
			semconv.URLTemplate(route),
			AttemptKey.Int(attempt),
		))
	return Attempt{span: span}
}

// Inject sets the request's traceparent (and tracestate) to the attempt
// span, replacing the carried ones: the app's spans hang under ferry's.
// With tracing off it leaves h alone, so the app gets the publisher's.
func (a Attempt) Inject(h http.Header) {
	if a.span == nil {
		return
	}
	sc := a.span.SpanContext()
	h.Set(headerTraceparent, formatTraceparent(sc))
	if ts := sc.TraceState(); ts.Len() > 0 {
		h.Set(headerTracestate, ts.String())
	}
}

// End ends the attempt with the app's status (0: no answer) and the result
// label ferry_delivery_attempts_total counts it under; anything but
// "success" is an error.
func (a Attempt) End(status int, result string) {
	if a.span == nil {
		return
	}
	if a.span.IsRecording() {
		if status > 0 {
			a.span.SetAttributes(semconv.HTTPResponseStatusCode(status))
		}
		a.span.SetAttributes(ResultKey.String(result))
		if result != resultSuccess {
			et := result
			if status > 0 {
				et = strconv.Itoa(status)
			}
			a.span.SetAttributes(semconv.ErrorTypeKey.String(et))
			a.span.SetStatus(codes.Error, result)
		}
	}
	a.span.End()
}

// Retry records on the process span that the attempt that ended with
// result is retried after delay: the gap between two attempt spans.
func (p Process) Retry(result string, delay time.Duration) {
	if p.span == nil || !p.span.IsRecording() {
		return
	}
	p.span.AddEvent(eventRetry, trace.WithAttributes(ResultKey.String(result), DelayKey.Float64(delay.Seconds())))
}

// Wait records a wait that spends no attempt (breaker open, app unhealthy,
// rate limit, dedupe claim busy, Redis down), with its reason.
func (p Process) Wait(reason string, delay time.Duration) {
	if p.span == nil || !p.span.IsRecording() {
		return
	}
	p.span.AddEvent(eventWait, trace.WithAttributes(WaitReasonKey.String(reason), DelayKey.Float64(delay.Seconds())))
}

// Outcome is how a delivery ended, for Process.End.
type Outcome struct {
	Attempt    int    // the last attempt's number; 0 ⇒ none was made
	Result     string // the last attempt's result label; "" ⇒ none
	DedupeHit  bool   // acked without delivery
	DeadLetter string // the dead-letter reason; non-empty ⇒ the span is an error
	Status     int    // the app's last status, if any
}

// End ends the process span: after the ack, the dead letter, or a dedupe
// hit. A delivery still pending at shutdown ends with Outcome{} (it is
// redelivered later, under a new process span).
func (p Process) End(o Outcome) {
	if p.span == nil {
		return
	}
	if p.span.IsRecording() {
		attrs := make([]attribute.KeyValue, 0, 5)
		if o.Attempt > 0 {
			attrs = append(attrs, AttemptKey.Int(o.Attempt))
		}
		if o.Result != "" {
			attrs = append(attrs, ResultKey.String(o.Result))
		}
		if o.DedupeHit {
			attrs = append(attrs, DedupeHitKey.Bool(true))
		}
		if o.Status > 0 {
			attrs = append(attrs, semconv.HTTPResponseStatusCode(o.Status))
		}
		if o.DeadLetter != "" {
			attrs = append(attrs, DeadLetterReasonKey.String(o.DeadLetter), semconv.ErrorTypeKey.String(o.DeadLetter))
			p.span.SetStatus(codes.Error, "dead letter: "+o.DeadLetter)
		}
		p.span.SetAttributes(attrs...)
	}
	p.span.End()
}

func (p Process) spanContext() trace.SpanContext {
	if p.span == nil {
		return trace.SpanContext{}
	}
	return p.span.SpanContext()
}

func (a Attempt) spanContext() trace.SpanContext {
	if a.span == nil {
		return trace.SpanContext{}
	}
	return a.span.SpanContext()
}

// formatTraceparent writes sc as a version 00 W3C traceparent.
func formatTraceparent(sc trace.SpanContext) string {
	var b [traceparentLen]byte
	tid, sid := sc.TraceID(), sc.SpanID()
	b[0], b[1], b[2] = '0', '0', '-'
	hex.Encode(b[3:35], tid[:])
	b[35] = '-'
	hex.Encode(b[36:52], sid[:])
	b[52] = '-'
	hex.Encode(b[53:55], []byte{byte(sc.TraceFlags())})
	return string(b[:])
}

// parseTraceparent reads a W3C traceparent (and tracestate) the way the
// propagator does; an invalid one gives the zero SpanContext.
func parseTraceparent(tp, ts string) trace.SpanContext {
	if tp == "" {
		return trace.SpanContext{}
	}
	ctx := propagation.TraceContext{}.Extract(context.Background(), carrier{tp, ts})
	return trace.SpanContextFromContext(ctx)
}

// carrier is a TextMapCarrier of one traceparent and tracestate.
type carrier struct{ tp, ts string }

func (c carrier) Get(key string) string {
	switch key {
	case "traceparent":
		return c.tp
	case "tracestate":
		return c.ts
	}
	return ""
}
func (carrier) Set(string, string) {}
func (carrier) Keys() []string     { return []string{"traceparent", "tracestate"} }
