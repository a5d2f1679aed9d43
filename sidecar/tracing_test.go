package sidecar

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"go.uber.org/goleak"

	"github.com/ferry-sidecar/ferry/config"
	"github.com/ferry-sidecar/ferry/internal/otlptest"
	"github.com/ferry-sidecar/ferry/internal/redistest"
	"github.com/ferry-sidecar/ferry/stream"
)

// The tracing tests set OTEL_* in the process environment (the SDK reads
// nothing else), so none of them is parallel.

// setOtel blanks every OTEL_* variable of the process (blank is unset to
// the SDK and to tracing.New), then sets env.
func setOtel(t *testing.T, env map[string]string) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "OTEL_") {
			t.Setenv(k, "")
		}
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		t.Setenv(k, "")
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
}

const (
	appTraceID = "4bf92f3577b34da6a3ce929d0e0e4736" // the publishing app's trace
	appSpanID  = "00f067aa0ba902b7"
	dlTraceID  = "0af7651916cd43dd8448eb211c80319c" // the dead-lettered event's
)

// traced is the setup of the tracing test: sidecar A (app "shop")
// publishes; sidecar B (app "billing") delivers orders (503 once, then
// 200) and payments (422: poison); sidecar C (app "audit") is a second
// group on orders. All three export to one OTLP/HTTP receiver.
type traced struct {
	recv           *otlptest.Receiver
	shop, bill, au *node
	billApp, auApp *app
}

func startTraced(t *testing.T) *traced {
	t.Helper()
	tr := &traced{recv: otlptest.Start(t)}
	setOtel(t, map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": tr.recv.Endpoint(),
		"OTEL_BSP_SCHEDULE_DELAY":     "50", // ms: the spans arrive soon after they end
	})
	srv := redistest.StartServer(t)
	orders := script(http.StatusServiceUnavailable)
	tr.billApp = newApp(t, func(r received) int {
		if r.Path == "/payments" {
			return http.StatusUnprocessableEntity
		}
		return orders(r)
	})
	tr.auApp = newApp(t, nil)
	tr.shop = startNode(t, baseEnv(t, "shop", srv.URL()))
	env := baseEnv(t, "billing", srv.URL())
	env["FERRY_APP_URL"] = tr.billApp.srv.URL
	env["FERRY_SUBSCRIPTIONS"] = "orders=/orders,payments=/payments"
	tr.bill = startNode(t, env)
	env = baseEnv(t, "audit", srv.URL())
	env["FERRY_APP_URL"] = tr.auApp.srv.URL
	env["FERRY_SUBSCRIPTIONS"] = "orders=/orders"
	tr.au = startNode(t, env)
	return tr
}

// count is how many spans are called name.
func count(spans []otlptest.Span, name string) int { return len(otlptest.Named(spans, name)) }

// byAttr is the one span among spans whose attribute key is v.
func byAttr(t *testing.T, spans []otlptest.Span, key string, v any) otlptest.Span {
	t.Helper()
	var out []otlptest.Span
	for _, s := range spans {
		if s.Attr(key) == v {
			out = append(out, s)
		}
	}
	if len(out) != 1 {
		t.Fatalf("want one span with %s=%v, have %d of %d", key, v, len(out), len(spans))
	}
	return out[0]
}

// children are the spans among spans whose parent is p.
func children(spans []otlptest.Span, p otlptest.Span) []otlptest.Span {
	var out []otlptest.Span
	for _, s := range spans {
		if s.ChildOf(p) {
			out = append(out, s)
		}
	}
	return out
}

// wantAttrs fails for every attribute of s that is not as in want.
func wantAttrs(t *testing.T, s otlptest.Span, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if got := s.Attr(k); got != v {
			t.Errorf("%s (%s): %s = %#v, want %#v", s.Name, s.SpanID, k, got, v)
		}
	}
}

