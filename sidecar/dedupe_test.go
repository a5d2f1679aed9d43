package sidecar

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/internal/redistest"
)

// Effectively-once (issue 4): the wire is at-least-once, the dedupe store
// makes it once to the app.

// startPairOn is startPair on a Redis the test started itself (with its own
// arguments).
func startPairOn(t *testing.T, srv *redistest.Server, subEnv map[string]string, answer func(received) int) *pair {
	t.Helper()
	p := &pair{redis: srv, rdb: srv.Client(t)}
	p.app = newApp(t, answer)
	p.pub = startNode(t, baseEnv(t, "orders-svc", srv.URL()))
	p.sub = startSubscriber(t, srv, p.app, "billing-0", subEnv)
	return p
}

// startSubscriber starts a "billing" replica named hostname that delivers
// topic orders to a.
func startSubscriber(t *testing.T, srv *redistest.Server, a *app, hostname string, extra map[string]string) *node {
	t.Helper()
	env := baseEnv(t, "billing", srv.URL())
	env["HOSTNAME"] = hostname
	env["FERRY_APP_URL"] = a.srv.URL
	env["FERRY_SUBSCRIPTIONS"] = "orders=/events/orders"
	for k, v := range extra {
		env[k] = v
	}
	return startNode(t, env)
}

// deliveriesByID counts the app's deliveries per Ferry-Message-Id.
func deliveriesByID(a *app) map[string]int {
	n := map[string]int{}
	for _, r := range a.all() {
		n[r.Header.Get(hdrMessageID)]++
	}
	return n
}

// groupSettled reports whether group has read every entry of the orders
// stream (want of them) and acked them all.
func groupSettled(t *testing.T, rdb *redis.Client, group string, want int64) bool {
	t.Helper()
	ctx := context.Background()
	if n, err := rdb.XLen(ctx, streamKey("orders")).Result(); err != nil || n != want {
		return false
	}
	last, err := rdb.XRevRangeN(ctx, streamKey("orders"), "+", "-", 1).Result()
	if err != nil || len(last) != 1 {
		return false
	}
	groups, err := rdb.XInfoGroups(ctx, streamKey("orders")).Result()
	if err != nil {
		return false
	}
	for _, g := range groups {
		if g.Name == group {
			return g.Pending == 0 && g.LastDeliveredID == last[0].ID
		}
	}
	return false
}

// getJSON GETs url and decodes a JSON object.
func getJSON(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	code, body := do(t, mustReq(http.MethodGet, url))
	var v map[string]any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("GET %s: %d %q: %v", url, code, body, err)
	}
	return code, v
}

func TestSameIdempotencyKeyIsDeliveredOnce(t *testing.T) {
	p := startPair(t, nil, nil)
	for i := range 5 {
		code, body := p.pub.publish("orders", fmt.Sprintf("try-%d", i), map[string]string{"Idempotency-Key": "order-7"})
		var r publishResponse
		if err := json.Unmarshal([]byte(body), &r); code != http.StatusAccepted || err != nil || r.ID != "order-7" || r.Topic != "orders" {
			t.Fatalf("publish %d: %d %s, want 202 answering id order-7", i, code, body)
		}
	}
	hits := map[string]string{"subscription": "orders"}
	waitFor(t, 15*time.Second, "all 5 entries acked", func() bool {
		return groupSettled(t, p.rdb, "billing", 5)
	})
	got := deliveriesByID(p.app)
	if got["order-7"] != 1 || len(got) != 1 {
		t.Fatalf("app deliveries %v, want order-7 once", got)
	}
	if h := p.sub.metric("ferry_dedupe_hits_total", hits); h != 4 {
		t.Errorf("ferry_dedupe_hits_total = %v, want 4", h)
	}
	if n := p.sub.metric("ferry_delivery_attempts_total", map[string]string{"subscription": "orders", "result": "success"}); n != 1 {
		t.Errorf("successful attempts = %v, want 1", n)
	}
}

