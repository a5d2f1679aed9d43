package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/internal/redistest"
)

// End-to-end tests of issue 14, "an app that is down is not a bad message":
// the real binary, real Redis, and a real app server that is stopped and
// started again on the same port.

const ordersDLQ = "ferry:{orders}:dlq:billing"

// envSeconds reads a whole number of seconds from the environment variable
// name, for shorter local runs; def when unset.
func envSeconds(t *testing.T, name string, def int) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return time.Duration(def) * time.Second
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive number of seconds", name, v)
	}
	return time.Duration(n) * time.Second
}

// appMode is what the app on its port does.
type appMode int

const (
	appDown     appMode = iota // nothing listens: connections are refused
	appUp                      // an HTTP server answers
	appCrashing                // accepts connections and closes them without reading or answering
)

// flakyApp is a subscriber app on one fixed loopback port that a test stops
// and starts. It records, per Ferry-Message-Id, every Ferry-Attempt it saw
// and when it first answered 200.
type flakyApp struct {
	t    *testing.T
	addr string
	// hook, when set, picks the status for a delivery (default 200).
	hook func(r *http.Request) int
	// health is the status of GET /healthz.
	health atomic.Int32

	ctl     sync.Mutex // serialises start and stop
	mode    appMode
	ln      net.Listener
	srv     *http.Server
	stopped chan struct{} // closed when the accept loop of ln returned
	upAt    time.Time     // when ln was opened in mode appUp

	mu       sync.Mutex
	firstOK  map[string]time.Time
	attempts map[string][]int // Ferry-Attempt of every delivery, by id
	oks      int
	requests atomic.Int64
}

func newFlakyApp(t *testing.T) *flakyApp {
	a := &flakyApp{
		t:        t,
		addr:     fmt.Sprintf("127.0.0.1:%d", redistest.FreePort(t)),
		firstOK:  map[string]time.Time{},
		attempts: map[string][]int{},
	}
	a.health.Store(http.StatusOK)
	t.Cleanup(func() { a.set(appDown) })
	return a
}

func (a *flakyApp) url() string { return "http://" + a.addr }

func (a *flakyApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/healthz" {
		w.WriteHeader(int(a.health.Load()))
		return
	}
	a.requests.Add(1)
	_, _ = io.Copy(io.Discard, r.Body)
	code := http.StatusOK
	if a.hook != nil {
		code = a.hook(r)
	}
	id := r.Header.Get("Ferry-Message-Id")
	n, _ := strconv.Atoi(r.Header.Get("Ferry-Attempt"))
	a.mu.Lock()
	a.attempts[id] = append(a.attempts[id], n)
	if code/100 == 2 {
		a.oks++
		if _, ok := a.firstOK[id]; !ok {
			a.firstOK[id] = time.Now()
		}
	}
	a.mu.Unlock()
	w.WriteHeader(code)
}

// set switches the app to mode m: it closes whatever listens (and every
// open connection) and, unless m is appDown, listens again on the same port.
// It returns when the new listener accepts connections.
func (a *flakyApp) set(m appMode) time.Time {
	a.ctl.Lock()
	defer a.ctl.Unlock()
	if a.srv != nil {
		_ = a.srv.Close() // the listener and every connection
	} else if a.ln != nil {
		_ = a.ln.Close()
	}
	if a.stopped != nil {
		<-a.stopped
	}
	a.ln, a.srv, a.stopped, a.mode = nil, nil, nil, m
	if m == appDown {
		return time.Time{}
	}
	var ln net.Listener
	var err error
	for i := 0; i < 100; i++ { // the port was ours a moment ago; give the kernel a little time
		if ln, err = net.Listen("tcp", a.addr); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		a.t.Fatalf("listen again on %s: %v", a.addr, err)
	}
	now := time.Now()
	stopped := make(chan struct{})
	a.ln, a.stopped = ln, stopped
	switch m {
	case appUp:
		a.upAt = now
		a.srv = &http.Server{Handler: a, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			defer close(stopped)
			_ = a.srv.Serve(ln)
		}()
	case appCrashing:
		go func() {
			defer close(stopped)
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_ = c.Close()
			}
		}()
	}
	return now
}