// One event published through A and delivered by B (a 503, then a 200)
// and by C is one trace: A's publish span under the app's traceparent,
// the relay's send span under and linked to it, one process span per
// group under it, one client span per attempt under those, and the app
// receives each attempt span as its traceparent. A dead letter ends its
// process span with an error and the reason, and its log line names the
// trace. The delivery histograms' exemplars name the trace.
func TestTraceAcrossSidecars(t *testing.T) {
	tr := startTraced(t)
	mustPublish(t, tr.shop, "orders", `{"order":1}`, map[string]string{
		"Idempotency-Key": "o1", "Traceparent": "00-" + appTraceID + "-" + appSpanID + "-01",
	})
	mustPublish(t, tr.shop, "payments", `{"payment":1}`, map[string]string{
		"Idempotency-Key": "p1", "Traceparent": "00-" + dlTraceID + "-" + appSpanID + "-01",
	})
	spans := tr.recv.WaitFor(t, 60*time.Second, "every span of both events", func(s []otlptest.Span) bool {
		return count(s, "publish orders") == 1 && count(s, "publish payments") == 1 &&
			count(s, "send orders") >= 1 && count(s, "send payments") >= 1 &&
			count(s, "process orders") == 2 && count(s, "POST /orders") == 3 &&
			count(s, "process payments") == 1 && count(s, "POST /payments") == 1
	})
	var order []otlptest.Span
	for _, s := range spans {
		if s.TraceID == appTraceID {
			order = append(order, s)
		}
	}
	if len(order) != 7 {
		t.Errorf("the order's trace has %d spans, want 7 (publish, send, 2 process, 3 POST): %s", len(order), otlptest.Names(order))
	}

	pub := otlptest.One(t, order, "publish orders")
	if pub.ParentSpanID != appSpanID || pub.Kind != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("publish span: parent %q kind %v, want the app's span %s, SERVER", pub.ParentSpanID, pub.Kind, appSpanID)
	}
	wantAttrs(t, pub, map[string]any{"messaging.system": "ferry", "messaging.destination.name": "orders",
		"messaging.message.id": "o1", "messaging.operation.type": "create", "http.response.status_code": int64(202)})
	if pub.Resource["service.name"] != "shop" {
		t.Errorf("publish span's service.name %v, want shop (FERRY_APP_ID)", pub.Resource["service.name"])
	}

	send := otlptest.One(t, order, "send orders")
	if !send.ChildOf(pub) || !send.LinksTo(pub) || send.Kind != tracepb.Span_SPAN_KIND_PRODUCER {
		t.Errorf("send span: child of publish %v, links to it %v, kind %v", send.ChildOf(pub), send.LinksTo(pub), send.Kind)
	}
	wantAttrs(t, send, map[string]any{"messaging.destination.name": "orders", "messaging.message.id": "o1", "messaging.operation.type": "send"})

	procs := otlptest.Named(order, "process orders")
	bill := byAttr(t, procs, "messaging.consumer.group.name", "billing")
	au := byAttr(t, procs, "messaging.consumer.group.name", "audit")
	for _, p := range procs {
		if !p.ChildOf(pub) || p.Kind != tracepb.Span_SPAN_KIND_CONSUMER || p.StatusCode == tracepb.Status_STATUS_CODE_ERROR {
			t.Errorf("process span of %v: child of publish %v, kind %v, status %v", p.Attr("messaging.consumer.group.name"), p.ChildOf(pub), p.Kind, p.StatusCode)
		}
		wantAttrs(t, p, map[string]any{"messaging.system": "ferry", "messaging.destination.name": "orders",
			"messaging.message.id": "o1", "messaging.operation.type": "process", "ferry.result": "success"})
	}
	wantAttrs(t, bill, map[string]any{"ferry.attempt": int64(2), "http.response.status_code": int64(200)})
	wantAttrs(t, au, map[string]any{"ferry.attempt": int64(1)})
	if bill.Resource["service.name"] != "billing" || au.Resource["service.name"] != "audit" {
		t.Errorf("process spans' service.name: %v, %v", bill.Resource["service.name"], au.Resource["service.name"])
	}
	retries := 0
	for _, e := range bill.Events {
		if e.Name == "retry" && e.Attrs["ferry.result"] == "retry" {
			retries++
		}
	}
	if retries != 1 {
		t.Errorf("billing's process span has %d retry events, want 1: %+v", retries, bill.Events)
	}

	attempts := children(order, bill)
	if len(attempts) != 2 {
		t.Fatalf("billing's process span has %d children, want 2 attempts", len(attempts))
	}
	a1 := byAttr(t, attempts, "ferry.attempt", int64(1))
	a2 := byAttr(t, attempts, "ferry.attempt", int64(2))
	wantAttrs(t, a1, map[string]any{"http.response.status_code": int64(503), "ferry.result": "retry", "url.template": "/orders"})
	wantAttrs(t, a2, map[string]any{"http.response.status_code": int64(200), "ferry.result": "success"})
	if a1.StatusCode != tracepb.Status_STATUS_CODE_ERROR || a2.StatusCode == tracepb.Status_STATUS_CODE_ERROR {
		t.Errorf("attempt statuses %v, %v: want an error, then not", a1.StatusCode, a2.StatusCode)
	}
	if a1.Name != "POST /orders" || a1.Kind != tracepb.Span_SPAN_KIND_CLIENT || a2.Start.Before(a1.End) {
		t.Errorf("attempts %q %v; attempt 2 starts %v after attempt 1 ended", a1.Name, a1.Kind, a2.Start.Sub(a1.End))
	}
	auAttempt := otlptest.One(t, children(order, au), "POST /orders")

	// The app's spans hang under the attempt span: it receives that span
	// as its traceparent, and the body-free carried headers otherwise.
	got := map[string]string{}
	for _, r := range tr.billApp.all() {
		if r.Path == "/orders" {
			got[r.Header.Get("Ferry-Attempt")] = r.Header.Get("Traceparent")
		}
	}
	if got["1"] != a1.Traceparent() || got["2"] != a2.Traceparent() {
		t.Errorf("billing app received traceparents %v, want attempt 1 %s and attempt 2 %s", got, a1.Traceparent(), a2.Traceparent())
	}
	if r := tr.auApp.all(); len(r) != 1 || r[0].Header.Get("Traceparent") != auAttempt.Traceparent() {
		t.Errorf("audit app received %d deliveries; want one with traceparent %s", len(r), auAttempt.Traceparent())
	}

	checkDeadLetterTrace(t, tr, spans)
	checkExemplar(t, tr.bill, "ferry_delivery_duration_seconds", appTraceID)
	checkExemplar(t, tr.bill, "ferry_end_to_end_seconds", appTraceID)
}

