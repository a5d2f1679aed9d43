package sidecar

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestPublishIsDeliveredWithHeaders(t *testing.T) {
	p := startPair(t, nil, nil)
	hdr := map[string]string{
		"Content-Type":    "application/json",
		"Ce-Type":         "order.created",
		"Ce-Source":       "/orders",
		"Traceparent":     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"Tracestate":      "vendor=1",
		"Idempotency-Key": "order-42",
		"Ordering-Key":    "customer-7",
		"X-Not-Carried":   "nope",
	}
	before := time.Now().UTC()
	id := mustPublish(t, p.pub, "orders", `{"order":42}`, hdr)
	if id != "order-42" {
		t.Fatalf("id = %q, want the Idempotency-Key", id)
	}
	got := p.app.next(t, 10*time.Second)
	if got.Path != "/events/orders" || got.Body != `{"order":42}` {
		t.Fatalf("delivery %s %q", got.Path, got.Body)
	}
	want := map[string]string{
		"Content-Type":     "application/json",
		"Ce-Type":          "order.created",
		"Ce-Source":        "/orders",
		"Traceparent":      hdr["Traceparent"],
		"Tracestate":       "vendor=1",
		"Idempotency-Key":  "order-42",
		"Ordering-Key":     "customer-7",
		"Ferry-Message-Id": "order-42",
		"Ferry-Topic":      "orders",
		"Ferry-Attempt":    "1",
	}
	for k, v := range want {
		if g := got.Header.Get(k); g != v {
			t.Errorf("header %s = %q, want %q", k, g, v)
		}
	}
	if got.Header.Get("X-Not-Carried") != "" || got.Header.Get("Ferry-Replay") != "" {
		t.Errorf("unexpected headers: %v", got.Header)
	}
	pub, err := time.Parse(time.RFC3339Nano, got.Header.Get("Ferry-Published-At"))
	if err != nil || pub.Before(before.Add(-time.Second)) || pub.After(time.Now().Add(time.Second)) || pub.Location() != time.UTC {
		t.Errorf("Ferry-Published-At %q: %v", got.Header.Get("Ferry-Published-At"), err)
	}
	// Without an Idempotency-Key the id is a fresh UUIDv7 and the content type defaults.
	id2 := mustPublish(t, p.pub, "orders", "", nil)
	if len(id2) != 36 || id2[14] != '7' {
		t.Errorf("generated id %q is not a UUIDv7", id2)
	}
	got = p.app.next(t, 10*time.Second)
	if got.Header.Get("Ferry-Message-Id") != id2 || got.Header.Get("Content-Type") != "application/octet-stream" || got.Body != "" {
		t.Errorf("second delivery: %v %q", got.Header, got.Body)
	}
	waitFor(t, 5*time.Second, "success counted", func() bool {
		return p.sub.metric("ferry_delivery_attempts_total", map[string]string{"subscription": "orders", "result": "success"}) == 2
	})
	if n := p.pub.metric("ferry_publish_requests_total", map[string]string{"topic": "orders", "code": "202"}); n != 2 {
		t.Errorf("ferry_publish_requests_total{code=202} = %v, want 2", n)
	}
}

func TestPublishRejectsBadRequestsWithProblems(t *testing.T) {
	srv := startPair(t, nil, nil)
	n := srv.pub
	long := strings.Repeat("k", 256)
	cases := []struct {
		name, method, path string
		hdr                map[string]string
		body               string
		status             int
		allow              string
	}{
		{"bad topic", "POST", "/v1/publish/-bad", nil, "x", 400, ""},
		{"topic too long", "POST", "/v1/publish/" + strings.Repeat("a", 129), nil, "x", 400, ""},
		{"bad idempotency key", "POST", "/v1/publish/orders", map[string]string{"Idempotency-Key": "has space"}, "x", 400, ""},
		{"long idempotency key", "POST", "/v1/publish/orders", map[string]string{"Idempotency-Key": long}, "x", 400, ""},
		{"bad ordering key", "POST", "/v1/publish/orders", map[string]string{"Ordering-Key": "é"}, "x", 400, ""},
		{"unknown path", "POST", "/v1/nope", nil, "x", 404, ""},
		{"wrong method", "GET", "/v1/publish/orders", nil, "", 405, "POST"},
		{"too large", "POST", "/v1/publish/orders", nil, strings.Repeat("x", 1<<20+1), 413, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(c.method, n.pub+c.path, strings.NewReader(c.body))
			for k, v := range c.hdr {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var pr problem
			if err := json.NewDecoder(resp.Body).Decode(&pr); err != nil {
				t.Fatalf("body is not JSON: %v", err)
			}
			if resp.StatusCode != c.status || pr.Status != c.status || pr.Title == "" || pr.Detail == "" || !strings.HasPrefix(pr.Type, problemTypeBase) {
				t.Errorf("got %d %+v, want %d", resp.StatusCode, pr, c.status)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type %q", ct)
			}
			if c.allow != "" && resp.Header.Get("Allow") != c.allow {
				t.Errorf("Allow %q, want %q", resp.Header.Get("Allow"), c.allow)
			}
		})
	}
	if got := n.sc.outbox.Stats().Appends; got != 0 {
		t.Errorf("rejected requests appended %d records", got)
	}
}

func TestAdminEndpoints(t *testing.T) {
	p := startPair(t, nil, nil)
	code, body := do(t, mustReq("GET", p.sub.admin+"/readyz"))
	var rd readiness
	if err := json.Unmarshal([]byte(body), &rd); err != nil || code != 200 || rd.Status != "ready" || rd.Checks["outbox"] != "ok" {
		t.Fatalf("readyz %d %s", code, body)
	}
	if code, _ := do(t, mustReq("GET", p.sub.admin+"/healthz")); code != 200 {
		t.Fatalf("healthz %d", code)
	}
	waitFor(t, 5*time.Second, "redis up", func() bool { return p.sub.sc.health.Up() })
	code, body = do(t, mustReq("GET", p.sub.admin+"/v1/status"))
	var st map[string]any
	if err := json.Unmarshal([]byte(body), &st); err != nil || code != 200 {
		t.Fatalf("status %d %s", code, body)
	}
	subs, _ := st["subscriptions"].([]any)
	if st["app_id"] != "billing" || st["redis"].(map[string]any)["up"] != true || len(subs) != 1 {
		t.Fatalf("status %s", body)
	}
	s0 := subs[0].(map[string]any)
	if s0["topic"] != "orders" || s0["route"] != "/events/orders" || s0["breaker"] != "closed" {
		t.Errorf("subscription status %v", s0)
	}
	for _, k := range []string{"pending", "lag"} {
		if _, ok := s0[k].(float64); !ok {
			t.Errorf("%s is not a JSON number: %v", k, s0[k])
		}
	}
	// The publisher has no subscriptions: an empty list, not null.
	_, body = do(t, mustReq("GET", p.pub.admin+"/v1/status"))
	if !strings.Contains(body, `"subscriptions":[]`) {
		t.Errorf("empty subscriptions not []: %s", body)
	}
	code, body = do(t, mustReq("GET", p.sub.admin+"/metrics"))
	if code != 200 || !strings.Contains(body, "ferry_build_info") || !strings.Contains(body, `ferry_breaker_state{subscription="orders"} 0`) {
		t.Errorf("metrics %d", code)
	}
	if code, _ := do(t, mustReq("GET", p.sub.admin+"/v1/deadletters/unknown")); code != 404 {
		t.Errorf("deadletters of an unsubscribed topic: %d", code)
	}
}

func mustReq(method, url string) *http.Request {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		panic(err)
	}
	return req
}