// delivered returns how many of ids the app answered 200, and the earliest
// and latest of those first answers.
func (a *flakyApp) delivered(ids []string) (n int, first, last time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, id := range ids {
		at, ok := a.firstOK[id]
		if !ok {
			continue
		}
		n++
		if first.IsZero() || at.Before(first) {
			first = at
		}
		if at.After(last) {
			last = at
		}
	}
	return n, first, last
}

func (a *flakyApp) attemptsOf(id string) []int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]int(nil), a.attempts[id]...)
}

// publishMany publishes n events to orders through p with workers
// concurrent clients and returns their message ids. Any answer but 202
// fails the test.
func publishMany(t *testing.T, p *proc, prefix string, n, workers int) []string {
	t.Helper()
	client := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: workers, MaxConnsPerHost: workers},
	}
	defer client.CloseIdleConnections()
	ids := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				id, err := publishOne(client, p, prefix+"-"+strconv.Itoa(i))
				if err != nil {
					errs <- err
					return
				}
				ids[i] = id
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return ids
}

func publishOne(c *http.Client, p *proc, body string) (string, error) {
	resp, err := c.Post(p.pub+"/v1/publish/orders", "text/plain", strings.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("publish %s: %w", body, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("publish %s: %d %s", body, resp.StatusCode, b)
	}
	var r struct{ ID string }
	if err := json.Unmarshal(b, &r); err != nil || r.ID == "" {
		return "", fmt.Errorf("publish %s: body %q: %v", body, b, err)
	}
	return r.ID, nil
}

// deadLetters is the number of billing's dead letters for orders.
func deadLetters(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	n, err := rdb.XLen(context.Background(), ordersDLQ).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		t.Fatalf("xlen %s: %v", ordersDLQ, err)
	}
	return n
}

// waitSettled waits up to within until every id was answered 200 or
// dead-lettered; it reports whether that happened.
func waitSettled(t *testing.T, app *flakyApp, rdb *redis.Client, ids []string, within time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		n, _, _ := app.delivered(ids)
		if int64(n)+deadLetters(t, rdb) >= int64(len(ids)) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// issue14Subscriber is billing's ferry delivering orders to app with the
// production defaults of retry and breaker (ferryEnv shortens the retry
// intervals, which would hide the problem).
func issue14Subscriber(t *testing.T, redisURL string, app *flakyApp) map[string]string {
	env := ferryEnv(t, "billing", redisURL)
	delete(env, "FERRY_RETRY_INITIAL_INTERVAL")
	delete(env, "FERRY_RETRY_MAX_INTERVAL")
	env["FERRY_APP_URL"] = app.url()
	env["FERRY_SUBSCRIPTIONS"] = "orders=/events/orders"
	return env
}

// TestAppBusyThenDown is the issue's main scenario: a busy app (≥100,000
// deliveries) stops for 60 s while 5,000 events are published, then starts
// again on the same port. Nothing may be dead-lettered, the first delivery
// must come within 2 s of the app accepting connections and all 5,000
// within 10 s. FERRY_TEST_APPDOWN_SECONDS shortens the outage and
// FERRY_TEST_BUSY_EVENTS the busy phase for local runs.
//
// It logs the figures (dead letters, time to first and to last delivery)
// for the issue's closing note.
func TestAppBusyThenDown(t *testing.T) {
	busy := 100_000
	if v := os.Getenv("FERRY_TEST_BUSY_EVENTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("FERRY_TEST_BUSY_EVENTS=%q", v)
		}
		busy = n
	}
	const down = 5000
	outage := envSeconds(t, "FERRY_TEST_APPDOWN_SECONDS", 60)
	testStart := time.Now()

	srv := redistest.StartServer(t)
	rdb := srv.Client(t)
	app := newFlakyApp(t)
	app.set(appUp)
	pub := startFerry(t, ferryEnv(t, "orders-svc", srv.URL()))
	sub := startFerry(t, issue14Subscriber(t, srv.URL(), app))

	busyStart := time.Now()
	busyIDs := publishMany(t, pub, "busy", busy, 32)
	published := time.Since(busyStart)
	if !waitSettled(t, app, rdb, busyIDs, 10*time.Minute) {
		n, _, _ := app.delivered(busyIDs)
		t.Fatalf("busy phase: %d of %d delivered within 10m", n, busy)
	}
	if dl := deadLetters(t, rdb); dl != 0 {
		t.Fatalf("busy phase: %d dead letters with the app up", dl)
	}
	t.Logf("busy phase: %d events published in %s, delivered in %s", busy,
		published.Round(time.Second), time.Since(busyStart).Round(time.Second))

	stoppedAt := time.Now()
	app.set(appDown)
	downIDs := publishMany(t, pub, "down", down, 16)
	t.Logf("app down: %d events published in %s", down, time.Since(stoppedAt).Round(time.Millisecond))
	select {
	case <-time.After(time.Until(stoppedAt.Add(outage))):
	case <-sub.done:
		t.Fatalf("subscriber exited with %d while the app was down", sub.code)
	}
	dlDuringOutage := deadLetters(t, rdb)
	upAt := app.set(appUp)

	settled := waitSettled(t, app, rdb, downIDs, 3*time.Minute)
	n, first, last := app.delivered(downIDs)
	dl := deadLetters(t, rdb)
	toFirst, toAll := first.Sub(upAt), last.Sub(upAt)
	t.Logf("after a %s outage with %d events published: %d dead letters (%d of them during the outage); "+
		"%d of %d delivered; first delivery %s after the app was back, the last %s after (settled within 3m: %v); "+
		"breaker %v; test took %s",
		outage, down, dl, dlDuringOutage, n, down, toFirst.Round(time.Millisecond), toAll.Round(time.Millisecond),
		settled, subscriptionBreaker(t, sub), time.Since(testStart).Round(time.Second))
	if dl != 0 {
		t.Errorf("%d dead letters, want 0", dl)
	}
	if n != down {
		t.Errorf("%d of %d events delivered, want all", n, down)
	}
	if first.IsZero() || toFirst > 2*time.Second {
		t.Errorf("first delivery %s after the app accepted connections, want within 2s", toFirst)
	}
	if n != down || toAll > 10*time.Second {
		t.Errorf("all delivered %s after the app accepted connections, want within 10s", toAll)
	}
}

