package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/internal/redistest"
)

// node is one in-process sidecar under test.
type node struct {
	t       *testing.T
	sc      *Sidecar
	cancel  context.CancelFunc
	done    chan error
	pub     string // http://host:port of the publish API
	admin   string // http://host:port of the admin API
	reg     *prometheus.Registry
	logs    *syncBuffer
	env     map[string]string
	stopped bool
}

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// baseEnv is a configuration for tests: loopback ports chosen by the OS,
// a temp outbox, fast retries.
func baseEnv(t *testing.T, appID, redisURL string) map[string]string {
	return map[string]string{
		"FERRY_APP_ID":                 appID,
		"FERRY_REDIS_URL":              redisURL,
		"FERRY_LISTEN_ADDR":            "127.0.0.1:0",
		"FERRY_ADMIN_ADDR":             "127.0.0.1:0",
		"FERRY_OUTBOX_DIR":             t.TempDir(),
		"FERRY_RETRY_INITIAL_INTERVAL": "10ms",
		"FERRY_RETRY_MAX_INTERVAL":     "50ms",
		"FERRY_SHUTDOWN_TIMEOUT":       "5s",
		"FERRY_LOG_LEVEL":              "debug",
		"HOSTNAME":                     appID + "-0",
	}
}

func startNode(t *testing.T, env map[string]string) *node {
	t.Helper()
	return startNodeWith(t, env, nil)
}

// startNodeWith is startNode with a chance to adjust the sidecar before it runs.
func startNodeWith(t *testing.T, env map[string]string, prepare func(*Sidecar)) *node {
	t.Helper()
	cfg, err := LoadConfig(env)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()
	sc, err := New(cfg, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), reg, reg)
	if err != nil {
		t.Fatalf("new sidecar: %v", err)
	}
	sc.setRefreshEvery(100 * time.Millisecond)
	if prepare != nil {
		prepare(sc)
	}
	if err := sc.Listen(); err != nil {
		t.Fatalf("listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{t: t, sc: sc, cancel: cancel, done: make(chan error, 1), reg: reg, logs: logs, env: env,
		pub: "http://" + sc.PublishAddr(), admin: "http://" + sc.AdminAddr()}
	go func() { n.done <- sc.Run(ctx) }()
	t.Cleanup(func() {
		n.stop()
		if t.Failed() {
			t.Logf("logs of %s:\n%s", cfg.AppID, logs.String())
		}
	})
	waitFor(t, 5*time.Second, "ready", func() bool { return n.sc.admin.Ready() })
	return n
}

// stop shuts the node down and returns Run's error.
func (n *node) stop() error {
	if n.stopped {
		return nil
	}
	n.stopped = true
	n.cancel()
	select {
	case err := <-n.done:
		return err
	case <-time.After(30 * time.Second):
		n.t.Errorf("sidecar did not stop within 30s")
		return errors.New("timeout")
	}
}

// publish POSTs body to topic with headers and returns the status and body.
func (n *node) publish(topic, body string, hdr map[string]string) (int, string) {
	n.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, n.pub+"/v1/publish/"+topic, strings.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return do(n.t, req)
}

func do(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func mustPublish(t *testing.T, n *node, topic, body string, hdr map[string]string) string {
	t.Helper()
	code, resp := n.publish(topic, body, hdr)
	if code != http.StatusAccepted {
		t.Fatalf("publish %s: %d %s", topic, code, resp)
	}
	var r publishResponse
	if err := json.Unmarshal([]byte(resp), &r); err != nil || r.ID == "" || r.Topic != topic {
		t.Fatalf("publish answer %q: %v", resp, err)
	}
	return r.ID
}

// received is one delivery seen by a test app.
type received struct {
	Path   string
	Header http.Header
	Body   string
}

// app is a scripted subscriber app: answer decides each response.
type app struct {
	srv    *httptest.Server
	mu     sync.Mutex
	got    []received
	ch     chan received
	answer func(r received) int
}

func newApp(t *testing.T, answer func(r received) int) *app {
	a := &app{ch: make(chan received, 10000), answer: answer}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rec := received{Path: r.URL.Path, Header: r.Header.Clone(), Body: string(b)}
		code := http.StatusOK
		if a.answer != nil {
			code = a.answer(rec)
		}
		a.mu.Lock()
		a.got = append(a.got, rec)
		a.mu.Unlock()
		w.WriteHeader(code)
		select {
		case a.ch <- rec:
		default:
		}
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *app) all() []received {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]received(nil), a.got...)
}

// next waits for the next delivery.
func (a *app) next(t *testing.T, within time.Duration) received {
	t.Helper()
	select {
	case r := <-a.ch:
		return r
	case <-time.After(within):
		t.Fatalf("no delivery within %s", within)
		return received{}
	}
}

// waitFor polls cond until it holds or the deadline passes (bounded).
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pair is a publisher sidecar and a subscriber sidecar with its app, sharing one Redis.
type pair struct {
	redis *redistest.Server
	rdb   *redis.Client
	pub   *node
	sub   *node
	app   *app
}

func startPair(t *testing.T, subEnv map[string]string, answer func(received) int) *pair {
	t.Helper()
	srv := redistest.StartServer(t)
	p := &pair{redis: srv, rdb: srv.Client(t)}
	p.app = newApp(t, answer)
	p.pub = startNode(t, baseEnv(t, "orders-svc", srv.URL()))
	env := baseEnv(t, "billing", srv.URL())
	env["FERRY_APP_URL"] = p.app.srv.URL
	env["FERRY_SUBSCRIPTIONS"] = "orders=/events/orders"
	for k, v := range subEnv {
		env[k] = v
	}
	p.sub = startNode(t, env)
	return p
}

// metric reads one sample's value from a node's registry (0 when absent).
func (n *node) metric(name string, labels map[string]string) float64 {
	mfs, err := n.reg.Gather()
	if err != nil {
		n.t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}
