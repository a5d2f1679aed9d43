package sidecar

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-sidecar/ferry/internal/redistest"
)

// orderChecker is an app that checks per-key order and one-at-a-time
// delivery, and records how many keys were in flight at once.
type orderChecker struct {
	mu          sync.Mutex
	next        map[string]int // key ⇒ next sequence number expected
	inFlight    map[string]bool
	concurrent  int
	maxParallel int
	errors      []string
	failFirst   map[string]bool // body ⇒ answer 500 on its first attempt
	delivered   atomic.Int64
}

func (o *orderChecker) handle(r received) int {
	key := r.Header.Get("Ordering-Key")
	seq, _ := strconv.Atoi(strings.TrimPrefix(r.Body, key+"-"))
	o.mu.Lock()
	if o.inFlight[key] {
		o.errors = append(o.errors, "two deliveries of key "+key+" at once")
	}
	o.inFlight[key] = true
	o.concurrent++
	o.maxParallel = max(o.maxParallel, o.concurrent)
	fail := o.failFirst[r.Body] && r.Header.Get("Ferry-Attempt") == "1"
	if !fail && seq != o.next[key] {
		o.errors = append(o.errors, fmt.Sprintf("key %s: got %d, want %d", key, seq, o.next[key]))
	}
	o.mu.Unlock()
	time.Sleep(5 * time.Millisecond) // an app doing work: lets other keys overlap
	o.mu.Lock()
	defer o.mu.Unlock()
	o.inFlight[key] = false
	o.concurrent--
	if fail {
		return 500
	}
	o.next[key] = seq + 1
	o.delivered.Add(1)
	return 200
}

func newOrderChecker() *orderChecker {
	return &orderChecker{next: map[string]int{}, inFlight: map[string]bool{}, failFirst: map[string]bool{}}
}

func TestOrderingKeyDeliversInOrderPerKey(t *testing.T) {
	oc := newOrderChecker()
	const keys, perKey = 6, 15
	for k := range keys {
		oc.failFirst[fmt.Sprintf("k%d-%d", k, 3)] = true // a retried event holds back its key only
	}
	// Six keys fail their fourth event at once: six failures in a row, which
	// must not open the breaker here (default FERRY_BREAKER_CONSECUTIVE_FAILURES 5).
	p := startPair(t, map[string]string{"FERRY_DELIVERY_CONCURRENCY": "8", "FERRY_BREAKER_CONSECUTIVE_FAILURES": "20"}, oc.handle)
	for i := range perKey {
		for k := range keys {
			key := "k" + strconv.Itoa(k)
			mustPublish(t, p.pub, "orders", fmt.Sprintf("%s-%d", key, i), map[string]string{"Ordering-Key": key})
		}
	}
	waitFor(t, 20*time.Second, "all delivered", func() bool { return oc.delivered.Load() == keys*perKey })
	oc.mu.Lock()
	defer oc.mu.Unlock()
	if len(oc.errors) > 0 {
		t.Fatalf("ordering violated: %v", oc.errors)
	}
	if oc.maxParallel < 2 {
		t.Errorf("different keys were never delivered in parallel (max %d)", oc.maxParallel)
	}
}

// A subscriber whose sidecar was down catches up by itself, in order per key.
func TestCatchUpAfterDowntime(t *testing.T) {
	oc := newOrderChecker()
	p := startPair(t, nil, oc.handle)
	mustPublish(t, p.pub, "orders", "a-0", map[string]string{"Ordering-Key": "a"})
	waitFor(t, 10*time.Second, "first", func() bool { return oc.delivered.Load() == 1 })
	if err := p.sub.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	for i := 1; i <= 30; i++ {
		mustPublish(t, p.pub, "orders", fmt.Sprintf("a-%d", i), map[string]string{"Ordering-Key": "a"})
	}
	startNode(t, p.sub.env)
	waitFor(t, 20*time.Second, "caught up", func() bool { return oc.delivered.Load() == 31 })
	oc.mu.Lock()
	defer oc.mu.Unlock()
	if len(oc.errors) > 0 {
		t.Fatalf("catch-up out of order: %v", oc.errors)
	}
}

