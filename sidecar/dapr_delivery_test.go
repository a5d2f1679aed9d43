package sidecar

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-sidecar/ferry/config"
	"github.com/ferry-sidecar/ferry/internal/redistest"
)

// daprApp is a scripted Dapr-style app: its /dapr/subscribe answer and one
// answer per delivery, chosen from the delivered CloudEvent.
type daprApp struct {
	srv *httptest.Server
	mu  sync.Mutex
	got map[string][]map[string]any // by path
}

func newDaprApp(t *testing.T, subscribe string, answer func(path string, ce map[string]any, n int) (int, string)) *daprApp {
	a := &daprApp{got: map[string][]map[string]any{}}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/dapr/subscribe" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, subscribe)
			return
		}
		b, _ := io.ReadAll(r.Body)
		var ce map[string]any
		if r.Header.Get("Content-Type") != "application/cloudevents+json" || json.Unmarshal(b, &ce) != nil {
			t.Errorf("delivery to %s is not a structured CloudEvent: %s %q", r.URL.Path, r.Header.Get("Content-Type"), b)
		}
		if r.Header.Get("Ferry-Message-Id") != ce["id"] {
			t.Errorf("Ferry-Message-Id %q, CloudEvent id %v", r.Header.Get("Ferry-Message-Id"), ce["id"])
		}
		a.mu.Lock()
		a.got[r.URL.Path] = append(a.got[r.URL.Path], ce)
		n := 0
		for _, e := range a.got[r.URL.Path] {
			if e["id"] == ce["id"] {
				n++
			}
		}
		a.mu.Unlock()
		status, body := answer(r.URL.Path, ce, n)
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *daprApp) at(path string) []map[string]any {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]map[string]any(nil), a.got[path]...)
}

const daprSubscribe = `[
 {"pubsubname":"pubsub","topic":"orders","routes":{"rules":[{"match":"event.type == \"order.vip\"","path":"/vip"}],"default":"/orders"},"deadLetterTopic":"orders-dead"},
 {"pubsubname":"pubsub","topic":"orders-dead","route":"/dead"},
 {"pubsubname":"pubsub","topic":"strict","routes":{"rules":[{"match":"event.data.kind == \"a\"","path":"/a"}]}},
 {"pubsubname":"pubsub","topic":"raw","route":"/raw","metadata":{"rawPayload":"true"}}
]`

