package otlptest

import (
	"bytes"
	"compress/gzip"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// TracesPath is where OTLP/HTTP exporters POST spans.
const TracesPath = "/v1/traces"

// Span is one received span, flattened.
type Span struct {
	TraceID, SpanID, ParentSpanID string // hex; ParentSpanID "" for a root
	TraceState                    string
	Name                          string
	Kind                          tracepb.Span_SpanKind
	Start, End                    time.Time
	Attrs                         map[string]any // string, bool, int64, float64, []any
	Events                        []Event
	Links                         []Link
	StatusCode                    tracepb.Status_StatusCode
	StatusMessage                 string
	Resource                      map[string]any
	Scope                         string
}

// Event is one span event.
type Event struct {
	Name  string
	Time  time.Time
	Attrs map[string]any
}

// Link is one span link.
type Link struct {
	TraceID, SpanID string
	Attrs           map[string]any
}

// Receiver is a running OTLP/HTTP receiver.
type Receiver struct {
	srv *httptest.Server

	mu       sync.Mutex
	spans    []Span
	requests int
	gzipped  int
	errs     []string
	arrived  chan struct{} // closed and replaced whenever spans arrive
}

// Start runs a receiver on 127.0.0.1 until the test ends.
func Start(t testing.TB) *Receiver {
	t.Helper()
	r := &Receiver{arrived: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc(TracesPath, r.handle)
	r.srv = httptest.NewServer(mux)
	t.Cleanup(r.srv.Close)
	return r
}

// Endpoint is the base URL for OTEL_EXPORTER_OTLP_ENDPOINT (the exporter
// appends /v1/traces).
func (r *Receiver) Endpoint() string { return r.srv.URL }

// TracesURL is the full URL for OTEL_EXPORTER_OTLP_TRACES_ENDPOINT.
func (r *Receiver) TracesURL() string { return r.srv.URL + TracesPath }

func (r *Receiver) handle(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		r.fail(w, http.StatusMethodNotAllowed, "method %s", req.Method)
		return
	}
	if ct := req.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		r.fail(w, http.StatusUnsupportedMediaType, "content type %q", ct)
		return
	}
	var body io.Reader = req.Body
	gz := false
	switch enc := req.Header.Get("Content-Encoding"); enc {
	case "":
	case "gzip":
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			r.fail(w, http.StatusBadRequest, "gzip: %v", err)
			return
		}
		defer zr.Close()
		body, gz = zr, true
	default:
		r.fail(w, http.StatusUnsupportedMediaType, "content encoding %q", enc)
		return
	}
	raw, err := io.ReadAll(io.LimitReader(body, 64<<20))
	if err != nil {
		r.fail(w, http.StatusBadRequest, "read body: %v", err)
		return
	}
	var msg collectorpb.ExportTraceServiceRequest
	if err := proto.Unmarshal(raw, &msg); err != nil {
		r.fail(w, http.StatusBadRequest, "decode ExportTraceServiceRequest: %v", err)
		return
	}
	spans := flatten(&msg)
	out, _ := proto.Marshal(&collectorpb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)

	r.mu.Lock()
	r.requests++
	if gz {
		r.gzipped++
	}
	r.spans = append(r.spans, spans...)
	close(r.arrived)
	r.arrived = make(chan struct{})
	r.mu.Unlock()
}

func (r *Receiver) fail(w http.ResponseWriter, code int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.mu.Lock()
	r.errs = append(r.errs, msg)
	r.mu.Unlock()
	http.Error(w, msg, code)
}

// Spans is a copy of every span received so far, in arrival order.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

// Stats are the export requests received, how many of them were gzipped,
// and the requests refused (with why).
func (r *Receiver) Stats() (requests, gzipped int, errs []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests, r.gzipped, append([]string(nil), r.errs...)
}

// WaitSpans waits until at least n spans have arrived and returns them; it
// fails the test after timeout, listing what did arrive.
func (r *Receiver) WaitSpans(t testing.TB, n int, timeout time.Duration) []Span {
	t.Helper()
	return r.WaitFor(t, timeout, fmt.Sprintf("%d spans", n), func(s []Span) bool { return len(s) >= n })
}

