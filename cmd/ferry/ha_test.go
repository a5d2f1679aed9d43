package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/internal/redistest"
)

// Issue 13 with the real binary: the same end-to-end flow against a
// standalone server, a Redis Cluster and a Sentinel set; the chaos runs are
// in ha_chaos_test.go.

// haBackend is one Redis topology under test.
type haBackend struct {
	mode     string
	url      string
	wait     int // FERRY_REDIS_WAIT_REPLICAS the mode's replica count allows
	rdb      redis.UniversalClient
	server   *redistest.Server
	cluster  *redistest.Cluster
	sentinel *redistest.Sentinel
}

// startBackend starts mode's topology. wait is the replica count of one
// primary: 0 standalone, 1 cluster (one replica per master), 2 sentinel.
func startBackend(t *testing.T, mode string) *haBackend {
	t.Helper()
	b := &haBackend{mode: mode}
	switch mode {
	case "standalone":
		b.server = redistest.StartServer(t, "--appendonly", "yes")
		b.url, b.rdb = b.server.URL(), b.server.Client(t)
	case "cluster":
		b.cluster = redistest.StartCluster(t, redistest.ClusterOptions{})
		b.url, b.rdb, b.wait = b.cluster.URL(), b.cluster.Client, 1
	case "sentinel":
		b.sentinel = redistest.StartSentinel(t, redistest.SentinelOptions{})
		b.url, b.wait = b.sentinel.URL(), 2
		b.rdb = redis.NewFailoverClient(b.sentinel.FailoverOptions())
		t.Cleanup(func() { b.rdb.Close() })
	default:
		t.Fatalf("unknown mode %q", mode)
	}
	return b
}

// env is ferryEnv for this backend, with WAIT for every replica when wait.
func (b *haBackend) env(t *testing.T, appID string, wait bool) map[string]string {
	env := ferryEnv(t, appID, b.url)
	env["FERRY_REDIS_MODE"] = b.mode
	if wait {
		env["FERRY_REDIS_WAIT_REPLICAS"] = strconv.Itoa(b.wait)
	}
	return env
}

// modesApp answers deliveries by body: "poison-*" 400 (until acceptPoison),
// "retry-*" 503 for the first two attempts; everything else 200. The path
// is /{group}/…; it counts 2xx per group and id, replays apart, and keeps
// the order of the ordered events per group.
type modesApp struct {
	srv          *httptest.Server
	mu           sync.Mutex
	acceptPoison bool
	ok           map[string]map[string]int // group → id → 2xx
	replayed     map[string]map[string]int
	order        map[string][]string // group → ids of "ord-*" bodies, in arrival order
}

func newModesApp(t *testing.T) *modesApp {
	a := &modesApp{ok: map[string]map[string]int{}, replayed: map[string]map[string]int{}, order: map[string][]string{}}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		group, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		buf := make([]byte, 64)
		n, _ := r.Body.Read(buf)
		body := string(buf[:n])
		id := r.Header.Get("Ferry-Message-Id")
		a.mu.Lock()
		defer a.mu.Unlock()
		code := http.StatusOK
		switch {
		case strings.HasPrefix(body, "poison-") && !a.acceptPoison:
			code = http.StatusBadRequest
		case strings.HasPrefix(body, "retry-") && r.Header.Get("Ferry-Attempt") < "3":
			code = http.StatusServiceUnavailable
		}
		if code == http.StatusOK {
			m := a.ok
			if r.Header.Get("Ferry-Replay") == "true" {
				m = a.replayed
			} else if strings.HasPrefix(body, "ord-") {
				a.order[group] = append(a.order[group], id)
			}
			if m[group] == nil {
				m[group] = map[string]int{}
			}
			m[group][id]++
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *modesApp) distinct(m map[string]map[string]int, group string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(m[group])
}

// adminPost POSTs body to a ferry's admin path and decodes the answer.
func adminPost(t *testing.T, p *proc, path, body string) map[string]any {
	t.Helper()
	resp, err := http.Post(p.admin+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %d %v", path, resp.StatusCode, out)
	}
	return out
}

// deadLetterCount is the number of dead letters a ferry lists for topic.
func deadLetterCount(t *testing.T, p *proc, topic string) int {
	t.Helper()
	resp, err := http.Get(p.admin + "/v1/deadletters/" + topic)
	if err != nil {
		t.Fatalf("deadletters: %v", err)
	}
	defer resp.Body.Close()
	var out struct{ Deadletters []any }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("deadletters body: %v", err)
	}
	return len(out.Deadletters)
}