// subscriptionBreaker is the breaker state of orders in /v1/status.
func subscriptionBreaker(t *testing.T, p *proc) any {
	subs, _ := p.status(t)["subscriptions"].([]any)
	for _, s := range subs {
		if m, _ := s.(map[string]any); m["topic"] == "orders" {
			return m["breaker"]
		}
	}
	return nil
}

// TestAppCrashLoop: after a busy phase, the app accepts connections but
// closes them without reading or answering for 30 s
// (FERRY_TEST_CRASHLOOP_SECONDS), then recovers: nothing is dead-lettered and
// everything is delivered.
func TestAppCrashLoop(t *testing.T) {
	const busy, during = 5000, 500
	crash := envSeconds(t, "FERRY_TEST_CRASHLOOP_SECONDS", 30)
	srv := redistest.StartServer(t)
	rdb := srv.Client(t)
	app := newFlakyApp(t)
	app.set(appUp)
	pub := startFerry(t, ferryEnv(t, "orders-svc", srv.URL()))
	startFerry(t, issue14Subscriber(t, srv.URL(), app))

	busyIDs := publishMany(t, pub, "busy", busy, 16) // successes in the breaker's window
	if !waitSettled(t, app, rdb, busyIDs, 5*time.Minute) {
		t.Fatal("busy phase not delivered within 5m")
	}
	crashAt := app.set(appCrashing)
	ids := publishMany(t, pub, "crash", during, 8)
	time.Sleep(time.Until(crashAt.Add(crash))) // the crash loop lasts this long: the scenario, not a wait for an event
	upAt := app.set(appUp)
	ok := waitSettled(t, app, rdb, ids, 3*time.Minute)
	n, _, last := app.delivered(ids)
	dl := deadLetters(t, rdb)
	t.Logf("crash loop of %s: %d dead letters, %d of %d delivered, the last %s after recovery", crash, dl, n, during, last.Sub(upAt).Round(time.Millisecond))
	if !ok || n != during {
		t.Errorf("%d of %d delivered within 3m of the recovery", n, during)
	}
	if dl != 0 {
		t.Errorf("%d dead letters after a crash loop, want 0", dl)
	}
}