// WaitFor waits until done holds for the spans received so far (checked on
// every arrival) and returns them; it fails the test after timeout.
func (r *Receiver) WaitFor(t testing.TB, timeout time.Duration, what string, done func([]Span) bool) []Span {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		spans := append([]Span(nil), r.spans...)
		arrived := r.arrived
		r.mu.Unlock()
		if done(spans) {
			return spans
		}
		select {
		case <-arrived:
		case <-deadline.C:
			_, _, errs := r.Stats()
			t.Fatalf("otlptest: waited %v for %s; have %d spans: %s; refused requests: %q", timeout, what, len(spans), Names(spans), errs)
			return nil
		}
	}
}

// Names lists span names, sorted, for failure messages.
func Names(spans []Span) string {
	names := make([]string, len(spans))
	for i, s := range spans {
		names[i] = s.Name
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// Named returns the spans called name, in arrival order.
func Named(spans []Span, name string) []Span {
	var out []Span
	for _, s := range spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// One returns the only span called name; the test fails unless there is
// exactly one.
func One(t testing.TB, spans []Span, name string) Span {
	t.Helper()
	got := Named(spans, name)
	if len(got) != 1 {
		t.Fatalf("otlptest: want one span %q, have %d among: %s", name, len(got), Names(spans))
		return Span{}
	}
	return got[0]
}

// ChildOf reports whether s is a direct child of p (same trace, parent id).
func (s Span) ChildOf(p Span) bool {
	return s.TraceID == p.TraceID && s.ParentSpanID == p.SpanID
}

// LinksTo reports whether s links to p.
func (s Span) LinksTo(p Span) bool {
	for _, l := range s.Links {
		if l.TraceID == p.TraceID && l.SpanID == p.SpanID {
			return true
		}
	}
	return false
}

// Attr is the attribute key of s, nil when absent.
func (s Span) Attr(key string) any { return s.Attrs[key] }

// Traceparent is s's context as a W3C traceparent with the sampled flag:
// what a propagator would inject for it.
func (s Span) Traceparent() string { return "00-" + s.TraceID + "-" + s.SpanID + "-01" }

func flatten(msg *collectorpb.ExportTraceServiceRequest) []Span {
	var out []Span
	for _, rs := range msg.GetResourceSpans() {
		res := attrs(rs.GetResource().GetAttributes())
		for _, ss := range rs.GetScopeSpans() {
			scope := ss.GetScope().GetName()
			for _, sp := range ss.GetSpans() {
				s := Span{
					TraceID:       hex.EncodeToString(sp.GetTraceId()),
					SpanID:        hex.EncodeToString(sp.GetSpanId()),
					ParentSpanID:  hex.EncodeToString(sp.GetParentSpanId()),
					TraceState:    sp.GetTraceState(),
					Name:          sp.GetName(),
					Kind:          sp.GetKind(),
					Start:         unixNano(sp.GetStartTimeUnixNano()),
					End:           unixNano(sp.GetEndTimeUnixNano()),
					Attrs:         attrs(sp.GetAttributes()),
					StatusCode:    sp.GetStatus().GetCode(),
					StatusMessage: sp.GetStatus().GetMessage(),
					Resource:      res,
					Scope:         scope,
				}
				for _, e := range sp.GetEvents() {
					s.Events = append(s.Events, Event{Name: e.GetName(), Time: unixNano(e.GetTimeUnixNano()), Attrs: attrs(e.GetAttributes())})
				}
				for _, l := range sp.GetLinks() {
					s.Links = append(s.Links, Link{TraceID: hex.EncodeToString(l.GetTraceId()), SpanID: hex.EncodeToString(l.GetSpanId()), Attrs: attrs(l.GetAttributes())})
				}
				out = append(out, s)
			}
		}
	}
	return out
}

func unixNano(n uint64) time.Time { return time.Unix(0, int64(n)) }

func attrs(kvs []*commonpb.KeyValue) map[string]any {
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		m[kv.GetKey()] = value(kv.GetValue())
	}
	return m
}

func value(v *commonpb.AnyValue) any {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_DoubleValue:
		return x.DoubleValue
	case *commonpb.AnyValue_BytesValue:
		return bytes.Clone(x.BytesValue)
	case *commonpb.AnyValue_ArrayValue:
		var out []any
		for _, e := range x.ArrayValue.GetValues() {
			out = append(out, value(e))
		}
		return out
	}
	return nil
}
