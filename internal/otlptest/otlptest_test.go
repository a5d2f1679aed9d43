package otlptest

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

func post(t *testing.T, url, contentType, encoding string, body []byte) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestReceiver(t *testing.T) {
	r := Start(t)
	msg := &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{{
			TraceId: bytes.Repeat([]byte{0xab}, 16), SpanId: bytes.Repeat([]byte{0xcd}, 8), ParentSpanId: bytes.Repeat([]byte{0xef}, 8),
			Name: "publish orders", Kind: tracepb.Span_SPAN_KIND_SERVER,
			Attributes: []*commonpb.KeyValue{{Key: "n", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: 7}}}},
		}}}},
	}}}
	raw, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(raw)
	_ = zw.Close()

	if code := post(t, r.TracesURL(), "application/x-protobuf", "gzip", gz.Bytes()); code != http.StatusOK {
		t.Fatalf("gzip protobuf: %d", code)
	}
	if code := post(t, r.TracesURL(), "application/json", "", []byte("{}")); code != http.StatusUnsupportedMediaType {
		t.Fatalf("json: %d, want 415", code)
	}
	if code := post(t, r.TracesURL(), "application/x-protobuf", "", []byte{0xff, 0xff}); code != http.StatusBadRequest {
		t.Fatalf("garbage: %d, want 400", code)
	}
	spans := r.WaitSpans(t, 1, 10*time.Second)
	s := One(t, spans, "publish orders")
	if s.TraceID != "abababababababababababababababab" || s.ParentSpanID != "efefefefefefefef" || s.Attr("n") != int64(7) || s.Kind != tracepb.Span_SPAN_KIND_SERVER {
		t.Fatalf("span %+v", s)
	}
	if n, gzipped, errs := r.Stats(); n != 1 || gzipped != 1 || len(errs) != 2 {
		t.Fatalf("stats: %d requests, %d gzipped, errors %q", n, gzipped, errs)
	}
}