// TestAnswersStillCount: only answers count, but they do: a 422 is
// dead-lettered at once (attempt 1, poison) and a message that gets 500
// every time is exhausted after FERRY_RETRY_MAX_ATTEMPTS attempts, even
// though the app was down (refusing connections) for a while in between.
func TestAnswersStillCount(t *testing.T) {
	srv := redistest.StartServer(t)
	rdb := srv.Client(t)
	app := newFlakyApp(t)
	app.hook = func(r *http.Request) int {
		b := r.Header.Get("Ferry-Message-Id")
		switch {
		case strings.HasPrefix(b, "poison"):
			return http.StatusUnprocessableEntity
		case strings.HasPrefix(b, "fail"):
			return http.StatusInternalServerError
		}
		return http.StatusOK
	}
	app.set(appUp)
	pub := startFerry(t, ferryEnv(t, "orders-svc", srv.URL()))
	env := issue14Subscriber(t, srv.URL(), app)
	env["FERRY_RETRY_MAX_ATTEMPTS"] = "4"
	env["FERRY_RETRY_INITIAL_INTERVAL"] = "50ms"
	env["FERRY_RETRY_MAX_INTERVAL"] = "200ms"
	env["FERRY_BREAKER_CONSECUTIVE_FAILURES"] = "0" // 500s must reach the app every time
	env["FERRY_BREAKER_MIN_REQUESTS"] = "1000"
	startFerry(t, env)

	mustPublishKey(t, pub, "poison-1")
	waitUntil(t, 30*time.Second, "poison-1 dead-lettered", func() bool { return deadLetters(t, rdb) == 1 })
	if got := app.attemptsOf("poison-1"); len(got) != 1 || got[0] != 1 {
		t.Errorf("poison-1 attempts %v, want [1]", got)
	}

	mustPublishKey(t, pub, "fail-1")
	waitUntil(t, 30*time.Second, "fail-1 tried twice", func() bool { return len(app.attemptsOf("fail-1")) >= 2 })
	app.set(appDown) // refused connections in between spend nothing
	time.Sleep(2 * time.Second)
	app.set(appUp)
	waitUntil(t, 60*time.Second, "fail-1 dead-lettered", func() bool { return deadLetters(t, rdb) == 2 })
	if got := app.attemptsOf("fail-1"); len(got) != 4 || got[0] != 1 || got[1] != 2 || got[2] != 3 || got[3] != 4 {
		t.Errorf("fail-1 reached the app with attempts %v, want [1 2 3 4]", got)
	}
	msgs, err := rdb.XRange(context.Background(), ordersDLQ, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		t.Logf("dead letter %v", m.Values)
	}
	if len(msgs) == 2 {
		if r := msgs[0].Values["dl:reason"]; r != "poison" {
			t.Errorf("poison-1 reason %v, want poison", r)
		}
		if r := msgs[1].Values["dl:reason"]; r != "exhausted" {
			t.Errorf("fail-1 reason %v, want exhausted", r)
		}
	}
}

