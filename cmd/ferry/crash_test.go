package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/internal/redistest"
)

// Crash tests with the real binary: SIGKILL, a rewound checkpoint, Redis
// down at start and at shutdown. Issues 4 (effectively-once) and 5 (the
// outbox under failure).

const ordersStream = "ferry:{orders}:stream"

// crashApp is a subscriber app that counts deliveries per Ferry-Message-Id
// and the requests it is handling at any moment. A request is in flight
// from the moment its handler starts (before the body is read) until its
// answer is written and flushed; an answer 200 counts as a delivery. The
// app can hold its answers (holdAt, release) so that the requests in
// flight at a kill can be counted exactly.
type crashApp struct {
	srv      *httptest.Server
	inflight atomic.Int64 // requests received and not yet answered
	mu       sync.Mutex
	counts   map[string]int
	attempts map[string][]string // Ferry-Attempt of each 200, by id
	total    int
	// open holds the requests in flight with the first segment of their
	// path (the replica, when the test gives each its own FERRY_APP_URL).
	open map[*http.Request]string
	// gate, while set, holds every answer not yet being written;
	// answering counts those past it and not yet flushed.
	gate      chan struct{}
	answering int
	holdAt    int           // set gate once this many distinct ids are answered
	held      chan struct{} // closed when holdAt set the gate
	// hook, when set, runs before the answer; it returns the status.
	hook func(r *http.Request) int
}

func newCrashApp(t *testing.T, delay time.Duration, hook func(r *http.Request) int) *crashApp {
	a := &crashApp{counts: map[string]int{}, attempts: map[string][]string{}, open: map[*http.Request]string{}, hook: hook}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.inflight.Add(1) // first: the request is the app's from here
		replica, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		a.mu.Lock()
		a.open[r] = replica
		a.mu.Unlock()
		_, rerr := io.Copy(io.Discard, r.Body)
		time.Sleep(delay) // the app's work: keeps deliveries in flight
		code := http.StatusOK
		if a.hook != nil {
			code = a.hook(r)
		}
		a.mu.Lock()
		for a.gate != nil {
			g := a.gate
			a.mu.Unlock()
			<-g
			a.mu.Lock()
		}
		a.answering++
		if code == http.StatusOK && rerr == nil { // a torn request was not processed
			id := r.Header.Get("Ferry-Message-Id")
			if a.counts[id]++; a.counts[id] == 1 && a.holdAt > 0 && len(a.counts) >= a.holdAt {
				a.holdAt = 0
				a.gate = make(chan struct{})
				close(a.held)
			}
			a.attempts[id] = append(a.attempts[id], r.Header.Get("Ferry-Attempt")+"@"+time.Now().Format("05.000"))
			a.total++
		}
		a.mu.Unlock()
		w.WriteHeader(code)
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		a.mu.Lock()
		a.answering--
		delete(a.open, r)
		a.mu.Unlock()
		a.inflight.Add(-1)
	}))
	t.Cleanup(a.srv.Close)
	t.Cleanup(a.release) // never leave handlers blocked behind the gate
	return a
}

// holdAfter makes the app hold its answers once distinct ids have been
// answered 200; the returned channel is closed then.
func (a *crashApp) holdAfter(distinct int) <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.holdAt, a.held = distinct, make(chan struct{})
	return a.held
}

// release lets held answers go.
func (a *crashApp) release() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.gate != nil {
		close(a.gate)
		a.gate = nil
	}
}

// hold makes the app hold its answers until release.
func (a *crashApp) hold() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.gate == nil {
		a.gate = make(chan struct{})
	}
}

// openOf returns the requests of replica in flight, and whether every one
// of them has seen its connection closed (its sender is gone).
func (a *crashApp) openOf(replica string) (n int, orphaned bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	orphaned = true
	for r, rep := range a.open {
		if rep == replica {
			n++
			orphaned = orphaned && r.Context().Err() != nil
		}
	}
	return n, orphaned
}

// seen returns the number of distinct ids answered 200 and of 200 answers.
func (a *crashApp) seen() (distinct, total int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.counts), a.total
}

func (a *crashApp) count(id string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.counts[id]
}

