package sidecar

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// script answers a sequence of statuses per message id, then 200.
func script(statuses ...int) func(received) int {
	var mu sync.Mutex
	seen := map[string]int{}
	return func(r received) int {
		mu.Lock()
		defer mu.Unlock()
		id := r.Header.Get("Ferry-Message-Id")
		i := seen[id]
		seen[id]++
		if i < len(statuses) {
			return statuses[i]
		}
		return http.StatusOK
	}
}

func TestRetriesThenSucceeds(t *testing.T) {
	p := startPair(t, nil, script(500, 503, 429))
	mustPublish(t, p.pub, "orders", "x", map[string]string{"Idempotency-Key": "r1"})
	for want := 1; want <= 4; want++ {
		got := p.app.next(t, 10*time.Second)
		if a := got.Header.Get("Ferry-Attempt"); a != strconv.Itoa(want) {
			t.Fatalf("delivery %d has Ferry-Attempt %s", want, a)
		}
	}
	waitFor(t, 5*time.Second, "success", func() bool {
		return p.sub.metric("ferry_delivery_attempts_total", map[string]string{"result": "success"}) == 1
	})
	if r := p.sub.metric("ferry_delivery_attempts_total", map[string]string{"result": "retry"}); r != 3 {
		t.Errorf("retry attempts = %v, want 3", r)
	}
	if n := p.sub.metric("ferry_deadletters_total", nil); n != 0 {
		t.Errorf("dead letters = %v", n)
	}
}

func TestPoisonIsDeadLetteredAtOnceAndRedriven(t *testing.T) {
	var fail atomic.Bool
	fail.Store(true)
	p := startPair(t, nil, func(r received) int {
		if fail.Load() {
			return http.StatusUnprocessableEntity
		}
		return http.StatusOK
	})
	mustPublish(t, p.pub, "orders", "bad", map[string]string{"Idempotency-Key": "p1"})
	p.app.next(t, 10*time.Second)
	waitFor(t, 5*time.Second, "dead letter", func() bool {
		return p.sub.metric("ferry_deadletters_total", map[string]string{"reason": "poison"}) == 1
	})
	if n := len(p.app.all()); n != 1 {
		t.Fatalf("poison delivered %d times, want 1", n)
	}
	code, body := do(t, mustReq("GET", p.sub.admin+"/v1/deadletters/orders?limit=10"))
	var list struct {
		DeadLetters []DeadLetter `json:"deadletters"`
	}
	if err := json.Unmarshal([]byte(body), &list); err != nil || code != 200 || len(list.DeadLetters) != 1 {
		t.Fatalf("deadletters %d %s", code, body)
	}
	dl := list.DeadLetters[0]
	if dl.MessageID != "p1" || dl.Reason != "poison" || dl.Status != 422 || dl.Attempts != 1 || dl.FailedAt == "" {
		t.Errorf("dead letter %+v", dl)
	}
	if !strings.Contains(p.sub.logs.String(), `"msg":"dead-lettered"`) {
		t.Errorf("no dead-letter log line")
	}
	if code, _ := do(t, mustReq("GET", p.sub.admin+"/v1/deadletters/orders?limit=0")); code != 400 {
		t.Errorf("limit=0 answered %d", code)
	}

	// A second group on the same topic must never see the redriven message.
	other := newApp(t, nil)
	env := baseEnv(t, "audit", p.redis.URL())
	env["FERRY_APP_URL"] = other.srv.URL
	env["FERRY_SUBSCRIPTIONS"] = "orders=/audit"
	startNode(t, env)
	other.next(t, 10*time.Second) // audit gets the original once

	fail.Store(false)
	code, body = do(t, mustReq("POST", p.sub.admin+"/v1/deadletters/orders/redrive"))
	if code != 200 || strings.TrimSpace(body) != `{"redriven":1}` {
		t.Fatalf("redrive %d %s", code, body)
	}
	got := p.app.next(t, 10*time.Second)
	if got.Header.Get("Ferry-Message-Id") != "p1" || got.Header.Get("Ferry-Attempt") != "1" || got.Body != "bad" {
		t.Errorf("redriven delivery %v %q", got.Header, got.Body)
	}
	_, body = do(t, mustReq("GET", p.sub.admin+"/v1/deadletters/orders"))
	if !strings.Contains(body, `"deadletters":[]`) {
		t.Errorf("dead letters after redrive: %s", body)
	}
	// Give audit's consumer a full read cycle: it must have nothing new.
	mustPublish(t, p.pub, "orders", "marker", map[string]string{"Idempotency-Key": "marker"})
	if r := other.next(t, 10*time.Second); r.Header.Get("Ferry-Message-Id") != "marker" {
		t.Errorf("audit saw %s after the redrive, want only the marker", r.Header.Get("Ferry-Message-Id"))
	}
}

