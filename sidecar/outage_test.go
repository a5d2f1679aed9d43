package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-sidecar/ferry/internal/redistest"
	"github.com/ferry-sidecar/ferry/outbox"
)

// The outbox under failure (issue 5): Redis down, a full outbox, disk errors.

// answer is one publish answer with its headers.
type answer struct {
	code   int
	header http.Header
	body   string
}

func publishAnswer(t *testing.T, n *node, topic, body string, hdr map[string]string) answer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, n.pub+"/v1/publish/"+topic, strings.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{code: resp.StatusCode, header: resp.Header, body: string(b)}
}

// checkUnavailable asserts a 503 problem of the given kind with a
// Retry-After of whole seconds, at least 1.
func checkUnavailable(t *testing.T, a answer, kind string) problem {
	t.Helper()
	var p problem
	if a.code != http.StatusServiceUnavailable {
		t.Fatalf("answer %d %s, want 503 %s", a.code, a.body, kind)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q, want application/problem+json", ct)
	}
	if ra, err := strconv.Atoi(a.header.Get("Retry-After")); err != nil || ra < 1 {
		t.Errorf("Retry-After %q, want whole seconds ≥ 1", a.header.Get("Retry-After"))
	}
	if err := json.Unmarshal([]byte(a.body), &p); err != nil {
		t.Fatalf("problem body %q: %v", a.body, err)
	}
	if p.Type != problemTypeBase+kind || p.Status != 503 || p.Title == "" || p.Detail == "" {
		t.Errorf("problem %+v, want type %s%s with title and detail", p, problemTypeBase, kind)
	}
	return p
}

// TestRedisOutageKeepsPublishingAndDrainsInOrder: with Redis gone, publish
// keeps answering 202, ferry stays ready and says Redis is down, the relay
// backs off; when Redis returns the outbox drains and the subscriber gets
// the events in publish order.
func TestRedisOutageKeepsPublishingAndDrainsInOrder(t *testing.T) {
	srv := redistest.StartServer(t)
	p := startPairOn(t, srv, nil, nil)
	mustPublish(t, p.pub, "orders", "warm-up", nil)
	p.app.next(t, 10*time.Second)

	srv.Stop(t)
	const k = 20
	ordering := map[string]string{"Ordering-Key": "customer-1"}
	for i := range k {
		mustPublish(t, p.pub, "orders", fmt.Sprintf("e-%02d", i), ordering)
	}
	up := map[string]string{}
	relayErr := map[string]string{"result": "error"}
	waitFor(t, 10*time.Second, "ferry_redis_up 0 and relay errors on the publisher", func() bool {
		return p.pub.metric("ferry_redis_up", up) == 0 && p.pub.metric("ferry_relay_records_total", relayErr) > 0
	})
	for _, n := range []*node{p.pub, p.sub} {
		code, body := do(t, mustReq(http.MethodGet, n.admin+"/readyz"))
		var rd readiness
		if err := json.Unmarshal([]byte(body), &rd); err != nil || code != 200 || rd.Status != "ready" || rd.Checks["redis"] != "down" {
			t.Errorf("readyz with Redis down: %d %s, want 200 ready with redis down", code, body)
		}
	}
	code, st := getJSON(t, p.pub.admin+"/v1/status")
	redisSt, _ := st["redis"].(map[string]any)
	outboxSt, _ := st["outbox"].(map[string]any)
	if code != 200 || redisSt["up"] != false || outboxSt["pending_records"] != float64(k) {
		t.Errorf("status %d %v, want redis.up false and %d pending records (the warm-up was relayed and committed)", code, st, k)
	}
	// Publishing still works, and the relay does not spin: each failed try
	// counts the k records once, and tries back off from 100ms up to 5s
	// (a breaker opens after 3 failures for 2s).
	before := p.pub.metric("ferry_relay_records_total", relayErr)
	window := 3 * time.Second
	end := time.Now().Add(window)
	for i := 0; time.Now().Before(end); i++ {
		mustPublish(t, p.pub, "orders", fmt.Sprintf("e-%02d", k+i), ordering)
		time.Sleep(100 * time.Millisecond) // pace the load over the window
	}
	tries := (p.pub.metric("ferry_relay_records_total", relayErr) - before) / k
	t.Logf("relay error records over %s with Redis down: %v (≈%.1f tries)", window, tries*k, tries)
	if tries > 12 {
		t.Errorf("relay retried about %.0f times in %s with Redis down: it spins instead of backing off", tries, window)
	}
	published := p.pub.metric("ferry_publish_requests_total", map[string]string{"topic": "orders", "code": "202"}) - 1

	// Save is off: Redis comes back empty (dedupe state too), the outbox
	// still has everything not committed. The warm-up may come again: its
	// checkpoint may not have been committed before the outage.
	srv.Restart(t)
	events := func() []string {
		var bodies []string
		for _, r := range p.app.all() {
			if strings.HasPrefix(r.Body, "e-") {
				bodies = append(bodies, r.Body)
			}
		}
		return bodies
	}
	waitFor(t, 30*time.Second, "every event delivered after Redis returned", func() bool {
		return len(events()) >= int(published)
	})
	bodies := events()
	for i, b := range bodies {
		if want := fmt.Sprintf("e-%02d", i); b != want {
			t.Fatalf("delivery %d is %q, want %q: not in publish order (%v)", i, b, want, bodies)
		}
	}
	if len(bodies) != int(published) {
		t.Errorf("%d deliveries, want %v", len(bodies), published)
	}
	if p.pub.metric("ferry_relay_records_total", map[string]string{"result": "ok"}) < published {
		t.Errorf("relay ok records below %v", published)
	}
}

