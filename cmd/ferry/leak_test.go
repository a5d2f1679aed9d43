package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-sidecar/ferry/internal/redistest"
)

// TestNoSecretsOrBodiesLeak runs two ferry binaries at debug level through
// deliveries, retries, dead letters, a redrive, rejected tokens and a Redis
// outage, then scans everything ferry says — every log line, /v1/status and
// /metrics — for the API token, the app token, the Redis password and the
// message bodies.
func TestNoSecretsOrBodiesLeak(t *testing.T) {
	const (
		apiToken   = "API-TOKEN-SECRET-b41f0e"
		appToken   = "APP-TOKEN-SECRET-77c2ad"
		wrongToken = "WRONG-TOKEN-SECRET-19ee3"
		password   = "REDIS-PASS-SECRET-a9d3"
		bodyMark   = "BODY-SECRET-"
	)
	srv := redistest.StartServer(t, "--requirepass", password)
	redisURL := "redis://:" + password + "@" + srv.Addr + "/0"

	var mu sync.Mutex
	delivered := map[string]int{} // body → 2xx answers
	seen := map[string]int{}      // body → attempts
	var badAuth []string
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		body := string(b)
		mu.Lock()
		defer mu.Unlock()
		if got := r.Header.Get("Authorization"); got != "Bearer "+appToken {
			badAuth = append(badAuth, got)
		}
		seen[body]++
		switch {
		case strings.Contains(body, "POISON"):
			w.WriteHeader(http.StatusBadRequest)
		case strings.Contains(body, "RETRY") && seen[body] == 1:
			w.WriteHeader(http.StatusInternalServerError)
		default:
			delivered[body]++
		}
	}))
	defer app.Close()

	pubEnv := ferryEnv(t, "orders-svc", redisURL)
	pubEnv["FERRY_API_TOKEN"] = apiToken
	pubEnv["FERRY_LOG_LEVEL"] = "debug"
	subEnv := ferryEnv(t, "billing", redisURL)
	subEnv["FERRY_API_TOKEN"] = apiToken
	subEnv["FERRY_APP_TOKEN"] = appToken
	subEnv["FERRY_APP_URL"] = app.URL
	subEnv["FERRY_SUBSCRIPTIONS"] = "orders=/events/orders"
	subEnv["FERRY_LOG_LEVEL"] = "debug"
	subEnv["FERRY_LOG_FORMAT"] = "text" // both handlers are scanned
	subEnv["FERRY_RETRY_MAX_ATTEMPTS"] = "3"
	pub := startFerry(t, pubEnv)
	sub := startFerry(t, subEnv)

	auth := map[string]string{"Authorization": "Bearer " + apiToken}
	publish := func(body string) {
		t.Helper()
		if code, resp := pub.publish("orders", body, auth); code != http.StatusAccepted {
			t.Fatalf("publish %q: %d %s", body, code, resp)
		}
	}
	var bodies []string
	for i := range 6 {
		kind := "OK"
		switch i {
		case 1:
			kind = "RETRY"
		case 2:
			kind = "POISON"
		}
		b := fmt.Sprintf("%s%d-%s", bodyMark, i, kind)
		bodies = append(bodies, b)
		publish(b)
	}
	// Rejected tokens, on both APIs.
	if code, _ := pub.publish("orders", bodyMark+"REJECTED", map[string]string{"Authorization": "Bearer " + wrongToken}); code != http.StatusUnauthorized {
		t.Fatalf("publish with a wrong token: %d, want 401", code)
	}
	if code, _ := adminCall(t, sub, http.MethodGet, "/v1/status", wrongToken); code != http.StatusUnauthorized {
		t.Fatalf("status with a wrong token: %d, want 401", code)
	}
	waitUntil(t, 20*time.Second, "the first deliveries", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(delivered) == 5 && seen[bodies[2]] >= 1
	})
	waitUntil(t, 10*time.Second, "the poison dead letter", func() bool {
		_, body := adminCall(t, sub, http.MethodGet, "/v1/deadletters/orders", apiToken)
		return strings.Contains(body, `"reason":"poison"`)
	})
	if code, body := adminCall(t, sub, http.MethodPost, "/v1/deadletters/orders/redrive", apiToken); code != http.StatusOK || !strings.Contains(body, `"redriven":1`) {
		t.Fatalf("redrive: %d %s", code, body)
	}
	waitUntil(t, 10*time.Second, "the redriven poison to be dead-lettered again", func() bool {
		mu.Lock()
		again := seen[bodies[2]] >= 2
		mu.Unlock()
		_, body := adminCall(t, sub, http.MethodGet, "/v1/deadletters/orders", apiToken)
		return again && strings.Count(body, `"reason":"poison"`) == 1
	})

	// Redis goes away: the relay, the consumer, the health hook and an
	// admin call all log their errors.
	srv.Stop(t)
	for i := range 3 {
		b := fmt.Sprintf("%sDURING-OUTAGE-%d", bodyMark, i)
		bodies = append(bodies, b)
		publish(b)
	}
	waitUntil(t, 15*time.Second, "both sidecars to log the outage", func() bool {
		return strings.Contains(pub.logs(), "relay to redis") && strings.Contains(sub.logs(), "redis down")
	})
	if code, _ := adminCall(t, sub, http.MethodGet, "/v1/deadletters/orders", apiToken); code != http.StatusServiceUnavailable {
		t.Fatalf("dead letters with Redis down: %d, want 503", code)
	}
	srv.Restart(t)
	waitUntil(t, 30*time.Second, "the outage's events to be delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(delivered) == 8
	})

	// Collect everything ferry says.
	var said []string
	for _, p := range []*proc{pub, sub} {
		for _, path := range []string{"/v1/status", "/metrics", "/readyz", "/v1/deadletters/orders"} {
			code, body := adminCall(t, p, http.MethodGet, path, apiToken)
			if path != "/v1/deadletters/orders" && code != http.StatusOK {
				t.Fatalf("GET %s: %d %s", path, code, body)
			}
			said = append(said, p.env["FERRY_APP_ID"]+" "+path+":\n"+body)
		}
	}
	if code := pub.term(15 * time.Second); code != 0 {
		t.Errorf("publisher exit %d", code)
	}
	if code := sub.term(15 * time.Second); code != 0 {
		t.Errorf("subscriber exit %d", code)
	}
	said = append(said, "orders-svc log:\n"+pub.logs(), "billing log:\n"+sub.logs())

	// The scan would prove nothing if the error paths had not logged.
	for _, want := range []string{"relay to redis", "redis down", "redis up", "dead-lettered", "delivery retry", "admin redis call"} {
		if !strings.Contains(pub.logs()+sub.logs(), want) {
			t.Errorf("no %q line: the leak scan misses that path", want)
		}
	}
	// Every line goes through slog (go-redis's own logger included): nothing
	// reaches stderr unformatted, where no handler could keep secrets out.
	for _, line := range strings.Split(strings.TrimSpace(pub.logs()), "\n") {
		if !json.Valid([]byte(line)) {
			t.Errorf("orders-svc (json) log line is not JSON: %s", line)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(sub.logs()), "\n") {
		if !strings.HasPrefix(line, "time=") {
			t.Errorf("billing (text) log line is not slog text: %s", line)
		}
	}
	if !strings.Contains(pub.logs()+sub.logs(), "component=go-redis") && !strings.Contains(pub.logs()+sub.logs(), `"component":"go-redis"`) {
		t.Errorf("no go-redis line during the outage: its logger is not routed through slog")
	}
	secrets := map[string]string{
		"API token":      apiToken,
		"app token":      appToken,
		"rejected token": wrongToken,
		"Redis password": password,
		"a body":         bodyMark,
	}
	for _, text := range said {
		for what, s := range secrets {
			if i := strings.Index(text, s); i >= 0 {
				line := text[max(0, strings.LastIndex(text[:i], "\n")+1):]
				line, _, _ = strings.Cut(line, "\n")
				t.Errorf("%s leaked in %s: %s", what, strings.SplitN(text, "\n", 2)[0], line)
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(badAuth) > 0 {
		t.Errorf("deliveries without the app token: %q", badAuth)
	}
}

// adminCall calls the admin API of p with a bearer token.
func adminCall(t *testing.T, p *proc, method, path, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, p.admin+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if method == http.MethodGet && strings.HasPrefix(path, "/v1/status") && resp.StatusCode == http.StatusOK && !json.Valid(b) {
		t.Fatalf("status body is not JSON: %s", b)
	}
	return resp.StatusCode, string(b)
}
