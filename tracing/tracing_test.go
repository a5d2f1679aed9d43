package tracing

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/ferry-sidecar/ferry/internal/otlptest"
	"github.com/ferry-sidecar/ferry/stream"
)

// cleanEnv blanks every OTEL_* variable of the test process (blank is unset
// to the SDK and to readEnv), so that tests see only what they set.
func cleanEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "OTEL_") {
			t.Setenv(k, "")
		}
	}
}

func setenv(t *testing.T, kv map[string]string) {
	t.Helper()
	for k, v := range kv {
		t.Setenv(k, v)
	}
}

func newTracer(t *testing.T, service string) *Tracer {
	t.Helper()
	tr, err := New(context.Background(), Settings{ServiceName: service, ServiceVersion: "test", InstanceID: service + "-0"})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if !tr.Enabled() {
		t.Fatal("tracing is off with an endpoint set")
	}
	return tr
}

func shutdown(t *testing.T, trs ...*Tracer) {
	t.Helper()
	for _, tr := range trs {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := tr.Shutdown(ctx)
		cancel()
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	}
}

func TestOffWithoutEndpoint(t *testing.T) {
	cases := map[string]map[string]string{
		"nothing set": {},
		// Everything but an endpoint: still off, and nothing is checked.
		"no endpoint":   {"OTEL_TRACES_SAMPLER": "always_on", "OTEL_SERVICE_NAME": "x", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
		"sdk disabled":  {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_SDK_DISABLED": "true"},
		"exporter none": {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_TRACES_EXPORTER": "none"},
	}
	for name, env := range cases {
		t.Run(name, func(t *testing.T) {
			cleanEnv(t)
			setenv(t, env)
			before := runtime.NumGoroutine()
			tr, err := New(context.Background(), Settings{ServiceName: "orders"})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if tr.Enabled() || tr.provider != nil {
				t.Fatal("tracing is on")
			}
			if after := runtime.NumGoroutine(); after != before {
				t.Fatalf("goroutines: %d before New, %d after", before, after)
			}
			if err := tr.Shutdown(context.Background()); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
		})
	}
}

// TestOffAllocatesNothing runs every helper on an off Tracer (and a nil
// one) and requires 0 allocations each: the guard for the hot paths.
func TestOffAllocatesNothing(t *testing.T) {
	cleanEnv(t)
	off, err := New(context.Background(), Settings{ServiceName: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	hist := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h"})
	hdr := http.Header{"Traceparent": {appTraceparent}}
	msg := Message{Topic: "orders", Group: "billing", ID: "m1", Traceparent: appTraceparent, Header: hdr}
	ctx := context.Background()
	for _, tr := range []*Tracer{off, nil} {
		helpers := map[string]func(){
			"StartPublish+End": func() {
				c, p := tr.StartPublish(ctx, hdr, "orders")
				p.SetMessageID("m1")
				p.SetBatch(2)
				if p.Traceparent() != "" || c != ctx {
					t.Fatal("off publish changed something")
				}
				p.End(202)
			},
			"Send": func() {
				s := tr.StartSend()
				s.Add("orders", "m1", appTraceparent)
				s.End(nil)
			},
			"Process": func() {
				p := tr.StartProcess(msg)
				a := p.StartAttempt("/orders", 1)
				a.Inject(hdr)
				a.End(503, "retry")
				a.Observe(hist, 0.1)
				p.Retry("retry", time.Second)
				p.Wait("breaker-open", time.Second)
				p.Observe(hist, 0.2)
				_ = p.LogAttr()
				p.End(Outcome{Attempt: 1, Result: "success"})
			},
			"LogAttr":        func() { _ = LogAttr(ctx) },
			"Observe":        func() { Observe(ctx, hist, 1) },
			"ExemplarLabels": func() { _ = ExemplarLabels(ctx) },
		}
		for name, f := range helpers {
			if n := testing.AllocsPerRun(100, f); n != 0 {
				t.Errorf("%s with tracing off (nil Tracer: %v): %v allocs, want 0", name, tr == nil, n)
			}
		}
	}
	if hdr.Get("Traceparent") != appTraceparent {
		t.Fatal("off Inject changed the carried traceparent")
	}
}

func TestEnvErrors(t *testing.T) {
	ep := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range ep {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	cases := []struct {
		name    string
		env     map[string]string
		wantVar string
	}{
		{"endpoint scheme", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "grpc://collector:4317"}, "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{"endpoint no host", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http:///v1/traces"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"},
		{"endpoint not a url", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://[::1"}, "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{"protocol grpc", with("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"), "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{"traces protocol unknown", with("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift"), "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"},
		{"sampler unknown", with("OTEL_TRACES_SAMPLER", "jaeger_remote"), "OTEL_TRACES_SAMPLER"},
		{"sampler arg not a number", with("OTEL_TRACES_SAMPLER", "traceidratio", "OTEL_TRACES_SAMPLER_ARG", "ten percent"), "OTEL_TRACES_SAMPLER_ARG"},
		{"sampler arg above 1", with("OTEL_TRACES_SAMPLER", "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG", "10"), "OTEL_TRACES_SAMPLER_ARG"},
		{"compression", with("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"), "OTEL_EXPORTER_OTLP_COMPRESSION"},
		{"timeout", with("OTEL_EXPORTER_OTLP_TIMEOUT", "10s"), "OTEL_EXPORTER_OTLP_TIMEOUT"},
		{"batch delay", with("OTEL_BSP_SCHEDULE_DELAY", "-1"), "OTEL_BSP_SCHEDULE_DELAY"},
		{"headers", with("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer s3cret,nokey"), "OTEL_EXPORTER_OTLP_HEADERS"},
		{"ca file", with("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem"), "OTEL_EXPORTER_OTLP_CERTIFICATE"},
		{"client key alone", with("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/nonexistent/key.pem"), "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"},
		{"resource attributes", with("OTEL_RESOURCE_ATTRIBUTES", "team"), "OTEL_RESOURCE_ATTRIBUTES"},
		{"sdk disabled", with("OTEL_SDK_DISABLED", "maybe"), "OTEL_SDK_DISABLED"},
		{"exporter", with("OTEL_TRACES_EXPORTER", "zipkin"), "OTEL_TRACES_EXPORTER"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cleanEnv(t)
			setenv(t, c.env)
			tr, err := New(context.Background(), Settings{ServiceName: "orders"})
			var ve *VarError
			if !errors.As(err, &ve) {
				if tr != nil {
					shutdown(t, tr)
				}
				t.Fatalf("New: err = %v, want a *VarError", err)
			}
			if ve.Var != c.wantVar || !strings.HasPrefix(err.Error(), c.wantVar+": ") {
				t.Fatalf("error %q names %s, want %s", err, ve.Var, c.wantVar)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error %q repeats a header value", err)
			}
		})
	}
}

const (
	appTraceID     = "4bf92f3577b34da6a3ce929d0e0e4736"
	appSpanID      = "00f067aa0ba902b7"
	appTraceparent = "00-" + appTraceID + "-" + appSpanID + "-01"
	appTracestate  = "vendor=opaque"
)

// record is a stream entry as ferry stores it: the carried headers as
// "h:" fields, ferry's publish context in stream.FieldTraceparent.
type record map[string]string

func (r record) header() http.Header {
	h := http.Header{}
	for k, v := range r {
		if name, ok := strings.CutPrefix(k, "h:"); ok {
			h.Set(name, v)
		}
	}
	return h
}

// publish runs the publish side for one message and returns its record.
func publish(tr *Tracer, topic, id string, hdr http.Header) record {
	_, p := tr.StartPublish(context.Background(), hdr, topic)
	p.SetMessageID(id)
	r := record{"id": id}
	for _, k := range []string{"Traceparent", "Tracestate"} {
		if v := hdr.Get(k); v != "" {
			r["h:"+k] = v
		}
	}
	if tp := p.Traceparent(); tp != "" {
		r[stream.FieldTraceparent] = tp
	}
	p.End(http.StatusAccepted)
	return r
}

// app is the subscribing service: it answers with the scripted statuses in
// turn and keeps the traceparent and tracestate of every request.
type app struct {
	srv      *httptest.Server
	statuses chan int
	got      chan http.Header
}

func newApp(t *testing.T, statuses ...int) *app {
	a := &app{statuses: make(chan int, len(statuses)), got: make(chan http.Header, len(statuses))}
	for _, s := range statuses {
		a.statuses <- s
	}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.got <- r.Header.Clone()
		select {
		case s := <-a.statuses:
			w.WriteHeader(s)
		default:
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	t.Cleanup(a.srv.Close)
	return a
}

// deliver runs the delivery side for one record until success or a dead
// letter, the way delivery/ will: a process span, one attempt span per POST.
func deliver(t *testing.T, tr *Tracer, a *app, group, route string, r record, hist prometheus.Observer) (Process, Outcome) {
	t.Helper()
	p := tr.StartProcess(Message{Topic: "orders", Group: group, ID: r["id"], Traceparent: r[stream.FieldTraceparent], Header: r.header()})
	var o Outcome
	for attempt := 1; attempt <= 3; attempt++ {
		at := p.StartAttempt(route, attempt)
		req, err := http.NewRequest(http.MethodPost, a.srv.URL+route, strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range r.header() {
			req.Header[k] = v
		}
		at.Inject(req.Header)
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("POST: %v", err)
		}
		resp.Body.Close()
		at.Observe(hist, time.Since(start).Seconds())
		o = Outcome{Attempt: attempt, Status: resp.StatusCode}
		switch {
		case resp.StatusCode < 300:
			o.Result = "success"
		case resp.StatusCode >= 500:
			o.Result = "retry"
		default:
			o.Result, o.DeadLetter = "poison", "poison"
		}
		at.End(resp.StatusCode, o.Result)
		if o.Result != "retry" {
			break
		}
		p.Retry(o.Result, 10*time.Millisecond)
	}
	return p, o
}

// TestTraceAcrossSidecars follows events through a publishing sidecar and
// two subscribing ones, as spans exported over real OTLP/HTTP (gzip) to a
// receiver that decodes the protobuf.
func TestTraceAcrossSidecars(t *testing.T) {
	rcv := otlptest.Start(t)
	cleanEnv(t)
	setenv(t, map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT":    rcv.Endpoint(),
		"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
		"OTEL_RESOURCE_ATTRIBUTES":       "deployment.environment.name=test",
		"OTEL_BSP_SCHEDULE_DELAY":        "50",
	})
	pub := newTracer(t, "orders")
	billing := newTracer(t, "billing")
	audit := newTracer(t, "audit")

	// Publish: m1 and m2 in one relay batch with a record of another topic
	// written while tracing was off (no stored context).
	appHdr := http.Header{"Traceparent": {appTraceparent}, "Tracestate": {appTracestate}}
	r1 := publish(pub, "orders", "m1", appHdr)
	r2 := publish(pub, "orders", "m2", http.Header{}) // no traceparent: a trace of its own
	if r1["h:Traceparent"] != appTraceparent || r1[stream.FieldTraceparent] == "" || r1[stream.FieldTraceparent] == appTraceparent {
		t.Fatalf("record m1 = %v: want the app's traceparent kept and ferry's beside it", r1)
	}
	// Spans arrive before any shutdown: the batcher exports on its own.
	rcv.WaitSpans(t, 2, time.Minute)

	s := pub.StartSend()
	s.Add("orders", "m1", r1[stream.FieldTraceparent])
	s.Add("orders", "m2", r2[stream.FieldTraceparent])
	s.Add("invoices", "m3", "")
	s.End(nil)

	// Deliver m1 to billing (503, then 200) and to audit (200).
	reg := prometheus.NewRegistry()
	dur := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ferry_delivery_duration_seconds", Help: "h"}, []string{"subscription"})
	reg.MustRegister(dur)
	billingApp := newApp(t, http.StatusServiceUnavailable, http.StatusOK)
	pb, ob := deliver(t, billing, billingApp, "billing", "/orders", r1, dur.WithLabelValues("orders"))
	pb.End(ob)
	auditApp := newApp(t, http.StatusOK)
	pa, oa := deliver(t, audit, auditApp, "audit", "/in", r1, prometheus.NewHistogram(prometheus.HistogramOpts{Name: "x"}))
	pa.End(oa)
	if ob.Attempt != 2 || ob.Result != "success" || oa.Attempt != 1 {
		t.Fatalf("outcomes: billing %+v, audit %+v", ob, oa)
	}
	shutdown(t, pub, billing, audit)

	spans := rcv.Spans()
	if len(spans) != 9 {
		t.Fatalf("want 9 spans (2 publish, 2 send, 2 process, 3 attempts), got %d: %s", len(spans), otlptest.Names(spans))
	}
	byMsg := func(name, id string) otlptest.Span {
		t.Helper()
		for _, s := range otlptest.Named(spans, name) {
			if s.Attr("messaging.message.id") == id {
				return s
			}
		}
		t.Fatalf("no span %q for message %s among %s", name, id, otlptest.Names(spans))
		return otlptest.Span{}
	}
	pub1, pub2 := byMsg("publish orders", "m1"), byMsg("publish orders", "m2")
	send := otlptest.One(t, spans, "send orders")
	sendOther := otlptest.One(t, spans, "send invoices")
	var proc, procAudit otlptest.Span
	for _, s := range otlptest.Named(spans, "process orders") {
		switch s.Attr("messaging.consumer.group.name") {
		case "billing":
			proc = s
		case "audit":
			procAudit = s
		}
	}
	attempts := otlptest.Named(spans, "POST /orders")
	auditAttempt := otlptest.One(t, spans, "POST /in")

	// One trace: the app's.
	for _, s := range []otlptest.Span{pub1, send, proc, procAudit, attempts[0], attempts[1], auditAttempt} {
		if s.TraceID != appTraceID {
			t.Errorf("%s: trace %s, want the app's %s", s.Name, s.TraceID, appTraceID)
		}
	}
	if pub2.TraceID == appTraceID || pub2.ParentSpanID != "" {
		t.Errorf("publish m2 without traceparent: trace %s parent %q, want a new root", pub2.TraceID, pub2.ParentSpanID)
	}

	// Publish: server span, child of the app's span, messaging attributes.
	want := func(s otlptest.Span, kind tracepb.Span_SpanKind, attrs map[string]any) {
		t.Helper()
		if s.Kind != kind {
			t.Errorf("%s: kind %v, want %v", s.Name, s.Kind, kind)
		}
		for k, v := range attrs {
			if got := s.Attr(k); got != v {
				t.Errorf("%s: %s = %#v, want %#v", s.Name, k, got, v)
			}
		}
	}
	if pub1.ParentSpanID != appSpanID || pub1.TraceState != appTracestate {
		t.Errorf("publish: parent %s tracestate %q, want %s %q", pub1.ParentSpanID, pub1.TraceState, appSpanID, appTracestate)
	}
	if r1[stream.FieldTraceparent] != pub1.Traceparent() {
		t.Errorf("stored context %s, want the publish span's %s", r1[stream.FieldTraceparent], pub1.Traceparent())
	}
	want(pub1, tracepb.Span_SPAN_KIND_SERVER, map[string]any{
		"messaging.system": "ferry", "messaging.destination.name": "orders", "messaging.message.id": "m1",
		"messaging.operation.type": "create", "messaging.operation.name": "publish",
		"http.request.method": "POST", "http.response.status_code": int64(202),
	})
	if pub1.Resource["service.name"] != "orders" || pub1.Resource["deployment.environment.name"] != "test" || pub1.Resource["service.instance.id"] != "orders-0" {
		t.Errorf("publish resource %v", pub1.Resource)
	}

	// Send: producer, links to both publish spans, child of the first.
	want(send, tracepb.Span_SPAN_KIND_PRODUCER, map[string]any{
		"messaging.system": "ferry", "messaging.destination.name": "orders", "messaging.operation.type": "send",
		"messaging.batch.message_count": int64(2),
	})
	if !send.LinksTo(pub1) || !send.LinksTo(pub2) || len(send.Links) != 2 || !send.ChildOf(pub1) {
		t.Errorf("send: parent %s links %v; want child of %s and links to %s, %s", send.ParentSpanID, send.Links, pub1.SpanID, pub1.SpanID, pub2.SpanID)
	}
	if send.Start.Before(pub1.End) || send.End.Before(send.Start) {
		t.Errorf("send runs %v–%v, publish ended %v", send.Start, send.End, pub1.End)
	}
	want(sendOther, tracepb.Span_SPAN_KIND_PRODUCER, map[string]any{"messaging.message.id": "m3"})
	if len(sendOther.Links) != 0 || sendOther.ParentSpanID != "" {
		t.Errorf("send of a record without context: parent %q links %v", sendOther.ParentSpanID, sendOther.Links)
	}

	// Process: consumer, child of the publish span, final outcome.
	for _, p := range []otlptest.Span{proc, procAudit} {
		if !p.ChildOf(pub1) {
			t.Errorf("process (%v): parent %s, want the publish span %s", p.Attr("messaging.consumer.group.name"), p.ParentSpanID, pub1.SpanID)
		}
		if p.TraceState != appTracestate {
			t.Errorf("process: tracestate %q, want %q", p.TraceState, appTracestate)
		}
	}
	want(proc, tracepb.Span_SPAN_KIND_CONSUMER, map[string]any{
		"messaging.system": "ferry", "messaging.destination.name": "orders", "messaging.message.id": "m1",
		"messaging.consumer.group.name": "billing", "messaging.operation.type": "process",
		"ferry.attempt": int64(2), "ferry.result": "success",
	})
	if proc.StatusCode == tracepb.Status_STATUS_CODE_ERROR || proc.Resource["service.name"] != "billing" {
		t.Errorf("process: status %v resource %v", proc.StatusCode, proc.Resource)
	}
	if len(proc.Events) != 1 || proc.Events[0].Name != "retry" || proc.Events[0].Attrs["ferry.delay"] != 0.01 || proc.Events[0].Attrs["ferry.result"] != "retry" {
		t.Errorf("process events %+v, want one retry after 10ms", proc.Events)
	}

	// Two attempt spans under the process span; the app saw each as its parent.
	if len(attempts) != 2 {
		t.Fatalf("want 2 attempt spans, got %d", len(attempts))
	}
	if attempts[0].Attr("ferry.attempt") == int64(2) {
		attempts[0], attempts[1] = attempts[1], attempts[0]
	}
	for i, a := range attempts {
		n := int64(i + 1)
		if !a.ChildOf(proc) {
			t.Errorf("attempt %d: parent %s, want process %s", n, a.ParentSpanID, proc.SpanID)
		}
		got := <-billingApp.got
		if tp := got.Get("Traceparent"); tp != a.Traceparent() {
			t.Errorf("attempt %d: the app got traceparent %s, want the attempt span's %s", n, tp, a.Traceparent())
		}
		if ts := got.Get("Tracestate"); ts != appTracestate {
			t.Errorf("attempt %d: the app got tracestate %q, want %q", n, ts, appTracestate)
		}
		want(a, tracepb.Span_SPAN_KIND_CLIENT, map[string]any{"ferry.attempt": n, "http.request.method": "POST", "url.template": "/orders"})
	}
	want(attempts[0], tracepb.Span_SPAN_KIND_CLIENT, map[string]any{"http.response.status_code": int64(503), "ferry.result": "retry", "error.type": "503"})
	want(attempts[1], tracepb.Span_SPAN_KIND_CLIENT, map[string]any{"http.response.status_code": int64(200), "ferry.result": "success"})
	if attempts[0].StatusCode != tracepb.Status_STATUS_CODE_ERROR || attempts[1].StatusCode == tracepb.Status_STATUS_CODE_ERROR {
		t.Errorf("attempt statuses %v, %v: want error, then not", attempts[0].StatusCode, attempts[1].StatusCode)
	}
	if !attempts[1].Start.After(attempts[0].End) {
		t.Errorf("the retry starts %v, before the first attempt ended %v", attempts[1].Start, attempts[0].End)
	}
	if !auditAttempt.ChildOf(procAudit) {
		t.Errorf("audit attempt: parent %s, want %s", auditAttempt.ParentSpanID, procAudit.SpanID)
	}

	// The exporter compressed, and the receiver refused nothing.
	if n, gz, errs := rcv.Stats(); n == 0 || gz != n || len(errs) > 0 {
		t.Errorf("receiver: %d requests, %d gzipped, refused %q", n, gz, errs)
	}

	// The delivery histogram's exemplars name the trace (OpenMetrics only).
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	resp.Body.Close()
	if !strings.Contains(body.String(), `# {trace_id="`+appTraceID+`"}`) {
		t.Errorf("no exemplar with trace_id %s in:\n%s", appTraceID, body.String())
	}
}

// TestDeadLetter: the process span of a dead letter is an error with the
// reason, and the dead-letter log line carries its trace and span ids.
func TestDeadLetter(t *testing.T) {
	rcv := otlptest.Start(t)
	cleanEnv(t)
	setenv(t, map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": rcv.TracesURL()})
	tr := newTracer(t, "billing")
	r := record{"id": "m9", "h:Traceparent": appTraceparent} // published with tracing off
	a := newApp(t, http.StatusBadRequest)
	p, o := deliver(t, tr, a, "billing", "/orders", r, prometheus.NewHistogram(prometheus.HistogramOpts{Name: "x"}))
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Warn("dead letter", "msg_id", "m9", "reason", o.DeadLetter, p.LogAttr())
	p.End(o)
	shutdown(t, tr)

	spans := rcv.Spans()
	proc := otlptest.One(t, spans, "process orders")
	if proc.ParentSpanID != appSpanID || proc.TraceID != appTraceID {
		t.Errorf("process without a stored context: parent %s/%s, want the app's %s/%s", proc.TraceID, proc.ParentSpanID, appTraceID, appSpanID)
	}
	if proc.StatusCode != tracepb.Status_STATUS_CODE_ERROR || proc.StatusMessage != "dead letter: poison" || proc.Attr("ferry.deadletter.reason") != "poison" {
		t.Errorf("process: status %v %q, reason %v", proc.StatusCode, proc.StatusMessage, proc.Attr("ferry.deadletter.reason"))
	}
	var line map[string]any
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
		t.Fatalf("log line %q: %v", logs.String(), err)
	}
	if line["trace_id"] != proc.TraceID || line["span_id"] != proc.SpanID {
		t.Errorf("log line %s: want trace_id %s span_id %s", logs.String(), proc.TraceID, proc.SpanID)
	}
	// With tracing off the line still names the publisher's trace.
	if got := ParentLogAttr(appTraceparent); got.Value.Group()[0].Value.String() != appTraceID {
		t.Errorf("ParentLogAttr = %v", got)
	}
}

// TestSampledOut: at ratio 0 nothing is exported, the stored context and the
// app's traceparent say "not sampled", and no exemplar is made.
func TestSampledOut(t *testing.T) {
	rcv := otlptest.Start(t)
	cleanEnv(t)
	setenv(t, map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": rcv.Endpoint(),
		"OTEL_TRACES_SAMPLER":         "parentbased_traceidratio",
		"OTEL_TRACES_SAMPLER_ARG":     "0",
	})
	tr := newTracer(t, "orders")
	ctx, p := tr.StartPublish(context.Background(), http.Header{}, "orders")
	tp := p.Traceparent()
	p.End(202)
	if !strings.HasSuffix(tp, "-00") || len(tp) != 55 {
		t.Fatalf("stored traceparent %q, want a not-sampled one", tp)
	}
	if ExemplarLabels(ctx) != nil {
		t.Fatal("exemplar for a span not sampled")
	}
	if LogAttr(ctx).Key != "" || len(LogAttr(ctx).Value.Group()) != 2 {
		t.Fatalf("LogAttr = %v: a trace id is worth logging even when not sampled", LogAttr(ctx))
	}
	proc := tr.StartProcess(Message{Topic: "orders", Group: "g", ID: "m1", Traceparent: tp, Header: http.Header{}})
	a := proc.StartAttempt("/orders", 1)
	h := http.Header{}
	a.Inject(h)
	if got := h.Get("Traceparent"); !strings.HasSuffix(got, "-00") || got[3:35] != tp[3:35] {
		t.Fatalf("the app got %q, want the trace of %q, not sampled", got, tp)
	}
	a.End(200, "success")
	proc.End(Outcome{Attempt: 1, Result: "success"})
	shutdown(t, tr)
	if n, _, _ := rcv.Stats(); n != 0 || len(rcv.Spans()) != 0 {
		t.Fatalf("%d export requests, %d spans: want none", n, len(rcv.Spans()))
	}
}

func TestErrorLogIsBounded(t *testing.T) {
	var buf bytes.Buffer
	e := newErrorLog(slog.New(slog.NewTextHandler(&buf, nil)), time.Hour)
	for range 5 {
		e.Handle(errors.New("connection refused"))
	}
	if n := strings.Count(buf.String(), "tracing export"); n != 1 {
		t.Fatalf("%d lines for 5 errors within the interval, want 1:\n%s", n, buf.String())
	}
}