// TestOutboxFullAnswers503UntilDrained: a small outbox with Redis down
// fills; publish answers 503 with Retry-After and a problem, and accepts
// again by itself once Redis is back and the relay drained it.
func TestOutboxFullAnswers503UntilDrained(t *testing.T) {
	srv := redistest.StartServer(t)
	rdb := srv.Client(t)
	env := baseEnv(t, "orders-svc", srv.URL())
	env["FERRY_OUTBOX_MAX_BYTES"] = "4096"
	n := startNode(t, env)
	srv.Stop(t)

	body := strings.Repeat("x", 1000)
	accepted := 0
	var full answer
	for range 10 {
		a := publishAnswer(t, n, "orders", body, nil)
		if a.code != http.StatusAccepted {
			full = a
			break
		}
		accepted++
	}
	if accepted < 2 {
		t.Fatalf("only %d publishes accepted before the outbox was full", accepted)
	}
	p := checkUnavailable(t, full, "outbox-full")
	if !strings.Contains(p.Detail, "FERRY_OUTBOX_MAX_BYTES") {
		t.Errorf("detail %q does not name FERRY_OUTBOX_MAX_BYTES", p.Detail)
	}
	if code, _ := do(t, mustReq(http.MethodGet, n.admin+"/readyz")); code != http.StatusOK {
		t.Errorf("readyz %d with a full outbox, want 200", code)
	}
	// Still full while Redis is down.
	checkUnavailable(t, publishAnswer(t, n, "orders", body, nil), "outbox-full")

	srv.Restart(t)
	waitFor(t, 30*time.Second, "the outbox drained", func() bool {
		return n.sc.outbox.Stats().PendingRecords == 0
	})
	if a := publishAnswer(t, n, "orders", body, nil); a.code != http.StatusAccepted {
		t.Fatalf("publish after the drain: %d %s, want 202", a.code, a.body)
	}
	waitFor(t, 10*time.Second, "all accepted events in the stream", func() bool {
		l, err := rdb.XLen(context.Background(), streamKey("orders")).Result()
		return err == nil && l == int64(accepted+1)
	})
}

