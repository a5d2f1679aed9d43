package publish

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/ferry-sidecar/ferry/metrics"
	"github.com/ferry-sidecar/ferry/outbox"
	"github.com/ferry-sidecar/ferry/stream"
)

// Seed corpora live in testdata/fuzz/<Name>/; `go test` runs them as plain
// tests. To fuzz: go test -run '^$' -fuzz FuzzPublishHandler -fuzztime 30s ./publish/

// validHeaderValue is what net/http's server lets through as a header value:
// no control characters but tab. Requests the server would refuse are not
// the handler's problem.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// validHeaderName is an RFC 9110 token.
func validHeaderName(v string) bool {
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

func FuzzPublishHandler(f *testing.F) {
	f.Add("POST", "/v1/publish/orders", "order-1", true, "", false, "application/json", "Type", "order.created", []byte(`{"a":1}`))
	f.Add("POST", "/v1/publish/orders", "", false, "customer-7", true, "", "", "", []byte{})
	f.Add("GET", "/v1/publish/orders", "", false, "", false, "", "", "", []byte("x"))
	f.Add("POST", "/v1/publish/bad%20topic", "", false, "", false, "", "", "", []byte("x"))
	f.Add("POST", "/v1/publish/orders", "has space", true, "", false, "", "", "", []byte("x"))
	f.Add("POST", "/v1/publish/orders", "", true, "", false, "", "", "", []byte("x"))
	f.Add("POST", "/v1/publish/"+strings.Repeat("a", 129), "", false, "", false, "", "", "", []byte("x"))
	f.Add("POST", "/v1/publish/orders", "", false, "", false, "", "", "", bytes.Repeat([]byte("b"), 4097))

	ob, err := outbox.Open(outbox.Options{Dir: f.TempDir(), MaxBytes: 1 << 30})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { ob.Close() })
	h := New(Options{AppID: "billing", MaxBodyBytes: 4096, MaxTopicLabels: 100}, ob, metrics.New(nil, "test", nil), nil).Handler()

	f.Fuzz(func(t *testing.T, method, path, idem string, hasIdem bool, ordering string, hasOrdering bool, contentType, ceName, ceValue string, body []byte) {
		req, err := http.NewRequest(method, "http://127.0.0.1"+path, bytes.NewReader(body))
		if err != nil || req.URL.Host != "127.0.0.1" {
			return // not a request a client could send
		}
		set := func(name, value string) bool {
			if !validHeaderName(name) || !validHeaderValue(value) {
				return false
			}
			req.Header.Set(name, value)
			return true
		}
		if hasIdem && !set("Idempotency-Key", idem) {
			return
		}
		if hasOrdering && !set("Ordering-Key", ordering) {
			return
		}
		if contentType != "" && !set("Content-Type", contentType) {
			return
		}
		if ceName != "" && !set("Ce-"+ceName, ceValue) {
			return
		}
		before := ob.Stats().Appends
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		after := ob.Stats().Appends

		code := rec.Code
		switch {
		case code >= 500:
			t.Fatalf("%s %q: %d %s", method, path, code, rec.Body)
		case code >= 300 && code < 400:
			// ServeMux's redirect to the cleaned path ("/v1//publish" …): nothing stored.
			if rec.Header().Get("Location") == "" {
				t.Fatalf("%s %q: %d without Location", method, path, code)
			}
		case code < 200:
			t.Fatalf("%s %q: %d", method, path, code)
		}
		if code != http.StatusAccepted {
			if after != before {
				t.Fatalf("%s %q answered %d but stored %d records", method, path, code, after-before)
			}
			if code >= 400 && rec.Header().Get("Content-Type") != "application/problem+json" {
				t.Fatalf("%d without a problem body: %q", code, rec.Header().Get("Content-Type"))
			}
			return
		}
		if after != before+1 {
			t.Fatalf("202 stored %d records, want exactly 1", after-before)
		}
		var resp acceptedBody
		if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
			t.Fatalf("202 body %q: %v", rec.Body, err)
		}
		wantTopic := strings.TrimPrefix(req.URL.Path, "/v1/publish/")
		if resp.Topic != wantTopic || !stream.ValidTopic(resp.Topic) {
			t.Fatalf("202 for topic %q, path %q", resp.Topic, req.URL.Path)
		}
		if hasIdem {
			if resp.ID != idem {
				t.Fatalf("id %q, want the Idempotency-Key %q", resp.ID, idem)
			}
		} else if u, err := uuid.Parse(resp.ID); err != nil || u.Version() != 7 {
			t.Fatalf("generated id %q is not a UUIDv7", resp.ID)
		}

		// The one new record decodes to this topic, id and body; consume it
		// so that the outbox never fills up while fuzzing.
		entries, err := ob.Read(ob.Checkpoint(), 2, 0)
		if err != nil || len(entries) != 1 {
			t.Fatalf("read outbox: %d entries, %v; want the 1 new record", len(entries), err)
		}
		ev, err := stream.DecodeEvent(entries[0].Data)
		if err != nil {
			t.Fatalf("decode the stored record: %v", err)
		}
		if ev.Topic != resp.Topic || !bytes.Equal(ev.Body, body) {
			t.Fatalf("stored topic %q body %q, want %q %q", ev.Topic, ev.Body, resp.Topic, body)
		}
		fields := map[string]string{}
		for i := 0; i+1 < len(ev.Fields); i += 2 {
			fields[ev.Fields[i]] = ev.Fields[i+1]
		}
		wantCT := contentType
		if wantCT == "" {
			wantCT = "application/octet-stream"
		}
		if fields[stream.FieldID] != resp.ID || fields[stream.FieldContentType] != wantCT || fields[stream.FieldSource] != "billing" {
			t.Fatalf("stored fields %q, want id %q, ct %q", ev.Fields, resp.ID, wantCT)
		}
		if hasOrdering && fields[stream.HeaderField+"Ordering-Key"] != ordering {
			t.Fatalf("stored Ordering-Key %q, want %q", fields[stream.HeaderField+"Ordering-Key"], ordering)
		}
		if err := ob.Commit(entries[0].Next); err != nil {
			t.Fatalf("commit: %v", err)
		}
	})
}