// TestEndToEndModes: publish → two subscribing groups → app, with retries,
// dead letters, redrive, replay and ordering, unchanged against the three
// topologies (WAIT for every replica where there are replicas).
func TestEndToEndModes(t *testing.T) {
	for _, mode := range []string{"standalone", "cluster", "sentinel"} {
		t.Run(mode, func(t *testing.T) {
			b := startBackend(t, mode)
			app := newModesApp(t)
			pub := startFerry(t, b.env(t, "orders-svc", true))
			subs := map[string]*proc{}
			for _, group := range []string{"billing", "audit"} {
				env := b.env(t, group, true)
				env["FERRY_APP_URL"] = app.srv.URL + "/" + group
				env["FERRY_SUBSCRIPTIONS"] = "orders=/orders"
				env["FERRY_BREAKER_OPEN_TIMEOUT"] = "200ms" // the retried events trip it: resume quickly
				subs[group] = startFerry(t, env)
			}
			const plain, ordered, retried, poison = 60, 20, 10, 5
			kinds := []struct {
				prefix string
				n      int
			}{{"plain-", plain}, {"ord-", ordered}, {"retry-", retried}, {"poison-", poison}}
			for _, k := range kinds {
				for i := range k.n {
					hdr := map[string]string{"Idempotency-Key": k.prefix + itoa(i)}
					if k.prefix == "ord-" {
						hdr["Ordering-Key"] = "customer-1"
					}
					if code, body := pub.publish("orders", k.prefix+itoa(i), hdr); code != http.StatusAccepted {
						t.Fatalf("publish %s%d: %d %s", k.prefix, i, code, body)
					}
				}
			}
			const delivered = plain + ordered + retried
			for group, sub := range subs {
				waitUntil(t, 60*time.Second, group+" delivered and dead-lettered", func() bool {
					return app.distinct(app.ok, group) == delivered && deadLetterCount(t, sub, "orders") == poison
				})
			}
			app.mu.Lock()
			for group := range subs {
				for id, n := range app.ok[group] {
					if n != 1 {
						t.Errorf("%s: %s delivered %d times", group, id, n)
					}
				}
				for i, id := range app.order[group] {
					if id != "ord-"+itoa(i) {
						t.Fatalf("%s: ordered events arrived as %v", group, app.order[group])
					}
				}
			}
			app.acceptPoison = true
			app.mu.Unlock()

			if out := adminPost(t, subs["billing"], "/v1/deadletters/orders/redrive", ""); out["redriven"] != float64(poison) {
				t.Fatalf("redrive: %v", out)
			}
			waitUntil(t, 30*time.Second, "billing got the redriven", func() bool { return app.distinct(app.ok, "billing") == delivered+poison })
			if n := deadLetterCount(t, subs["audit"], "orders"); n != poison || app.distinct(app.ok, "audit") != delivered {
				t.Fatalf("audit saw the redrive: %d dead letters, %d delivered", n, app.distinct(app.ok, "audit"))
			}

			adminPost(t, subs["audit"], "/v1/subscriptions/orders/replay", `{"from":"2000-01-01T00:00:00Z"}`)
			waitUntil(t, 30*time.Second, "audit got the replay", func() bool { return app.distinct(app.replayed, "audit") == delivered+poison })
			if n := app.distinct(app.replayed, "billing"); n != 0 {
				t.Fatalf("billing got %d replays", n)
			}
			for name, p := range map[string]*proc{"publisher": pub, "billing": subs["billing"], "audit": subs["audit"]} {
				if code := p.term(20 * time.Second); code != 0 {
					t.Errorf("%s exit %d after SIGTERM, want 0", name, code)
				}
			}
		})
	}
}

// keepCtx is a background context for test checks.
var keepCtx = context.Background()
