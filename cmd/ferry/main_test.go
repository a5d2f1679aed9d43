package main

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-sidecar/ferry/internal/redistest"
)

func TestBadConfigExitsTwoNamingTheVariable(t *testing.T) {
	cases := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "FERRY_APP_ID"},
		{map[string]string{"FERRY_APP_ID": "a", "FERRY_DELIVERY_TIMEOUT": "soon"}, "FERRY_DELIVERY_TIMEOUT"},
		{map[string]string{"FERRY_APP_ID": "a", "FERRY_SUBSCRIPTIONS": "orders"}, "FERRY_SUBSCRIPTIONS"},
		{map[string]string{"FERRY_APP_ID": "a", "FERRY_REDIS_URL": "http://user:hunter2@x"}, "FERRY_REDIS_URL"},
	}
	for _, c := range cases {
		code, out := runFerry(t, c.env, 10*time.Second)
		if code != 2 || !strings.Contains(out, c.want) {
			t.Errorf("%v: exit %d, output %q; want 2 naming %s", c.env, code, out, c.want)
		}
		if strings.Contains(out, "hunter2") {
			t.Errorf("password in output: %q", out)
		}
	}
}

// TestEndToEndWithTheBinary runs Redis, two ferry processes and an app:
// events published to one are delivered to the other's app; SIGTERM drains
// and exits 0.
func TestEndToEndWithTheBinary(t *testing.T) {
	srv := redistest.StartServer(t)
	var mu sync.Mutex
	got := map[string]string{}
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, 64)
		n, _ := r.Body.Read(b)
		mu.Lock()
		got[r.Header.Get("Ferry-Message-Id")] = r.URL.Path + " " + string(b[:n])
		mu.Unlock()
	}))
	defer app.Close()
	pubEnv := ferryEnv(t, "orders-svc", srv.URL())
	pub := startFerry(t, pubEnv)
	subEnv := ferryEnv(t, "billing", srv.URL())
	subEnv["FERRY_APP_URL"] = app.URL
	subEnv["FERRY_SUBSCRIPTIONS"] = "orders=/events/orders"
	sub := startFerry(t, subEnv)

	const n = 50
	for i := range n {
		code, body := pub.publish("orders", "event-"+itoa(i), map[string]string{"Idempotency-Key": "k-" + itoa(i)})
		if code != 202 {
			t.Fatalf("publish %d: %d %s", i, code, body)
		}
	}
	waitUntil(t, 20*time.Second, "all delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == n
	})
	mu.Lock()
	for i := range n {
		if want := "/events/orders event-" + itoa(i); got["k-"+itoa(i)] != want {
			t.Errorf("k-%d: got %q, want %q", i, got["k-"+itoa(i)], want)
		}
	}
	mu.Unlock()
	if code := pub.term(15 * time.Second); code != 0 {
		t.Errorf("publisher exit %d after SIGTERM, want 0", code)
	}
	if code := sub.term(15 * time.Second); code != 0 {
		t.Errorf("subscriber exit %d after SIGTERM, want 0", code)
	}
	if !strings.Contains(pub.logs(), `"msg":"shutdown complete"`) {
		t.Errorf("no shutdown line in the log:\n%s", pub.logs())
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