func TestReplayRewindsThisGroupOnly(t *testing.T) {
	p := startPair(t, nil, nil)
	audit := newApp(t, nil)
	env := baseEnv(t, "audit", p.redis.URL())
	env["FERRY_APP_URL"] = audit.srv.URL
	env["FERRY_SUBSCRIPTIONS"] = "orders=/audit"
	startNode(t, env)
	start := time.Now().UTC().Add(-time.Second)
	for i := range 3 {
		mustPublish(t, p.pub, "orders", "e"+strconv.Itoa(i), map[string]string{"Idempotency-Key": "id-" + strconv.Itoa(i)})
	}
	for range 3 {
		p.app.next(t, 10*time.Second)
		audit.next(t, 10*time.Second)
	}
	replay := func(body string) (int, string) {
		req, _ := http.NewRequest("POST", p.sub.admin+"/v1/subscriptions/orders/replay", strings.NewReader(body))
		return do(t, req)
	}
	for _, bad := range []string{`{"from":"yesterday"}`, `{"from":"1-2-3"}`, `{}`, `{"from":"0","x":1}`, `{"from":"0"}{}`, `{"from":"0","from":"1"}`} {
		if code, body := replay(bad); code != 400 || !strings.Contains(body, "problem") && !strings.Contains(body, "status") {
			t.Errorf("replay %s: %d %s", bad, code, body)
		}
	}
	req, _ := http.NewRequest("POST", p.sub.admin+"/v1/subscriptions/nope/replay", strings.NewReader(`{"from":"0"}`))
	if code, _ := do(t, req); code != 404 {
		t.Errorf("replay of an unsubscribed topic: %d", code)
	}
	code, body := replay(`{"from":"` + start.Format(time.RFC3339Nano) + `"}`)
	var r map[string]string
	if err := json.Unmarshal([]byte(body), &r); err != nil || code != 200 || r["replayed_from"] != strconv.FormatInt(start.UnixMilli(), 10)+"-0" {
		t.Fatalf("replay: %d %s", code, body)
	}
	replayed := map[string]bool{}
	for range 3 {
		got := p.app.next(t, 10*time.Second)
		if got.Header.Get("Ferry-Replay") != "true" {
			t.Errorf("replayed delivery %q without Ferry-Replay: true", got.Body)
		}
		replayed[got.Body] = true
	}
	if !replayed["e0"] || !replayed["e1"] || !replayed["e2"] {
		t.Errorf("replayed %v, want e0 e1 e2", replayed)
	}
	// New events after the replay are not replays, and are delivered once.
	mustPublish(t, p.pub, "orders", "after", nil)
	got := p.app.next(t, 10*time.Second)
	if got.Body != "after" || got.Header.Get("Ferry-Replay") != "" {
		t.Errorf("after replay: %q replay=%q", got.Body, got.Header.Get("Ferry-Replay"))
	}
	if a := audit.next(t, 10*time.Second); a.Body != "after" {
		t.Errorf("audit saw %q: the replay leaked to another group", a.Body)
	}
}

func TestSubscribeFromLatest(t *testing.T) {
	srv := redistest.StartServer(t)
	pub := startNode(t, baseEnv(t, "orders-svc", srv.URL()))
	mustPublish(t, pub, "orders", "old", nil)
	rdb := srv.Client(t)
	waitFor(t, 5*time.Second, "relayed", func() bool { return rdb.XLen(t.Context(), streamKey("orders")).Val() == 1 })
	a := newApp(t, nil)
	env := baseEnv(t, "late", srv.URL())
	env["FERRY_APP_URL"] = a.srv.URL
	env["FERRY_SUBSCRIPTIONS"] = "orders=/x"
	env["FERRY_SUBSCRIBE_FROM"] = "latest"
	late := startNode(t, env)
	waitFor(t, 5*time.Second, "group created", func() bool {
		gs, _ := rdb.XInfoGroups(t.Context(), streamKey("orders")).Result()
		return len(gs) == 1
	})
	mustPublish(t, pub, "orders", "new", nil)
	if got := a.next(t, 10*time.Second); got.Body != "new" {
		t.Errorf("latest subscriber got %q first", got.Body)
	}
	_ = late
}