// checkDeadLetterTrace: the poison payment's process span is an error
// with the reason, and B's dead-letter line names its trace and span.
func checkDeadLetterTrace(t *testing.T, tr *traced, spans []otlptest.Span) {
	t.Helper()
	p := otlptest.One(t, spans, "process payments")
	if p.TraceID != dlTraceID || p.StatusCode != tracepb.Status_STATUS_CODE_ERROR || !strings.Contains(p.StatusMessage, "poison") {
		t.Errorf("dead-lettered process span: trace %s status %v %q; want trace %s, an error naming poison", p.TraceID, p.StatusCode, p.StatusMessage, dlTraceID)
	}
	wantAttrs(t, p, map[string]any{"ferry.deadletter.reason": "poison", "ferry.attempt": int64(1), "http.response.status_code": int64(422)})
	found := false
	sc := bufio.NewScanner(strings.NewReader(tr.bill.logs.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) != nil || line["msg"] != "dead-lettered" {
			continue
		}
		found = true
		if line["trace_id"] != dlTraceID || line["span_id"] != p.SpanID || line["msg_id"] != "p1" {
			t.Errorf("dead-letter line %s: want trace_id %s span_id %s", sc.Bytes(), dlTraceID, p.SpanID)
		}
	}
	if !found {
		t.Errorf("no dead-letter line in billing's log")
	}
}