// TestAppHealthPathPauses: the app answers 503 on /healthz while its event
// route still answers 200; with FERRY_APP_HEALTH_PATH ferry pauses anyway,
// says so (ferry_app_healthy 0), and resumes within one interval (plus
// slack for a loaded machine) of /healthz turning 200.
func TestAppHealthPathPauses(t *testing.T) {
	srv := redistest.StartServer(t)
	rdb := srv.Client(t)
	app := newFlakyApp(t)
	app.set(appUp)
	pub := startFerry(t, ferryEnv(t, "orders-svc", srv.URL()))
	env := issue14Subscriber(t, srv.URL(), app)
	env["FERRY_APP_HEALTH_PATH"] = "/healthz"
	env["FERRY_APP_HEALTH_INTERVAL"] = "1s"
	env["FERRY_APP_HEALTH_THRESHOLD"] = "2"
	sub := startFerry(t, env)

	warm := publishMany(t, pub, "warm", 20, 4)
	if !waitSettled(t, app, rdb, warm, time.Minute) {
		t.Fatal("warm-up events not delivered")
	}
	if h := scrapeMetric(t, sub, "ferry_app_healthy", nil); h != 1 {
		t.Errorf("ferry_app_healthy %v with a healthy app, want 1", h)
	}
	app.health.Store(http.StatusServiceUnavailable)
	waitUntil(t, 30*time.Second, "ferry_app_healthy 0", func() bool {
		return scrapeMetric(t, sub, "ferry_app_healthy", nil) == 0
	})
	before := app.requests.Load()
	ids := publishMany(t, pub, "paused", 50, 4)
	time.Sleep(3 * time.Second) // three intervals: ferry must send nothing meanwhile (a non-event has no signal to await)
	if got := app.requests.Load() - before; got != 0 {
		t.Errorf("%d deliveries while /healthz answered 503, want 0", got)
	}
	healthyAt := time.Now()
	app.health.Store(http.StatusOK)
	if !waitSettled(t, app, rdb, ids, time.Minute) {
		t.Fatal("paused events not delivered within 1m of /healthz turning 200")
	}
	_, first, _ := app.delivered(ids)
	t.Logf("first delivery %s after /healthz turned 200 (interval 1s)", first.Sub(healthyAt).Round(time.Millisecond))
	if d := first.Sub(healthyAt); d > 1*time.Second+2*time.Second {
		t.Errorf("first delivery %s after /healthz turned 200, want within one interval (1s, plus 2s slack)", d)
	}
	if h := scrapeMetric(t, sub, "ferry_app_healthy", nil); h != 1 {
		t.Errorf("ferry_app_healthy %v after recovery, want 1", h)
	}
	if dl := deadLetters(t, rdb); dl != 0 {
		t.Errorf("%d dead letters, want 0", dl)
	}
}

// TestRestartWhilePausedKeepsAttempts: every event is answered 500 once
// (attempt 1 spent), then the app goes away; ferry is restarted while the
// subscription is paused for unreachability, and when the app is back every
// event arrives with Ferry-Attempt 2: neither the refused connections nor the
// restart spent an attempt.
func TestRestartWhilePausedKeepsAttempts(t *testing.T) {
	const n = 20
	srv := redistest.StartServer(t)
	rdb := srv.Client(t)
	app := newFlakyApp(t)
	app.hook = func(r *http.Request) int {
		if r.Header.Get("Ferry-Attempt") == "1" {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	}
	app.set(appUp)
	pub := startFerry(t, ferryEnv(t, "orders-svc", srv.URL()))
	env := issue14Subscriber(t, srv.URL(), app)
	env["FERRY_RETRY_INITIAL_INTERVAL"] = "2s" // the second attempt comes after the app went away
	env["FERRY_RETRY_MAX_INTERVAL"] = "4s"
	env["FERRY_BREAKER_CONSECUTIVE_FAILURES"] = "1000" // the 500s must not open the breaker
	env["FERRY_BREAKER_MIN_REQUESTS"] = "1000"
	sub := startFerry(t, env)

	ids := publishMany(t, pub, "keep", n, 4)
	waitUntil(t, 30*time.Second, "every event answered 500 once", func() bool {
		for _, id := range ids {
			if len(app.attemptsOf(id)) == 0 {
				return false
			}
		}
		return true
	})
	app.set(appDown)
	// Every retry (backoff under 4s) finds the app gone and the
	// subscription pauses; nothing reaches the app to await, so wait it out.
	time.Sleep(6 * time.Second)
	if u := scrapeMetric(t, sub, "ferry_delivery_attempts_total", map[string]string{"subscription": "orders", "result": "unreachable"}); u < 1 {
		t.Errorf("no unreachable attempt counted while the app was down")
	}
	if code := sub.term(15 * time.Second); code != 0 {
		t.Errorf("subscriber exit %d after SIGTERM, want 0", code)
	}
	startFerry(t, env)
	time.Sleep(3 * time.Second) // the restarted ferry finds the app down too
	app.set(appUp)
	if !waitSettled(t, app, rdb, ids, time.Minute) {
		t.Fatal("events not delivered within 1m of the app's return")
	}
	for _, id := range ids {
		got := app.attemptsOf(id)
		if len(got) != 2 || got[0] != 1 || got[1] != 2 {
			t.Errorf("%s reached the app with attempts %v, want [1 2]", id, got)
		}
	}
	if dl := deadLetters(t, rdb); dl != 0 {
		t.Errorf("%d dead letters, want 0", dl)
	}
}