// TestDiskErrorsAnswer503NeverAccepted injects the errors the outbox
// returns for a full or read-only disk (they wrap the syscall error, see
// outbox.Log.Append): publish answers 503 with the reason, never 202.
func TestDiskErrorsAnswer503NeverAccepted(t *testing.T) {
	srv := redistest.StartServer(t)
	var fault atomic.Pointer[error]
	n := startNodeWith(t, baseEnv(t, "orders-svc", srv.URL()), func(sc *Sidecar) {
		sc.injectOutboxFaults(func() error {
			if err := fault.Load(); err != nil {
				return *err
			}
			return nil
		}, nil)
	})
	seg := "00000001.seg"
	cases := []struct {
		err    error
		kind   string
		detail string
	}{
		{fmt.Errorf("append record: write segment %s: %w", seg, &os.PathError{Op: "write", Path: seg, Err: syscall.ENOSPC}), "disk-full", "ENOSPC"},
		{fmt.Errorf("append record: create segment %s: %w", seg, &os.PathError{Op: "open", Path: seg, Err: syscall.EROFS}), "disk-read-only", "EROFS"},
		// The log failed for good after a repair that failed too: the cause still shows.
		{fmt.Errorf("append record: %w", fmt.Errorf("%w: %w; repair segment %s: %w", outbox.ErrFailed,
			&os.PathError{Op: "sync", Path: seg, Err: syscall.ENOSPC}, seg, &os.PathError{Op: "open", Path: seg, Err: syscall.EROFS})), "disk-full", "ENOSPC"},
		{fmt.Errorf("append record: sync segment %s: %w", seg, &os.PathError{Op: "sync", Path: seg, Err: syscall.EIO}), "outbox-unavailable", "outbox"},
	}
	for _, c := range cases {
		t.Run(c.kind+"/"+c.detail, func(t *testing.T) {
			fault.Store(&c.err)
			p := checkUnavailable(t, publishAnswer(t, n, "orders", "event", nil), c.kind)
			if !strings.Contains(p.Detail, c.detail) {
				t.Errorf("detail %q does not say %s", p.Detail, c.detail)
			}
			fault.Store(nil)
			if a := publishAnswer(t, n, "orders", "event", nil); a.code != http.StatusAccepted {
				t.Errorf("publish once the disk is fine again: %d %s", a.code, a.body)
			}
		})
	}
	codes := map[string]float64{}
	for _, code := range []string{"202", "503"} {
		codes[code] = n.metric("ferry_publish_requests_total", map[string]string{"topic": "orders", "code": code})
	}
	if codes["503"] != float64(len(cases)) || codes["202"] != float64(len(cases)) {
		t.Errorf("publish requests by code %v, want %d of each", codes, len(cases))
	}
	if got := n.sc.outbox.Stats().Appends; got != uint64(len(cases)) {
		t.Errorf("outbox appends %d, want %d (only the accepted ones)", got, len(cases))
	}
}

// TestEvictingMaxmemoryPolicyIsLogged: an evicting Redis can drop dedupe
// keys and pending entries; ferry says so at start.
func TestEvictingMaxmemoryPolicyIsLogged(t *testing.T) {
	srv := redistest.StartServer(t, "--maxmemory-policy", "allkeys-lru")
	n := startNode(t, baseEnv(t, "orders-svc", srv.URL()))
	waitFor(t, 10*time.Second, "the maxmemory-policy warning", func() bool {
		for _, line := range strings.Split(n.logs.String(), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) != nil {
				continue
			}
			msg, _ := rec["msg"].(string)
			if rec["level"] == "WARN" && strings.Contains(msg, "maxmemory-policy") && rec["maxmemory-policy"] == "allkeys-lru" {
				return true
			}
		}
		return false
	})
}

// A failed outbox (a disk error it could not repair) makes ferry exit
// loudly, so that a restart reopens and repairs it.
func TestFailedOutboxExits(t *testing.T) {
	srv := redistest.StartServer(t)
	var fail atomic.Bool
	cause := fmt.Errorf("%w: write segment: %w", outbox.ErrFailed, syscall.EIO)
	n := startNodeWith(t, baseEnv(t, "orders-svc", srv.URL()), func(sc *Sidecar) {
		sc.injectOutboxFaults(nil, func() error {
			if fail.Load() {
				return cause
			}
			return nil
		})
	})
	mustPublish(t, n, "orders", "before", nil)
	fail.Store(true)
	select {
	case err := <-n.done:
		n.stopped = true
		if !errors.Is(err, outbox.ErrFailed) {
			t.Errorf("Run returned %v, want the outbox failure", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ferry kept running with a failed outbox")
	}
	if !strings.Contains(n.logs.String(), "outbox failed: exiting") {
		t.Errorf("no log line for the failed outbox")
	}
}