// checkExemplar scrapes n's /metrics as OpenMetrics and wants an exemplar
// naming traceID on a bucket of the orders subscription's histogram, and
// no exemplar naming another trace there.
func checkExemplar(t *testing.T, n *node, histogram, traceID string) {
	t.Helper()
	req := mustReq(http.MethodGet, n.admin+"/metrics")
	req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/openmetrics-text") {
		t.Fatalf("/metrics answered %q, want OpenMetrics", ct)
	}
	with := 0
	for _, l := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(l, histogram+"_bucket{") || !strings.Contains(l, `subscription="orders"`) {
			continue
		}
		_, ex, ok := strings.Cut(l, " # ")
		if !ok {
			continue
		}
		if !strings.HasPrefix(ex, `{trace_id="`+traceID+`"}`) {
			t.Errorf("%s exemplar %q, want trace_id %s", histogram, ex, traceID)
		}
		with++
	}
	if with == 0 {
		t.Errorf("no exemplar on %s{subscription=\"orders\"}:\n%s", histogram, body)
	}
}

// With no OTLP variable set, tracing is off: no exporter or SDK goroutine
// exists, nothing is stored with the event, and the app receives the
// publisher's traceparent as it was published.
func TestTracingOffByDefault(t *testing.T) {
	setOtel(t, nil)
	p := startPair(t, nil, nil)
	tp := "00-" + appTraceID + "-" + appSpanID + "-01"
	mustPublish(t, p.pub, "orders", "x", map[string]string{"Idempotency-Key": "off1", "Traceparent": tp})
	got := p.app.next(t, 10*time.Second)
	if h := got.Header.Get("Traceparent"); h != tp {
		t.Errorf("app received traceparent %q, want the publisher's %q", h, tp)
	}
	if p.pub.sc.tracer.Enabled() || p.sub.sc.tracer.Enabled() {
		t.Errorf("tracing on with no OTLP endpoint")
	}
	msgs, err := p.rdb.XRange(context.Background(), streamKey("orders"), "-", "+").Result()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("stream: %v %v", msgs, err)
	}
	if v, ok := msgs[0].Values[stream.FieldTraceparent]; ok {
		t.Errorf("entry has %s=%v with tracing off", stream.FieldTraceparent, v)
	}
	buf := make([]byte, 1<<22)
	stacks := string(buf[:runtime.Stack(buf, true)])
	if strings.Contains(stacks, "go.opentelemetry.io/otel/sdk") || strings.Contains(stacks, "otlptracehttp") {
		t.Errorf("an OpenTelemetry SDK goroutine runs with tracing off")
	}
}

// An invalid OTEL_* variable is a configuration error naming it (exit 2).
func TestTracingBadVariableIsConfigError(t *testing.T) {
	setOtel(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_SAMPLER": "sometimes"})
	srv := redistest.StartServer(t)
	cfg, err := LoadConfig(baseEnv(t, "shop", srv.URL()))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	_, err = New(cfg, nil, reg, reg)
	var verr *config.VarError
	if !errors.As(err, &verr) || verr.Var != "OTEL_TRACES_SAMPLER" {
		t.Fatalf("New: %v, want a *config.VarError for OTEL_TRACES_SAMPLER", err)
	}
}

// With tracing on, a stop exports the last spans and leaves no goroutine
// of the SDK or its exporter behind (the exporter's keep-alive connection
// ends with the collector's: the check runs after every cleanup).
func TestTracingStopsWithTheSidecar(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { // registered first: runs last
		http.DefaultClient.CloseIdleConnections() // the test's own client
		goleak.VerifyNone(t, ignore, goleak.IgnoreTopFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).reaper"))
	})
	recv := otlptest.Start(t)
	setOtel(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": recv.Endpoint(), "OTEL_BSP_SCHEDULE_DELAY": "60000"})
	p := startPair(t, nil, nil)
	mustPublish(t, p.pub, "orders", "x", map[string]string{"Idempotency-Key": "s1"})
	p.app.next(t, 10*time.Second)
	for _, n := range []*node{p.sub, p.pub} {
		if err := n.stop(); err != nil {
			t.Fatalf("stop: %v", err)
		}
	}
	// The batcher waits a minute between exports: only the shutdown flush
	// can have sent these.
	spans := recv.Spans()
	for _, name := range []string{"publish orders", "send orders", "process orders", "POST /events/orders"} {
		if count(spans, name) != 1 {
			t.Errorf("after the stop: %d spans %q, want 1 (have %s)", count(spans, name), name, otlptest.Names(spans))
		}
	}
}