// A sidecar with FERRY_APP_SUBSCRIBE=dapr reads the app's subscriptions,
// delivers structured CloudEvents to the routes the rules pick, and reads
// the answers as Dapr does; drops become dead letters (also published to
// the deadLetterTopic), expired events are dead-lettered unsent.
func TestDaprSubscriptionDelivery(t *testing.T) {
	srv := redistest.StartServer(t)
	app := newDaprApp(t, daprSubscribe, func(path string, ce map[string]any, n int) (int, string) {
		data, _ := ce["data"].(map[string]any)
		switch {
		case path == "/dead":
			return 200, ""
		case data["do"] == "retry" && n == 1:
			return 200, `{"status":"RETRY"}`
		case data["do"] == "400" && n == 1:
			return 400, "" // Dapr retries any non-2xx but 404
		case data["do"] == "drop":
			return 200, `{"status":"DROP"}`
		case data["do"] == "404":
			return 404, ""
		case data["do"] == "never":
			return 200, `{"status":"RETRY"}`
		}
		return 200, `{"status":"SUCCESS"}`
	})
	env := baseEnv(t, "shipping", srv.URL())
	env["FERRY_APP_SUBSCRIBE"] = "dapr"
	env["FERRY_APP_URL"] = app.srv.URL
	env["FERRY_RETRY_MAX_ATTEMPTS"] = "1000"
	env["FERRY_BREAKER_CONSECUTIVE_FAILURES"] = "100000" // the never-answered event must not open it
	env["FERRY_BREAKER_MIN_REQUESTS"] = "100000"
	n := startNode(t, env)
	publish := func(topic, query, ct, body string) {
		t.Helper()
		status, _, b := req(t, "POST", n.pub+"/v1.0/publish/pubsub/"+topic+query, body, map[string]string{"Content-Type": ct})
		if status != 204 {
			t.Fatalf("publish %s: %d %s", body, status, b)
		}
	}
	publish("orders", "", "application/json", `{"do":"retry"}`)
	publish("orders", "", "application/json", `{"do":"400"}`)
	publish("orders", "", "application/cloudevents+json", `{"specversion":"1.0","id":"vip-1","source":"shop","type":"order.vip","data":{"do":"ok"}}`)
	publish("orders", "", "application/json", `{"do":"drop"}`)
	publish("orders", "", "application/json", `{"do":"404"}`)
	publish("orders", "?metadata.ttlInSeconds=1", "application/json", `{"do":"never"}`)
	publish("strict", "", "application/json", `{"kind":"b"}`)
	publish("raw", "?metadata.rawPayload=true", "application/octet-stream", "\x00\x01raw")

	waitFor(t, 30*time.Second, "every outcome", func() bool {
		return len(app.at("/vip")) == 1 && len(app.at("/raw")) == 1 && len(app.at("/dead")) == 3 &&
			n.metric("ferry_deadletters_total", map[string]string{"subscription": "orders", "reason": "dropped"}) == 2 &&
			n.metric("ferry_deadletters_total", map[string]string{"subscription": "orders", "reason": "expired"}) == 1 &&
			n.metric("ferry_deadletters_total", map[string]string{"subscription": "strict", "reason": "dropped"}) == 1 &&
			n.metric("ferry_delivery_attempts_total", map[string]string{"subscription": "orders", "result": "success"}) >= 3
	})
	counts := map[string]int{}
	for _, ce := range app.at("/orders") {
		if ce["topic"] != "orders" || ce["pubsubname"] != "pubsub" || ce["source"] != "shipping" || ce["type"] != "com.dapr.event.sent" {
			t.Fatalf("delivered event %+v", ce)
		}
		counts[ce["data"].(map[string]any)["do"].(string)]++
	}
	if counts["retry"] != 2 || counts["400"] != 2 || counts["drop"] != 1 || counts["404"] != 1 {
		t.Fatalf("deliveries to /orders by kind: %v", counts)
	}
	if vip := app.at("/vip")[0]; vip["id"] != "vip-1" || vip["source"] != "shop" || vip["topic"] != "orders" {
		t.Fatalf("vip event %+v", vip)
	}
	raw := app.at("/raw")[0]
	if b, _ := base64.StdEncoding.DecodeString(raw["data_base64"].(string)); string(b) != "\x00\x01raw" || raw["datacontenttype"] != "application/octet-stream" {
		t.Fatalf("raw event %+v", raw)
	}
	for _, ce := range app.at("/dead") {
		if d := ce["data"].(map[string]any)["do"]; d != "drop" && d != "404" && d != "never" {
			t.Fatalf("dead-letter topic got %+v", ce)
		}
	}
	if len(app.at("/a")) != 0 {
		t.Fatal("an event no rule matches was delivered")
	}
	dls, err := n.sc.subs[0].DeadLetters(t.Context(), 10)
	if err != nil || len(dls) != 3 {
		t.Fatalf("dead letters of orders: %+v %v", dls, err)
	}
}

// A malformed /dapr/subscribe answer, or a rule that does not compile,
// stops the start with an error naming FERRY_APP_SUBSCRIBE (exit 2).
func TestDaprSubscribeRefusedAtStart(t *testing.T) {
	srv := redistest.StartServer(t)
	for _, tc := range []struct{ name, answer, want string }{
		{"not an array", `{"topic":"x"}`, "not a JSON array"},
		{"rule does not compile", `[{"pubsubname":"pubsub","topic":"orders","routes":{"rules":[{"match":"event.type ==","path":"/x"}],"default":"/d"}}]`, "does not compile"},
		{"other pubsub", `[{"pubsubname":"kafka","topic":"orders","route":"/o"}]`, "FERRY_PUBSUB_NAME"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := newDaprApp(t, tc.answer, nil)
			env := baseEnv(t, "shipping", srv.URL())
			env["FERRY_APP_SUBSCRIBE"] = "dapr"
			env["FERRY_APP_URL"] = app.srv.URL
			cfg, err := LoadConfig(env)
			if err != nil {
				t.Fatal(err)
			}
			_, err = New(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), nil)
			var ve *config.VarError
			if !errors.As(err, &ve) || ve.Var != "FERRY_APP_SUBSCRIBE" || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want a FERRY_APP_SUBSCRIBE error containing %q", err, tc.want)
			}
		})
	}
}

