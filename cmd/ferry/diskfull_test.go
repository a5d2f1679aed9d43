package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/internal/redistest"
	"github.com/ferry-sidecar/ferry/internal/tmpfstest"
)

// Issue 19: a full outbox volume heals by itself. The outbox is a 4 MiB
// tmpfs, so the disk errors are the kernel's ENOSPC.

const diskFullVolume = 4 << 20

// diskFullBody pads each event so that the volume fills in a few thousand
// publishes.
var diskFullBody = strings.Repeat("x", 1000)

// diskPublisher publishes keyed events and keeps what it was answered.
type diskPublisher struct {
	t        *testing.T
	accepted []string
	refused  int // 503 disk-full
	n        int
}

// publish sends one event with key prefix+n and records the answer; any
// answer but 202 and 503 disk-full fails the test.
func (d *diskPublisher) publish(p *proc, prefix string) (accepted bool) {
	d.t.Helper()
	key := fmt.Sprintf("%s-%d", prefix, d.n)
	d.n++
	code, body := p.publish("orders", diskFullBody, map[string]string{"Idempotency-Key": key})
	switch {
	case code == http.StatusAccepted:
		d.accepted = append(d.accepted, key)
		return true
	case code == http.StatusServiceUnavailable && strings.Contains(body, "disk-full"):
		d.refused++
		return false
	}
	d.t.Fatalf("publish %s: %d %s", key, code, body)
	return false
}

// fill publishes until the first disk-full answer, then extra more (each
// answered 202 or disk-full), and returns the publishes accepted.
func (d *diskPublisher) fill(p *proc, prefix string, extra int) int {
	d.t.Helper()
	before := len(d.accepted)
	for range 20000 {
		if !d.publish(p, prefix) {
			break
		}
	}
	if d.refused == 0 {
		d.t.Fatalf("no disk-full answer after %d publishes on a %d-byte volume", len(d.accepted), diskFullVolume)
	}
	for range extra {
		d.publish(p, prefix)
	}
	return len(d.accepted) - before
}

// diskLogLines counts the log lines about the disk error: what ferry logs
// per refused publish without the fix, and the start and end of a disk-full
// episode with it.
func diskLogLines(logs string) int {
	n := 0
	for _, line := range strings.Split(logs, "\n") {
		l := strings.ToLower(line)
		if strings.Contains(l, "no space left") || strings.Contains(l, "disk full") || strings.Contains(l, "disk-full") ||
			strings.Contains(l, "enospc") || strings.Contains(l, "cut back") || strings.Contains(l, "disk error") {
			n++
		}
	}
	return n
}

// TestDiskFullHeals: Redis down, publish into a 4 MiB outbox volume until
// ferry answers 503 disk-full; once Redis is back, every accepted event is
// delivered once, the volume empties, and publishing is accepted again
// without a restart. Then the same with a SIGKILL and a restart on the full
// volume. The log says a few lines per episode, not one per refusal.
func TestDiskFullHeals(t *testing.T) {
	vol := tmpfstest.Mount(t, diskFullVolume)
	srv := redistest.StartServer(t, "--appendonly", "yes", "--appendfsync", "always")
	srv.Stop(t) // down from the start; its port stays reserved for it
	app := newCrashApp(t, 0, nil)
	env := ferryEnv(t, "orders-svc", srv.URL())
	env["FERRY_OUTBOX_DIR"] = vol
	pub := startFerry(t, env)
	d := &diskPublisher{t: t}

	// heal restarts Redis (and the subscriber on the first call) and
	// checks the healing, logging the figures of the phase. Failures that
	// leave the next phase meaningful are errors, so that one run gives
	// every figure.
	var sub *proc
	var rdb *redis.Client
	heal := func(phase string, logs func() string) {
		t.Helper()
		srv.Restart(t)
		redisUp := time.Now()
		if rdb == nil {
			rdb = srv.Client(t)
		}
		if sub == nil {
			sub = startFerry(t, subscriberEnv(t, srv.URL(), app.srv.URL, "billing-0"))
		}
		accepted := append([]string(nil), d.accepted...)
		waitUntil(t, 60*time.Second, "every accepted event in Redis", func() bool {
			n, err := rdb.XLen(context.Background(), ordersStream).Result()
			return err == nil && n >= int64(len(accepted))
		})
		relayed := time.Now()
		againAfter := "never"
		refusedBefore := d.refused
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
			if d.publish(pub, phase+"-probe") {
				againAfter = fmt.Sprintf("%.1fs after Redis up, %.1fs after the records reached it",
					time.Since(redisUp).Seconds(), time.Since(relayed).Seconds())
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		probesRefused := d.refused - refusedBefore
		if againAfter != "never" && time.Since(relayed) > 5*time.Second {
			t.Errorf("%s: publishing accepted again only %s, want within 5s", phase, againAfter)
		}
		waitUntil(t, 60*time.Second, "every accepted event delivered", func() bool {
			for _, id := range d.accepted {
				if app.count(id) == 0 {
					return false
				}
			}
			return true
		})
		dups := 0
		for _, id := range d.accepted {
			if c := app.count(id); c != 1 {
				dups++
				if dups <= 5 {
					t.Errorf("%s: %s delivered %d times, want 1", phase, id, c)
				}
			}
		}
		pending := -1.0
		if !eventually(10*time.Second, func() bool { pending = outboxPending(t, pub); return pending == 0 }) {
			t.Errorf("%s: /v1/status outbox pending_records %v, want 0", phase, pending)
		}
		var used int64
		if !eventually(10*time.Second, func() bool { used = tmpfstest.Stat(t, vol).Used; return used <= 128<<10 }) {
			t.Errorf("%s: %d bytes used on the outbox volume, want at most 128 KiB", phase, used)
		}
		distinct, _ := app.seen()
		lines := diskLogLines(logs())
		t.Logf("FIGURES %s: accepted %d (all phases), refused %d (this phase) (of them %d probes after Redis came back), delivered %d distinct, accepted again: %s, volume used %d of %d bytes, outbox pending %v, disk log lines %d",
			phase, len(d.accepted), d.refused, probesRefused, distinct, againAfter, used, diskFullVolume, pending, lines)
		if againAfter == "never" {
			t.Errorf("%s: publishing still refused 20s after every record reached Redis", phase)
		}
		if lines > 5 {
			t.Errorf("%s: %d log lines about the disk error, want at most 5", phase, lines)
		}
	}

	// Phase 1: no restart.
	n := d.fill(pub, "a", 200)
	t.Logf("phase 1: %d accepted, then %d refused", n, d.refused)
	heal("heal", pub.logs)
	phase1Logs := len(pub.logs())

	// Phase 2: full again, SIGKILL, restart on the full volume.
	srv.Stop(t)
	d.refused = 0
	n = d.fill(pub, "b", 50)
	logsBefore := pub.logs()
	pub.kill()
	pub = startFerry(t, env)
	for range 50 {
		d.publish(pub, "b")
	}
	t.Logf("phase 2: %d accepted, then %d refused (50 after the restart)", n, d.refused)
	second := pub
	heal("restart", func() string { return logsBefore[phase1Logs:] + second.logs() })

	if code := pub.term(15 * time.Second); code != 0 {
		t.Errorf("exit %d after SIGTERM with Redis up, want 0", code)
	}
}

// eventually polls cond every 20 ms until it holds or within passes.
func eventually(within time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(within); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}
