package sidecar

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-sidecar/ferry/internal/redistest"
	"github.com/ferry-sidecar/ferry/stream"
)

// req sends method url with body and headers and returns status, headers and body.
func req(t *testing.T, method, url, body string, hdr map[string]string) (int, http.Header, string) {
	t.Helper()
	r, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// daprError decodes Dapr's error body.
func daprError(t *testing.T, body string) (code, msg string) {
	t.Helper()
	var e struct {
		ErrorCode string `json:"errorCode"`
		Message   string `json:"message"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("not a Dapr error body: %q", body)
	}
	return e.ErrorCode, e.Message
}

func TestDaprPublishAnswers(t *testing.T) {
	srv := redistest.StartServer(t)
	env := baseEnv(t, "orders-svc", srv.URL())
	env["FERRY_API_TOKEN"] = "s3cret"
	env["FERRY_PUBLISH_TOPICS"] = "orders,audit.*"
	n := startNode(t, env)
	rdb := srv.Client(t)
	tok := map[string]string{"dapr-api-token": "s3cret", "Content-Type": "application/json", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}

	for _, tc := range []struct {
		name, method, path, body string
		hdr                      map[string]string
		status                   int
		code                     string
	}{
		{"published", "POST", "/v1.0/publish/pubsub/orders", `{"n":1}`, tok, 204, ""},
		{"put as Dapr", "PUT", "/v1.0/publish/pubsub/orders", `{"n":2}`, tok, 204, ""},
		{"bearer token", "POST", "/v1.0/publish/pubsub/orders", `x`, map[string]string{"Authorization": "Bearer s3cret"}, 204, ""},
		{"no token", "POST", "/v1.0/publish/pubsub/orders", `x`, nil, 401, "ERR_UNAUTHORIZED"},
		{"wrong token", "POST", "/v1.0/publish/pubsub/orders", `x`, map[string]string{"dapr-api-token": "nope"}, 401, "ERR_UNAUTHORIZED"},
		{"unknown pubsub", "POST", "/v1.0/publish/kafka/orders", `x`, tok, 404, "ERR_PUBSUB_NOT_FOUND"},
		{"topic out of scope", "POST", "/v1.0/publish/pubsub/payments", `x`, tok, 403, "ERR_PUBSUB_FORBIDDEN"},
		{"empty topic", "POST", "/v1.0/publish/pubsub/", `x`, tok, 404, "ERR_TOPIC_NAME_EMPTY"},
		{"bad ttl", "POST", "/v1.0/publish/pubsub/orders?metadata.ttlInSeconds=soon", `x`, tok, 400, "ERR_PUBSUB_REQUEST_METADATA"},
		{"bad rawPayload", "POST", "/v1.0/publish/pubsub/orders?metadata.rawPayload=maybe", `x`, tok, 400, "ERR_PUBSUB_REQUEST_METADATA"},
		{"cloudevent not an object", "POST", "/v1.0/publish/pubsub/orders", `[1]`, map[string]string{"dapr-api-token": "s3cret", "Content-Type": "application/cloudevents+json"}, 500, "ERR_PUBSUB_CLOUD_EVENTS_SER"},
		{"bulk entry bad", "POST", "/v1.0-alpha1/publish/bulk/pubsub/orders", `[{"entryId":"1","event":"x","contentType":"application/octet-stream"}]`, tok, 400, "ERR_PUBSUB_EVENTS_SER"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, _, body := req(t, tc.method, n.pub+tc.path, tc.body, tc.hdr)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, body)
			}
			if tc.code == "" {
				if body != "" {
					t.Fatalf("204 with a body: %q", body)
				}
				return
			}
			if code, _ := daprError(t, body); code != tc.code {
				t.Fatalf("errorCode %q, want %q (%s)", code, tc.code, body)
			}
		})
	}

	// The wrapped events reach the stream as Dapr wraps them.
	var entries []map[string]any
	waitFor(t, 10*time.Second, "3 events relayed", func() bool {
		msgs, err := rdb.XRange(context.Background(), stream.Key("orders"), "-", "+").Result()
		if err != nil || len(msgs) < 3 {
			return false
		}
		entries = entries[:0]
		for _, m := range msgs {
			entries = append(entries, m.Values)
		}
		return true
	})
	m := stream.ParseMessage("0-1", entries[0])
	var ce map[string]any
	if err := json.Unmarshal([]byte(m.Body), &ce); err != nil {
		t.Fatalf("stored body is not a CloudEvent: %q", m.Body)
	}
	if m.ContentType != "application/cloudevents+json" || ce["id"] != m.ID || ce["source"] != "orders-svc" ||
		ce["type"] != "com.dapr.event.sent" || ce["specversion"] != "1.0" || ce["topic"] != "orders" ||
		ce["pubsubname"] != "pubsub" || ce["datacontenttype"] != "application/json" ||
		ce["traceparent"] != tok["traceparent"] || ce["data"].(map[string]any)["n"] != 1.0 {
		t.Fatalf("stored event %+v (content type %s, id %s)", ce, m.ContentType, m.ID)
	}
	if m.Header.Get("Traceparent") != tok["traceparent"] {
		t.Fatalf("traceparent not carried: %v", m.Header)
	}
}

func TestDaprPublishTTLAndRawPayloadStored(t *testing.T) {
	srv := redistest.StartServer(t)
	n := startNode(t, baseEnv(t, "orders-svc", srv.URL()))
	rdb := srv.Client(t)
	before := time.Now()
	status, _, body := req(t, "POST", n.pub+"/v1.0/publish/pubsub/raw?metadata.rawPayload=true&metadata.ttlInSeconds=60", "raw bytes", map[string]string{"Content-Type": "text/plain"})
	if status != 204 {
		t.Fatalf("publish: %d %s", status, body)
	}
	var msg *stream.Message
	waitFor(t, 10*time.Second, "relayed", func() bool {
		msgs, err := rdb.XRange(context.Background(), stream.Key("raw"), "-", "+").Result()
		if err != nil || len(msgs) != 1 {
			return false
		}
		msg = stream.ParseMessage(msgs[0].ID, msgs[0].Values)
		return true
	})
	if msg.Body != "raw bytes" || msg.ContentType != "text/plain" {
		t.Fatalf("raw payload stored as %q (%s), want the body as sent", msg.Body, msg.ContentType)
	}
	if d := msg.ExpiresAt.Sub(before); d < 59*time.Second || d > 2*time.Minute {
		t.Fatalf("expiry %v after the publish, want 60s", d)
	}
}

func TestDaprBulkPublish(t *testing.T) {
	srv := redistest.StartServer(t)
	n := startNode(t, baseEnv(t, "orders-svc", srv.URL()))
	var b strings.Builder
	b.WriteString("[")
	for i := range 50 {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`{"entryId":"e` + string(rune('a'+i%26)) + string(rune('a'+i/26)) + `","event":{"i":` + strings.Repeat("1", 1+i%5) + `},"contentType":"application/json"}`)
	}
	b.WriteString("]")
	syncs := n.sc.outbox.Stats().Syncs
	appends := n.sc.outbox.Stats().Appends
	status, _, body := req(t, "POST", n.pub+"/v1.0-alpha1/publish/bulk/pubsub/orders", b.String(), map[string]string{"Content-Type": "application/json"})
	if status != 204 {
		t.Fatalf("bulk: %d %s", status, body)
	}
	if d := n.sc.outbox.Stats().Syncs - syncs; d != 1 {
		t.Fatalf("bulk of 50 took %d fsyncs, want 1", d)
	}
	if d := n.sc.outbox.Stats().Appends - appends; d != 50 {
		t.Fatalf("bulk appended %d records, want 50", d)
	}
	// The v1.0 alias answers too.
	if status, _, body := req(t, "POST", n.pub+"/v1.0/publish/bulk/pubsub/orders", `[{"entryId":"x","event":"aGk=","contentType":"application/octet-stream"}]`, nil); status != 204 {
		t.Fatalf("bulk alias: %d %s", status, body)
	}
}

// An outbox that refuses fails the whole bulk: every entry is listed in
// Dapr's failedEntries, with the outbox's 503 and Retry-After.
func TestDaprBulkFailureListsEveryEntry(t *testing.T) {
	srv := redistest.StartServer(t)
	n := startNodeWith(t, baseEnv(t, "orders-svc", srv.URL()), func(s *Sidecar) {
		s.injectOutboxFaults(func() error { return syscall.ENOSPC }, nil)
	})
	status, hdr, body := req(t, "POST", n.pub+"/v1.0-alpha1/publish/bulk/pubsub/orders",
		`[{"entryId":"a","event":{"x":1},"contentType":"application/json"},{"entryId":"b","event":"t","contentType":"text/plain"}]`, nil)
	if status != 503 || hdr.Get("Retry-After") == "" {
		t.Fatalf("bulk on a full disk: %d Retry-After %q, want 503 with Retry-After", status, hdr.Get("Retry-After"))
	}
	var r struct {
		FailedEntries []struct{ EntryID, Error string } `json:"failedEntries"`
		ErrorCode     string                            `json:"errorCode"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil || r.ErrorCode != "ERR_PUBSUB_PUBLISH_MESSAGE" ||
		len(r.FailedEntries) != 2 || r.FailedEntries[0].EntryID != "a" || r.FailedEntries[1].EntryID != "b" ||
		!strings.Contains(r.FailedEntries[0].Error, "ENOSPC") {
		t.Fatalf("bulk failure body %s (%v)", body, err)
	}
	status, hdr, body = req(t, "POST", n.pub+"/v1.0/publish/pubsub/orders", `x`, nil)
	if code, _ := daprError(t, body); status != 503 || hdr.Get("Retry-After") == "" || code != "ERR_PUBSUB_PUBLISH_MESSAGE" {
		t.Fatalf("publish on a full disk: %d %s", status, body)
	}
}

func TestCloudEventsOnNativeAPI(t *testing.T) {
	srv := redistest.StartServer(t)
	n := startNode(t, baseEnv(t, "orders-svc", srv.URL()))
	ce := map[string]string{"Content-Type": "application/cloudevents+json"}
	batch := map[string]string{"Content-Type": "application/cloudevents-batch+json"}
	ev := func(id string) string {
		return `{"specversion":"1.0","id":"` + id + `","source":"/orders","type":"order.created","data":{"n":1}}`
	}

	status, _, body := req(t, "POST", n.pub+"/v1/publish/orders", ev("order-1"), ce)
	if status != 202 || !strings.Contains(body, `"id":"order-1"`) {
		t.Fatalf("structured: %d %s", status, body)
	}
	status, _, body = req(t, "POST", n.pub+"/v1/publish/orders", ev("order-2"), map[string]string{"Content-Type": "application/cloudevents+json", "Idempotency-Key": "k-2"})
	if status != 202 || !strings.Contains(body, `"id":"k-2"`) {
		t.Fatalf("structured with Idempotency-Key: %d %s", status, body)
	}
	for _, tc := range []struct{ name, body, want string }{
		{"no id", `{"specversion":"1.0","source":"s","type":"t"}`, `attribute \"id\": required`},
		{"spec 0.3", `{"specversion":"0.3","id":"a","source":"s","type":"t"}`, `specversion`},
		{"id not a key", `{"specversion":"1.0","id":"has space","source":"s","type":"t"}`, `attribute \"id\"`},
	} {
		status, hdr, body := req(t, "POST", n.pub+"/v1/publish/orders", tc.body, ce)
		if status != 400 || hdr.Get("Content-Type") != "application/problem+json" || !strings.Contains(body, tc.want) {
			t.Fatalf("%s: %d %s %s, want 400 problem naming %s", tc.name, status, hdr.Get("Content-Type"), body, tc.want)
		}
	}

	syncs := n.sc.outbox.Stats().Syncs
	status, _, body = req(t, "POST", n.pub+"/v1/publish/orders", "["+ev("b-1")+","+ev("b-2")+","+ev("b-3")+"]", batch)
	if status != 202 || body != `{"ids":["b-1","b-2","b-3"],"topic":"orders"}`+"\n" {
		t.Fatalf("batch: %d %q", status, body)
	}
	if d := n.sc.outbox.Stats().Syncs - syncs; d != 1 {
		t.Fatalf("batch of 3 took %d fsyncs, want 1", d)
	}
	appends := n.sc.outbox.Stats().Appends
	status, _, body = req(t, "POST", n.pub+"/v1/publish/orders", "["+ev("c-1")+`,{"id":"c-2"}]`, batch)
	if status != 400 || !strings.Contains(body, "event 1") {
		t.Fatalf("batch with a bad entry: %d %s, want 400 naming event 1", status, body)
	}
	if n.sc.outbox.Stats().Appends != appends {
		t.Fatal("a refused batch appended records")
	}
}
