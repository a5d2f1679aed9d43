package sidecar

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// Attempts continue from the pending entry's delivery count after a
// restart, so a crash loop cannot retry forever.
func TestAttemptsSurviveRestart(t *testing.T) {
	p := startPair(t, map[string]string{
		"FERRY_RETRY_MAX_ATTEMPTS":     "3",
		"FERRY_RETRY_INITIAL_INTERVAL": "1m", // the retry would wait: the restart comes first
		"FERRY_RETRY_MAX_INTERVAL":     "1m",
	}, func(received) int { return http.StatusServiceUnavailable })
	mustPublish(t, p.pub, "orders", "x", map[string]string{"Idempotency-Key": "a1"})
	if got := p.app.next(t, 10*time.Second); got.Header.Get("Ferry-Attempt") != "1" {
		t.Fatalf("first attempt header %q", got.Header.Get("Ferry-Attempt"))
	}
	if err := p.sub.stop(); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for k, v := range p.sub.env {
		env[k] = v
	}
	env["FERRY_RETRY_INITIAL_INTERVAL"], env["FERRY_RETRY_MAX_INTERVAL"] = "10ms", "20ms"
	sub := startNode(t, env)
	for _, want := range []string{"2", "3"} {
		if got := p.app.next(t, 10*time.Second); got.Header.Get("Ferry-Attempt") != want {
			t.Fatalf("after restart: Ferry-Attempt %q, want %s", got.Header.Get("Ferry-Attempt"), want)
		}
	}
	waitFor(t, 10*time.Second, "exhausted", func() bool {
		return sub.metric("ferry_deadletters_total", map[string]string{"reason": "exhausted"}) == 1
	})
	if n := len(p.app.all()); n != 3 {
		t.Errorf("%d deliveries in all, want 3 (FERRY_RETRY_MAX_ATTEMPTS)", n)
	}
}

// Every metric family of DESIGN.md is exported after traffic, with help text.
func TestEveryMetricFamilyIsExported(t *testing.T) {
	p := startPair(t, map[string]string{"FERRY_DELIVERY_CONCURRENCY": "2"}, func(r received) int {
		if r.Body == "poison" {
			return 400
		}
		return 200
	})
	mustPublish(t, p.pub, "orders", "ok", nil)
	mustPublish(t, p.pub, "orders", "poison", nil)
	waitFor(t, 10*time.Second, "delivered", func() bool { return len(p.app.all()) == 2 })
	want := []string{
		"ferry_publish_requests_total", "ferry_publish_duration_seconds", "ferry_outbox_pending_records",
		"ferry_outbox_bytes", "ferry_outbox_oldest_age_seconds", "ferry_relay_records_total", "ferry_redis_up",
		"ferry_delivery_attempts_total", "ferry_delivery_duration_seconds", "ferry_end_to_end_seconds",
		"ferry_deadletters_total", "ferry_dedupe_hits_total", "ferry_breaker_state", "ferry_ratelimit_throttled_total",
		"ferry_consumer_lag", "ferry_build_info",
	}
	perSubscription := map[string]bool{
		"ferry_delivery_attempts_total": true, "ferry_delivery_duration_seconds": true, "ferry_end_to_end_seconds": true,
		"ferry_deadletters_total": true, "ferry_dedupe_hits_total": true, "ferry_breaker_state": true, "ferry_consumer_lag": true,
	}
	for _, n := range []*node{p.pub, p.sub} {
		mfs, err := n.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]string{}
		for _, mf := range mfs {
			have[mf.GetName()] = mf.GetHelp()
		}
		for _, name := range want {
			if name == "ferry_publish_requests_total" && n == p.sub {
				continue // labelled by topic: appears with the first publish
			}
			if n == p.pub && perSubscription[name] {
				continue // labelled by subscription: the publisher has none
			}
			if help, ok := have[name]; !ok || strings.TrimSpace(help) == "" {
				t.Errorf("%s: family %s missing or without help", n.sc.cfg.AppID, name)
			}
		}
	}
	if v := p.sub.metric("ferry_end_to_end_seconds", map[string]string{"subscription": "orders"}); v != 1 {
		t.Errorf("end-to-end observations = %v, want 1", v)
	}
	if v := p.sub.metric("ferry_redis_up", nil); v != 1 {
		t.Errorf("ferry_redis_up = %v", v)
	}
	if v := p.pub.metric("ferry_publish_duration_seconds", nil); v != 2 {
		t.Errorf("publish duration observations = %v, want 2", v)
	}
}

// ferry_consumer_lag counts what the group has not acked yet.
func TestConsumerLag(t *testing.T) {
	gate := make(chan struct{})
	p := startPair(t, map[string]string{"FERRY_DELIVERY_CONCURRENCY": "1"}, func(received) int {
		<-gate
		return 200
	})
	t.Cleanup(func() {
		select {
		case <-gate:
		default:
			close(gate)
		}
	})
	for range 5 {
		mustPublish(t, p.pub, "orders", "x", nil)
	}
	waitFor(t, 10*time.Second, "lag 5", func() bool {
		return p.sub.metric("ferry_consumer_lag", map[string]string{"subscription": "orders"}) == 5
	})
	close(gate)
	waitFor(t, 10*time.Second, "lag 0", func() bool {
		return p.sub.metric("ferry_consumer_lag", map[string]string{"subscription": "orders"}) == 0
	})
}

func TestSkipVerifyIsWarnedAbout(t *testing.T) {
	env := baseEnv(t, "insecure", "rediss://127.0.0.1:1/0?skip_verify=true")
	n := startNode(t, env)
	if !strings.Contains(n.logs.String(), "skip_verify=true") {
		t.Errorf("no warning about skip_verify in:\n%s", n.logs.String())
	}
}