// TestReplicasRacingOnTheSameIDsDeliverOnce runs two replicas of one app.
// Every id is published twice, so both replicas can read copies of it, and
// the app is slower than FERRY_CLAIM_IDLE, so each replica also XCLAIMs the
// other's pending entries while they are being delivered or still queued.
func TestReplicasRacingOnTheSameIDsDeliverOnce(t *testing.T) {
	srv := redistest.StartServer(t)
	rdb := srv.Client(t)
	a := newApp(t, func(received) int {
		time.Sleep(150 * time.Millisecond)
		return http.StatusOK
	})
	pub := startNode(t, baseEnv(t, "orders-svc", srv.URL()))
	extra := map[string]string{"FERRY_CLAIM_IDLE": "100ms", "FERRY_DELIVERY_CONCURRENCY": "4"}
	r0 := startSubscriber(t, srv, a, "billing-0", extra)
	r1 := startSubscriber(t, srv, a, "billing-1", extra)

	const n = 40
	for round := range 2 {
		for i := range n {
			mustPublish(t, pub, "orders", fmt.Sprintf("round %d", round), map[string]string{"Idempotency-Key": fmt.Sprintf("ev-%d", i)})
		}
	}
	hits := map[string]string{"subscription": "orders"}
	waitFor(t, 30*time.Second, "all 80 entries acked", func() bool {
		return groupSettled(t, rdb, "billing", 2*n)
	})
	got := deliveriesByID(a)
	for i := range n {
		if c := got[fmt.Sprintf("ev-%d", i)]; c != 1 {
			t.Errorf("ev-%d delivered %d times, want 1", i, c)
		}
	}
	if len(got) != n {
		t.Errorf("%d distinct ids delivered, want %d", len(got), n)
	}
	h0, h1 := r0.metric("ferry_dedupe_hits_total", hits), r1.metric("ferry_dedupe_hits_total", hits)
	ok := map[string]string{"subscription": "orders", "result": "success"}
	s0, s1 := r0.metric("ferry_delivery_attempts_total", ok), r1.metric("ferry_delivery_attempts_total", ok)
	t.Logf("replica 0: %v delivered, %v dedupe hits; replica 1: %v delivered, %v dedupe hits", s0, h0, s1, h1)
	if h0+h1 < n {
		t.Errorf("dedupe hits %v+%v, want at least %d (one per second copy)", h0, h1, n)
	}
	if s0+s1 != n {
		t.Errorf("successful attempts %v+%v, want %d", s0, s1, n)
	}
	if s0 == 0 || s1 == 0 {
		t.Errorf("one replica delivered nothing (%v, %v): the replicas did not race", s0, s1)
	}
}

// TestDedupeUnreachableDeliveriesWait stops Redis while the subscriber holds
// messages it already read: they must wait for the dedupe check, never be
// delivered without it; ferry stays ready and reports Redis down. Redis runs
// with an fsync'd AOF so that its restart keeps the stream, group and keys.
func TestDedupeUnreachableDeliveriesWait(t *testing.T) {
	srv := redistest.StartServer(t, "--appendonly", "yes", "--appendfsync", "always")
	entered := make(chan string, 16)
	hold := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(hold) }) }
	p := startPairOn(t, srv, map[string]string{"FERRY_DELIVERY_CONCURRENCY": "1", "FERRY_DEDUPE_LEASE": "1s"}, func(r received) int {
		id := r.Header.Get(hdrMessageID)
		entered <- id
		if id == "m-1" {
			<-hold
		}
		return http.StatusOK
	})
	t.Cleanup(release) // before the app server closes (cleanups run last first)

	for _, id := range []string{"m-1", "m-2", "m-3"} {
		mustPublish(t, p.pub, "orders", id, map[string]string{"Idempotency-Key": id})
	}
	select {
	case id := <-entered:
		if id != "m-1" {
			t.Fatalf("first delivery %s, want m-1", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("m-1 not delivered within 10s")
	}
	// All three read by the subscriber: m-2 and m-3 wait in memory for the worker.
	waitFor(t, 10*time.Second, "3 entries pending in the group", func() bool {
		n, err := p.rdb.XPending(context.Background(), streamKey("orders"), "billing").Result()
		return err == nil && n.Count == 3
	})
	read := time.Now()

	srv.Stop(t)
	// A claim taken when the messages were read may serve their first
	// attempt while it is younger than half the lease (preclaim.go); let
	// those age out, so that every delivery from now on needs a new check.
	time.Sleep(time.Until(read.Add(600 * time.Millisecond)))
	release() // the app answers 200 for m-1 while Redis is down
	up := map[string]string{}
	waitFor(t, 10*time.Second, "ferry_redis_up 0 on the subscriber", func() bool {
		return p.sub.metric("ferry_redis_up", up) == 0
	})
	// The worker now tries m-2 and m-3 every 500ms; watch for a while.
	observe := time.Now().Add(2 * time.Second)
	for time.Now().Before(observe) {
		select {
		case id := <-entered:
			t.Fatalf("%s delivered while the dedupe store was unreachable", id)
		case <-time.After(50 * time.Millisecond):
		}
		if code, _ := do(t, mustReq(http.MethodGet, p.sub.admin+"/readyz")); code != http.StatusOK {
			t.Fatalf("readyz %d with Redis down, want 200", code)
		}
	}
	code, st := getJSON(t, p.sub.admin+"/v1/status")
	if redisSt, _ := st["redis"].(map[string]any); code != http.StatusOK || redisSt["up"] != false {
		t.Fatalf("status %d %v, want redis.up false", code, st)
	}

	srv.Restart(t)
	waitFor(t, 20*time.Second, "all 3 acked after Redis returned", func() bool {
		return groupSettled(t, p.rdb, "billing", 3)
	})
	got := deliveriesByID(p.app)
	for _, id := range []string{"m-1", "m-2", "m-3"} {
		if got[id] != 1 {
			t.Errorf("%s delivered %d times, want 1 (all: %v)", id, got[id], got)
		}
	}
	if v, err := p.rdb.Get(context.Background(), "ferry:{orders}:dedupe:billing:m-1").Result(); err != nil || v != "d" {
		t.Errorf("dedupe state of m-1 = %q, %v; want done", v, err)
	}
}