// subscriberEnv is a "billing" replica delivering topic orders to appURL.
func subscriberEnv(t *testing.T, redisURL, appURL, hostname string) map[string]string {
	env := ferryEnv(t, "billing", redisURL)
	env["HOSTNAME"] = hostname
	env["FERRY_APP_URL"] = appURL
	env["FERRY_SUBSCRIPTIONS"] = "orders=/events/orders"
	env["FERRY_CLAIM_IDLE"] = "1s"
	env["FERRY_DEDUPE_LEASE"] = "1s"
	env["FERRY_SHUTDOWN_TIMEOUT"] = "2s"
	return env
}

// scrapeMetric reads one sample from a ferry's /metrics; labels are
// matched as name="value" pairs.
func scrapeMetric(t *testing.T, p *proc, name string, labels map[string]string) float64 {
	t.Helper()
	resp, err := http.Get(p.admin + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
next:
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		for k, v := range labels {
			if !strings.Contains(line, k+`="`+v+`"`) {
				continue next
			}
		}
		f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		return f
	}
	t.Fatalf("metric %s%v not exported", name, labels)
	return 0
}

// settled reports whether group acked every entry of the orders stream,
// which holds want entries.
func settled(rdb *redis.Client, group string, want int64) bool {
	ctx := context.Background()
	if n, err := rdb.XLen(ctx, ordersStream).Result(); err != nil || n != want {
		return false
	}
	last, err := rdb.XRevRangeN(ctx, ordersStream, "+", "-", 1).Result()
	if err != nil || len(last) != 1 {
		return false
	}
	groups, err := rdb.XInfoGroups(ctx, ordersStream).Result()
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

func outboxPending(t *testing.T, p *proc) float64 {
	t.Helper()
	ob, _ := p.status(t)["outbox"].(map[string]any)
	n, ok := ob["pending_records"].(float64)
	if !ok {
		t.Fatalf("status outbox %v", ob)
	}
	return n
}

func mustPublishKey(t *testing.T, p *proc, key string) {
	t.Helper()
	code, body := p.publish("orders", "event "+key, map[string]string{"Idempotency-Key": key})
	if code != http.StatusAccepted {
		t.Fatalf("publish %s: %d %s", key, code, body)
	}
}

// TestRelayResendAfterCheckpointRewindDeliversOnce: the publisher dies after
// XADD and before its checkpoint (made by putting back the checkpoint from
// before the relay), so it relays every record again; the subscriber's app
// sees each id once and the rest are dedupe hits.
func TestRelayResendAfterCheckpointRewindDeliversOnce(t *testing.T) {
	srv := redistest.StartServer(t)
	rdb := srv.Client(t)
	app := newCrashApp(t, 0, nil)
	pubEnv := ferryEnv(t, "orders-svc", srv.URL())
	pub := startFerry(t, pubEnv)
	sub := startFerry(t, subscriberEnv(t, srv.URL(), app.srv.URL, "billing-0"))

	cp := filepath.Join(pubEnv["FERRY_OUTBOX_DIR"], "checkpoint")
	old, err := os.ReadFile(cp)
	if err != nil && !os.IsNotExist(err) {
		t.Fatalf("read checkpoint: %v", err)
	}
	const n = 100
	for i := range n {
		mustPublishKey(t, pub, fmt.Sprintf("k-%d", i))
	}
	waitUntil(t, 20*time.Second, "all delivered and the checkpoint committed", func() bool {
		d, _ := app.seen()
		return d == n && settled(rdb, "billing", n) && outboxPending(t, pub) == 0
	})
	pub.kill()
	if old == nil {
		err = os.Remove(cp) // no checkpoint: relay from the start
	} else {
		err = os.WriteFile(cp, old, 0o644)
	}
	if err != nil {
		t.Fatalf("rewind checkpoint: %v", err)
	}
	pub = startFerry(t, pubEnv)
	waitUntil(t, 20*time.Second, "the re-sent records acked", func() bool {
		return settled(rdb, "billing", 2*n)
	})
	hits := scrapeMetric(t, sub, "ferry_dedupe_hits_total", map[string]string{"subscription": "orders"})
	t.Logf("re-sent %d records: %v dedupe hits", n, hits)
	if hits < n {
		t.Errorf("ferry_dedupe_hits_total = %v, want at least %d", hits, n)
	}
	for i := range n {
		if c := app.count(fmt.Sprintf("k-%d", i)); c != 1 {
			t.Errorf("k-%d delivered %d times, want 1", i, c)
		}
	}
	if code := pub.term(10 * time.Second); code != 0 {
		t.Errorf("publisher exit %d, want 0", code)
	}
}

// TestLeaseExpiryAfterOwnerDies: a replica takes a message, the app holds
// it, the replica is SIGKILLed; the other replica claims the idle entry
// once FERRY_CLAIM_IDLE passed and its dedupe lease expired, and delivers it.
func TestLeaseExpiryAfterOwnerDies(t *testing.T) {
	srv := redistest.StartServer(t)
	rdb := srv.Client(t)
	type hit struct{ replica, attempt string }
	hits := make(chan hit, 8)
	app := newCrashApp(t, 0, func(r *http.Request) int {
		replica, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		hits <- hit{replica, r.Header.Get("Ferry-Attempt")}
		if r.Header.Get("Ferry-Attempt") == "1" {
			<-r.Context().Done() // hold the first attempt until its sender dies
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	replicas := map[string]*proc{}
	for _, name := range []string{"r0", "r1"} {
		env := subscriberEnv(t, srv.URL(), app.srv.URL+"/"+name, "billing-"+name)
		env["FERRY_DELIVERY_TIMEOUT"] = "60s"
		replicas[name] = startFerry(t, env)
	}
	pub := startFerry(t, ferryEnv(t, "orders-svc", srv.URL()))
	mustPublishKey(t, pub, "x")

	var first hit
	select {
	case first = <-hits:
	case <-time.After(20 * time.Second):
		t.Fatal("x not delivered within 20s")
	}
	killed := time.Now()
	replicas[first.replica].kill()
	other := map[string]string{"r0": "r1", "r1": "r0"}[first.replica]
	select {
	case h := <-hits:
		if h.replica != other || h.attempt != "2" {
			t.Errorf("second delivery by %s attempt %s, want %s attempt 2", h.replica, h.attempt, other)
		}
		t.Logf("taken over by %s %s after the kill", h.replica, time.Since(killed).Round(10*time.Millisecond))
	case <-time.After(20 * time.Second):
		t.Fatalf("x not taken over by %s within 20s", other)
	}
	waitUntil(t, 10*time.Second, "x acked", func() bool { return settled(rdb, "billing", 1) })
	if c := app.count("x"); c != 1 {
		t.Errorf("x answered 200 %d times, want 1", c)
	}
	if v, err := rdb.Get(context.Background(), "ferry:{orders}:dedupe:billing:x").Result(); err != nil || v != "d" {
		t.Errorf("dedupe state of x = %q, %v; want done", v, err)
	}
}

// TestStartsWithRedisDown: ferry starts, is ready and accepts publishes
// with Redis down; when Redis comes up, they are relayed.
func TestStartsWithRedisDown(t *testing.T) {
	srv := redistest.StartServer(t)
	srv.Stop(t)
	pub := startFerry(t, ferryEnv(t, "orders-svc", srv.URL()))
	const n = 10
	for i := range n {
		mustPublishKey(t, pub, fmt.Sprintf("d-%d", i))
	}
	st := pub.status(t)
	if r, _ := st["redis"].(map[string]any); r["up"] != false {
		t.Errorf("status redis %v with Redis down, want up false", st["redis"])
	}
	if got := outboxPending(t, pub); got != n {
		t.Errorf("pending records %v, want %d", got, n)
	}
	srv.Restart(t)
	rdb := srv.Client(t)
	waitUntil(t, 20*time.Second, "the events relayed", func() bool {
		l, err := rdb.XLen(context.Background(), ordersStream).Result()
		return err == nil && l == n
	})
	msgs, err := rdb.XRange(context.Background(), ordersStream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range msgs {
		if want := fmt.Sprintf("d-%d", i); m.Values["id"] != want {
			t.Errorf("entry %d has id %v, want %s (publish order)", i, m.Values["id"], want)
		}
	}
	if code := pub.term(10 * time.Second); code != 0 {
		t.Errorf("exit %d after SIGTERM with Redis up, want 0", code)
	}
}

// TestShutdownWithRedisDownKeepsRecords: SIGTERM with Redis down exits 1
// within the budget and logs the records left; the next start relays them.
// SIGTERM with Redis up exits 0.
func TestShutdownWithRedisDownKeepsRecords(t *testing.T) {
	srv := redistest.StartServer(t)
	env := ferryEnv(t, "orders-svc", srv.URL())
	env["FERRY_SHUTDOWN_TIMEOUT"] = "2s"
	pub := startFerry(t, env)
	srv.Stop(t)
	const n = 7
	for i := range n {
		mustPublishKey(t, pub, fmt.Sprintf("s-%d", i))
	}
	start := time.Now()
	code := pub.term(15 * time.Second)
	took := time.Since(start)
	t.Logf("SIGTERM with Redis down: exit %d after %s", code, took.Round(10*time.Millisecond))
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if took > 2*time.Second+2*time.Second {
		t.Errorf("exit took %s, budget 2s", took)
	}
	var left map[string]any
	for _, line := range strings.Split(pub.logs(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "shutdown with records left in the outbox" {
			left = rec
		}
	}
	if left == nil || left["records"] != float64(n) {
		t.Errorf("log line with the records left = %v, want records %d:\n%s", left, n, pub.logs())
	}

	srv.Restart(t)
	rdb := srv.Client(t)
	pub = startFerry(t, env)
	waitUntil(t, 20*time.Second, "the kept records relayed", func() bool {
		l, err := rdb.XLen(context.Background(), ordersStream).Result()
		return err == nil && l == n
	})
	waitUntil(t, 10*time.Second, "the checkpoint committed", func() bool { return outboxPending(t, pub) == 0 })
	if code := pub.term(15 * time.Second); code != 0 {
		t.Errorf("exit %d after SIGTERM with Redis up, want 0:\n%s", code, pub.logs())
	}
}

// TestPublisherKilledUnderLoadLosesNothingAcknowledged: SIGKILL the
// publisher while many clients publish; after a restart every event that
// got a 202 is delivered. Redis goes away in the middle of the load, so
// that at the kill many acknowledged events exist only in the outbox (Redis
// runs with an fsync'd AOF: what it took survives its restart).
func TestPublisherKilledUnderLoadLosesNothingAcknowledged(t *testing.T) {
	const clients = 16
	srv := redistest.StartServer(t, "--appendonly", "yes", "--appendfsync", "always")
	rdb := srv.Client(t)
	app := newCrashApp(t, 0, nil)
	pubEnv := ferryEnv(t, "orders-svc", srv.URL())
	pub := startFerry(t, pubEnv)
	startFerry(t, subscriberEnv(t, srv.URL(), app.srv.URL, "billing-0"))

	var mu sync.Mutex
	var acked []string
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 { // ends at the kill: the first failed publish stops this client
				key := fmt.Sprintf("c%d-%d", c, i)
				code, body := pub.publish("orders", key, map[string]string{"Idempotency-Key": key})
				if code != http.StatusAccepted {
					return
				}
				var r struct{ ID string }
				if json.Unmarshal([]byte(body), &r) != nil || r.ID != key {
					return
				}
				mu.Lock()
				acked = append(acked, key)
				mu.Unlock()
			}
		}()
	}
	ackedAtLeast := func(n int) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(acked) >= n
		}
	}
	waitUntil(t, 30*time.Second, "150 publishes acknowledged", ackedAtLeast(150))
	srv.Stop(t)
	waitUntil(t, 30*time.Second, "400 publishes acknowledged", ackedAtLeast(400))
	inOutbox := outboxPending(t, pub)
	pub.kill()
	wg.Wait()
	mu.Lock()
	ackedAtKill := append([]string(nil), acked...)
	mu.Unlock()

	srv.Restart(t)
	startFerry(t, pubEnv)
	waitUntil(t, 60*time.Second, "every acknowledged event delivered", func() bool {
		for _, id := range ackedAtKill {
			if app.count(id) == 0 {
				return false
			}
		}
		return true
	})
	l, _ := rdb.XLen(context.Background(), ordersStream).Result()
	distinct, total := app.seen()
	t.Logf("%d publishes acknowledged before the SIGKILL, %v of them not yet relayed shortly before it; %d stream entries, %d distinct ids delivered (%d deliveries)",
		len(ackedAtKill), inOutbox, l, distinct, total)
	if inOutbox == 0 {
		t.Errorf("nothing waited in the outbox at the kill: the test proved nothing")
	}
	if distinct < len(ackedAtKill) {
		t.Errorf("%d ids delivered, fewer than the %d acknowledged", distinct, len(ackedAtKill))
	}
}
