package sidecar

import (
	"context"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/internal/redistest"
)

// securityDocACL reads the ACL SETUSER line that docs/security.md
// recommends, so that the document and this test cannot drift apart.
func securityDocACL(t *testing.T, password string) []any {
	t.Helper()
	doc, err := os.ReadFile("../docs/security.md")
	if err != nil {
		t.Fatalf("read the security doc: %v", err)
	}
	var line string
	for _, l := range strings.Split(string(doc), "\n") {
		if strings.HasPrefix(l, "ACL SETUSER ferry ") {
			if line != "" {
				t.Fatalf("two ACL SETUSER lines in docs/security.md")
			}
			line = l
		}
	}
	if line == "" {
		t.Fatalf("no ACL SETUSER ferry line in docs/security.md")
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil || !strings.Contains(string(readme), "\n"+line+"\n") {
		t.Errorf("README.md does not show the ACL line of docs/security.md (%v):\n%s", err, line)
	}
	var args []any
	for _, f := range strings.Fields(line) {
		if f == ">CHANGE-ME" {
			f = ">" + password
		}
		args = append(args, f)
	}
	return args
}

// TestACLFromTheSecurityDoc runs ferry as a Redis user limited to the
// documented ACL: publish, delivery, a dedupe hit, a dead letter, its
// redrive, a replay and stream retention must all work, Redis must deny
// nothing but the optional CONFIG GET, and no NOPERM may reach the logs.
func TestACLFromTheSecurityDoc(t *testing.T) {
	const password = "acl-pass-3e8b71"
	srv := redistest.StartServer(t)
	ctx := context.Background()
	root := srv.Client(t)
	if err := root.Do(ctx, securityDocACL(t, password)...).Err(); err != nil {
		t.Fatalf("apply the documented ACL: %v", err)
	}
	if err := root.Do(ctx, "ACL", "LOG", "RESET").Err(); err != nil {
		t.Fatalf("acl log reset: %v", err)
	}
	// The ACL bites: outside ferry:* and outside the list is refused.
	limited := redis.NewClient(&redis.Options{Addr: srv.Addr, Username: "ferry", Password: password})
	defer limited.Close()
	if err := limited.Get(ctx, "not-ferry").Err(); !redis.HasErrorPrefix(err, "NOPERM") {
		t.Fatalf("GET not-ferry as ferry: %v, want NOPERM", err)
	}
	if err := limited.Keys(ctx, "*").Err(); !redis.HasErrorPrefix(err, "NOPERM") {
		t.Fatalf("KEYS as ferry: %v, want NOPERM", err)
	}
	if err := root.Do(ctx, "ACL", "LOG", "RESET").Err(); err != nil {
		t.Fatalf("acl log reset: %v", err)
	}

	url := "redis://ferry:" + password + "@" + srv.Addr + "/0"
	var mu sync.Mutex
	poisonSeen := 0
	a := newApp(t, func(r received) int {
		if r.Body != "poison" {
			return http.StatusOK
		}
		mu.Lock()
		defer mu.Unlock()
		poisonSeen++
		if poisonSeen == 1 {
			return http.StatusBadRequest // dead-letter it; the redrive then succeeds
		}
		return http.StatusOK
	})
	pub := startNode(t, baseEnv(t, "orders-svc", url))
	subEnv := baseEnv(t, "billing", url)
	subEnv["FERRY_APP_URL"] = a.srv.URL
	subEnv["FERRY_SUBSCRIPTIONS"] = "orders=/events/orders"
	sub := startNode(t, subEnv)
	auditEnv := baseEnv(t, "auditor", url)
	auditEnv["FERRY_STREAM_MAX_LEN"] = "1"
	auditEnv["FERRY_STREAM_MAX_AGE"] = "1h"
	auditor := startNode(t, auditEnv)

	mustPublish(t, pub, "orders", "ok-1", map[string]string{"Idempotency-Key": "k-1"})
	mustPublish(t, pub, "orders", "poison", nil)
	mustPublish(t, pub, "orders", "ok-1", map[string]string{"Idempotency-Key": "k-1"}) // a dedupe hit
	mustPublish(t, pub, "orders", "ok-2", nil)
	waitFor(t, 10*time.Second, "2 deliveries, 1 dedupe hit and 1 dead letter", func() bool {
		return sub.metric("ferry_delivery_attempts_total", map[string]string{"result": "success"}) == 2 &&
			sub.metric("ferry_dedupe_hits_total", nil) == 1 &&
			sub.metric("ferry_deadletters_total", map[string]string{"reason": "poison"}) == 1
	})
	code, body := do(t, mustReq(http.MethodGet, sub.admin+"/v1/deadletters/orders"))
	if code != http.StatusOK || strings.Count(body, `"reason":"poison"`) != 1 {
		t.Fatalf("dead letters: %d %s", code, body)
	}
	if code, body := do(t, mustReq(http.MethodPost, sub.admin+"/v1/deadletters/orders/redrive")); code != http.StatusOK || !strings.Contains(body, `"redriven":1`) {
		t.Fatalf("redrive: %d %s", code, body)
	}
	waitFor(t, 10*time.Second, "the redriven event delivered", func() bool {
		return sub.metric("ferry_delivery_attempts_total", map[string]string{"result": "success"}) == 3
	})

	req, _ := http.NewRequest(http.MethodPost, sub.admin+"/v1/subscriptions/orders/replay", strings.NewReader(`{"from":"0"}`))
	if code, body := do(t, req); code != http.StatusOK {
		t.Fatalf("replay: %d %s", code, body)
	}
	waitFor(t, 10*time.Second, "the replayed deliveries", func() bool {
		n := 0
		for _, r := range a.all() {
			if r.Header.Get("Ferry-Replay") == "true" {
				n++
			}
		}
		return n >= 4 // every entry of the stream, the duplicate included
	})

	// Retention: the auditor publishes to a topic nobody subscribes to and trims it.
	for range 3 {
		mustPublish(t, auditor, "audit", "a", nil)
	}
	waitFor(t, 10*time.Second, "the audit stream in Redis", func() bool {
		n, _ := root.XLen(ctx, streamKey("audit")).Result()
		return n == 3
	})
	rounds := auditor.sc.trimmer.Rounds()
	waitFor(t, 5*time.Second, "three trim rounds", func() bool { return auditor.sc.trimmer.Rounds() >= rounds+3 })

	for _, n := range []*node{pub, sub, auditor} {
		if err := n.stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	}
	entries, err := root.Do(ctx, "ACL", "LOG").Slice()
	if err != nil {
		t.Fatalf("acl log: %v", err)
	}
	configDenied := 0
	for _, e := range entries {
		m := map[string]any{}
		switch e := e.(type) {
		case map[any]any: // RESP3
			for k, v := range e {
				m[k.(string)] = v
			}
		case []any: // RESP2: name, value, …
			for i := 0; i+1 < len(e); i += 2 {
				k, _ := e[i].(string)
				m[k] = e[i+1]
			}
		default:
			t.Fatalf("ACL LOG entry %T", e)
		}
		if m["reason"] == "command" && m["object"] == "config|get" {
			configDenied++
			continue // optional and not granted on purpose: see docs/security.md
		}
		t.Errorf("Redis denied ferry: reason=%v object=%v username=%v", m["reason"], m["object"], m["username"])
	}
	t.Logf("ACL LOG: %d entries, %d of them the optional CONFIG GET", len(entries), configDenied)
	for name, n := range map[string]*node{"orders-svc": pub, "billing": sub, "auditor": auditor} {
		if logs := n.logs.String(); strings.Contains(logs, "NOPERM") {
			t.Errorf("NOPERM in the logs of %s:\n%s", name, logs)
		}
	}
}