// Expiry applies to FERRY_SUBSCRIPTIONS too: an event published with
// metadata.ttlInSeconds is dead-lettered as expired, never delivered after.
func TestExpiredEventDeadLetteredInEnvMode(t *testing.T) {
	srv := redistest.StartServer(t)
	var mu sync.Mutex
	var after []time.Time
	app := newApp(t, func(r received) int {
		mu.Lock()
		after = append(after, time.Now())
		mu.Unlock()
		return 503
	})
	env := baseEnv(t, "billing", srv.URL())
	env["FERRY_SUBSCRIPTIONS"] = "orders=/in"
	env["FERRY_APP_URL"] = app.srv.URL
	env["FERRY_RETRY_MAX_ATTEMPTS"] = "1000"
	env["FERRY_BREAKER_CONSECUTIVE_FAILURES"] = "100000"
	env["FERRY_BREAKER_MIN_REQUESTS"] = "100000"
	n := startNode(t, env)
	if status, _, b := req(t, "POST", n.pub+"/v1.0/publish/pubsub/orders?metadata.ttlInSeconds=1", "x", nil); status != 204 {
		t.Fatalf("publish: %d %s", status, b)
	}
	waitFor(t, 15*time.Second, "expired dead letter", func() bool {
		return n.metric("ferry_deadletters_total", map[string]string{"subscription": "orders", "reason": "expired"}) == 1
	})
	dls, err := n.sc.subs[0].DeadLetters(t.Context(), 10)
	if err != nil || len(dls) != 1 || dls[0].Reason != "expired" {
		t.Fatalf("dead letters %+v %v", dls, err)
	}
	failedAt, _ := time.Parse(time.RFC3339Nano, dls[0].FailedAt)
	mu.Lock()
	defer mu.Unlock()
	if len(after) == 0 || after[len(after)-1].After(failedAt) {
		t.Fatalf("%d deliveries, the last after the dead letter (%v)", len(after), failedAt)
	}
}

// A re-published id queued behind its own retried first copy (same
// Ordering-Key) must not hold the id against that copy's retry: both, and
// the next event of the key, are delivered. (It deadlocked the key when the
// copy read later took the id at read time.)
func TestRetriedIDWithQueuedDuplicateDoesNotStallItsKey(t *testing.T) {
	srv := redistest.StartServer(t)
	var mu sync.Mutex
	seen := map[string]int{}
	app := newApp(t, func(r received) int {
		mu.Lock()
		defer mu.Unlock()
		id := r.Header.Get("Ferry-Message-Id")
		seen[id]++
		if id == "x" && seen[id] == 1 {
			return 503 // with Retry-After below: the retry comes after the re-publish is read
		}
		return 200
	})
	app.srv.Config.Handler = retryAfter(app.srv.Config.Handler)
	env := baseEnv(t, "shipping", srv.URL())
	env["FERRY_SUBSCRIPTIONS"] = "orders=/in"
	env["FERRY_APP_URL"] = app.srv.URL
	env["FERRY_RETRY_MAX_INTERVAL"] = "3s"
	n := startNode(t, env)
	key := map[string]string{"Ordering-Key": "cust-1", "Idempotency-Key": "x"}
	mustPublish(t, n, "orders", "x", key)
	app.next(t, 10*time.Second) // x answered 503, retry in ≥ 1 s
	mustPublish(t, n, "orders", "x again", key)
	mustPublish(t, n, "orders", "y", map[string]string{"Ordering-Key": "cust-1", "Idempotency-Key": "y"})
	waitFor(t, 20*time.Second, "x retried and y delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return seen["x"] == 2 && seen["y"] == 1
	})
}

// retryAfter adds Retry-After: 1 to 503 answers.
func retryAfter(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(&retryAfterWriter{ResponseWriter: w}, r)
	})
}

type retryAfterWriter struct{ http.ResponseWriter }

func (w *retryAfterWriter) WriteHeader(code int) {
	if code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	w.ResponseWriter.WriteHeader(code)
}