func TestExhaustedAfterMaxAttempts(t *testing.T) {
	p := startPair(t, map[string]string{"FERRY_RETRY_MAX_ATTEMPTS": "3"}, func(received) int { return 500 })
	mustPublish(t, p.pub, "orders", "x", map[string]string{"Idempotency-Key": "e1"})
	waitFor(t, 10*time.Second, "exhausted", func() bool {
		return p.sub.metric("ferry_deadletters_total", map[string]string{"reason": "exhausted"}) == 1
	})
	if n := len(p.app.all()); n != 3 {
		t.Errorf("delivered %d times, want 3", n)
	}
	dls, err := p.sub.sc.subs[0].DeadLetters(t.Context(), 10)
	if err != nil || len(dls) != 1 || dls[0].Attempts != 3 || dls[0].Status != 500 || dls[0].Reason != "exhausted" {
		t.Errorf("dead letters %+v %v", dls, err)
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	var first atomic.Int64
	var gap atomic.Int64
	p := startPair(t, map[string]string{"FERRY_RETRY_MAX_INTERVAL": "5s"}, nil)
	p.app.answer = func(r received) int {
		if r.Header.Get("Ferry-Attempt") == "1" {
			first.Store(time.Now().UnixNano())
			return 429
		}
		gap.Store(time.Now().UnixNano() - first.Load())
		return 200
	}
	// httptest cannot set Retry-After from answer(): wrap the handler.
	inner := p.app.srv.Config.Handler
	p.app.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Ferry-Attempt") == "1" {
			w.Header().Set("Retry-After", "1")
		}
		inner.ServeHTTP(w, r)
	})
	mustPublish(t, p.pub, "orders", "x", nil)
	p.app.next(t, 10*time.Second)
	p.app.next(t, 10*time.Second)
	if g := time.Duration(gap.Load()); g < 900*time.Millisecond {
		t.Errorf("retried after %s, want ≥ 1s (Retry-After)", g)
	}
}

// A message waiting for its retry does not hold back the others.
func TestNoHeadOfLineBlocking(t *testing.T) {
	p := startPair(t, map[string]string{"FERRY_RETRY_INITIAL_INTERVAL": "2s", "FERRY_RETRY_MAX_INTERVAL": "2s", "FERRY_DELIVERY_CONCURRENCY": "1"}, func(r received) int {
		if r.Body == "slow" {
			return 503
		}
		return 200
	})
	mustPublish(t, p.pub, "orders", "slow", nil)
	for i := range 5 {
		mustPublish(t, p.pub, "orders", "fast"+strconv.Itoa(i), nil)
	}
	start := time.Now()
	waitFor(t, 10*time.Second, "fast ones", func() bool {
		return p.sub.metric("ferry_delivery_attempts_total", map[string]string{"result": "success"}) == 5
	})
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("fast messages took %s: blocked behind the retry", d)
	}
}

func TestBreakerOpensAndStopsReading(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	p := startPair(t, map[string]string{
		"FERRY_BREAKER_MIN_REQUESTS": "3", "FERRY_BREAKER_FAILURE_RATIO": "0.5", "FERRY_BREAKER_OPEN_TIMEOUT": "2s",
		"FERRY_DELIVERY_CONCURRENCY": "1", "FERRY_RETRY_INITIAL_INTERVAL": "10ms", "FERRY_RETRY_MAX_INTERVAL": "20ms",
		"FERRY_RETRY_MAX_ATTEMPTS": "100",
	}, func(received) int {
		if down.Load() {
			return 500
		}
		return 200
	})
	for i := range 10 {
		mustPublish(t, p.pub, "orders", "m"+strconv.Itoa(i), nil)
	}
	waitFor(t, 10*time.Second, "breaker open", func() bool {
		return p.sub.metric("ferry_breaker_state", map[string]string{"subscription": "orders"}) == 2
	})
	// While open, no attempts are spent: watched over most of the open
	// timeout, a span in which a wrongly closed breaker, retrying every
	// 10-20 ms, would make dozens. One attempt may have been in flight.
	opened := time.Now()
	before := len(p.app.all())
	code, body := do(t, mustReq("GET", p.sub.admin+"/v1/status"))
	if code != 200 || !strings.Contains(body, `"breaker":"open"`) {
		t.Errorf("status while open: %s", body)
	}
	for time.Since(opened) < 1500*time.Millisecond {
		if now := len(p.app.all()); now > before+1 {
			t.Fatalf("%d attempts %s after the breaker opened", now-before, time.Since(opened).Round(time.Millisecond))
		}
		time.Sleep(20 * time.Millisecond) // observing a span of time: nothing to await
	}
	down.Store(false)
	waitFor(t, 15*time.Second, "all delivered after the breaker closes", func() bool {
		return p.sub.metric("ferry_delivery_attempts_total", map[string]string{"result": "success"}) == 10
	})
	if s := p.sub.metric("ferry_breaker_state", map[string]string{"subscription": "orders"}); s != 0 {
		t.Errorf("breaker state %v after recovery", s)
	}
	if !strings.Contains(p.sub.logs.String(), `"msg":"breaker state"`) {
		t.Errorf("breaker transitions not logged")
	}
}

func TestDeliveryRateLimit(t *testing.T) {
	p := startPair(t, map[string]string{"FERRY_DELIVERY_RATE": "20", "FERRY_DELIVERY_BURST": "1"}, nil)
	for i := range 10 {
		mustPublish(t, p.pub, "orders", strconv.Itoa(i), nil)
	}
	start := time.Now()
	waitFor(t, 10*time.Second, "delivered", func() bool { return len(p.app.all()) == 10 })
	if d := time.Since(start); d < 350*time.Millisecond {
		t.Errorf("10 deliveries at 20/s took only %s", d)
	}
	if n := p.sub.metric("ferry_ratelimit_throttled_total", map[string]string{"kind": "delivery"}); n < 5 {
		t.Errorf("throttled{delivery} = %v, want ≥ 5", n)
	}
}

func TestPublishRateLimit(t *testing.T) {
	srv := startPair(t, nil, nil)
	env := baseEnv(t, "limited", srv.redis.URL())
	env["FERRY_PUBLISH_RATE"] = "1"
	n := startNode(t, env)
	if code, _ := n.publish("orders", "a", nil); code != 202 {
		t.Fatalf("first publish %d", code)
	}
	req, _ := http.NewRequest("POST", n.pub+"/v1/publish/orders", strings.NewReader("b"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "1" || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("second publish %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if v := n.metric("ferry_ratelimit_throttled_total", map[string]string{"kind": "publish"}); v != 1 {
		t.Errorf("throttled{publish} = %v", v)
	}
}