// Trimming keeps what a lagging group still needs, then trims once it caught up.
func TestRetentionProtectsUndelivered(t *testing.T) {
	srv := redistest.StartServer(t, "--stream-node-max-entries", "4")
	rdb := srv.Client(t)
	a := newApp(t, nil)
	subEnv := baseEnv(t, "billing", srv.URL())
	subEnv["FERRY_APP_URL"] = a.srv.URL
	subEnv["FERRY_SUBSCRIPTIONS"] = "orders=/x"
	subEnv["FERRY_STREAM_MAX_LEN"] = "10"
	sub := startNode(t, subEnv)
	waitFor(t, 5*time.Second, "group", func() bool { return len(rdb.XInfoGroups(t.Context(), streamKey("orders")).Val()) == 1 })
	if err := sub.stop(); err != nil {
		t.Fatal(err)
	}
	pubEnv := baseEnv(t, "orders-svc", srv.URL())
	pubEnv["FERRY_STREAM_MAX_LEN"] = "10"
	pub := startNode(t, pubEnv)
	for i := range 60 {
		mustPublish(t, pub, "orders", strconv.Itoa(i), nil)
	}
	waitFor(t, 5*time.Second, "relayed", func() bool { return pub.metric("ferry_relay_records_total", map[string]string{"result": "ok"}) == 60 })
	// Several trim rounds pass (100ms each in tests): nothing undelivered goes.
	rounds := pub.sc.trimmer.Rounds()
	waitFor(t, 5*time.Second, "three trim rounds", func() bool { return pub.sc.trimmer.Rounds() >= rounds+3 })
	if n := rdb.XLen(t.Context(), streamKey("orders")).Val(); n != 60 {
		t.Fatalf("stream length %d while billing lags, want 60", n)
	}
	sub2 := startNode(t, subEnv)
	waitFor(t, 20*time.Second, "all delivered", func() bool { return len(a.all()) == 60 })
	waitFor(t, 10*time.Second, "trimmed", func() bool {
		n := rdb.XLen(t.Context(), streamKey("orders")).Val()
		return n >= 10 && n < 20
	})
	_ = sub2
}

// A group that lags past retention is reported by a metric and a log line.
func TestRetentionLagIsReported(t *testing.T) {
	gate := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(gate) }) }
	// Small stream nodes, so that approximate trimming does trim.
	srv := redistest.StartServer(t, "--stream-node-max-entries", "4")
	p := startPairOn(t, srv, map[string]string{"FERRY_STREAM_MAX_LEN": "10", "FERRY_DELIVERY_CONCURRENCY": "1"}, func(received) int {
		<-gate
		return 200
	})
	t.Cleanup(open) // before the app's Close, which waits for its handlers
	blocked := map[string]string{"subscription": "orders"}
	for i := range 30 {
		mustPublish(t, p.pub, "orders", strconv.Itoa(i), nil)
	}
	waitFor(t, 10*time.Second, "ferry_retention_blocked 1", func() bool { return p.sub.metric("ferry_retention_blocked", blocked) == 1 })
	if !strings.Contains(p.sub.logs.String(), "lags past stream retention") {
		t.Errorf("no log line for the lagging group")
	}
	// The group has read all 30 (they are pending, being delivered one at a
	// time): none may be trimmed, though MAX_LEN is 10.
	rounds := p.sub.sc.trimmer.Rounds()
	waitFor(t, 5*time.Second, "three trim rounds", func() bool { return p.sub.sc.trimmer.Rounds() >= rounds+3 })
	if n := p.rdb.XLen(t.Context(), streamKey("orders")).Val(); n != 30 {
		t.Errorf("stream length %d while the group lags, want 30", n)
	}
	open()
	waitFor(t, 20*time.Second, "delivered", func() bool { return len(p.app.all()) == 30 })
	waitFor(t, 10*time.Second, "ferry_retention_blocked 0", func() bool { return p.sub.metric("ferry_retention_blocked", blocked) == 0 })
	waitFor(t, 10*time.Second, "trimmed to about MAX_LEN", func() bool {
		n := p.rdb.XLen(t.Context(), streamKey("orders")).Val()
		return n >= 10 && n < 16
	})
}
