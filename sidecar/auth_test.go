package sidecar

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ferry-sidecar/ferry/internal/redistest"
)

const (
	testAPIToken = "api-token-0123456789abcdef"
	testAppToken = "app-token-fedcba9876543210"
)

// guarded is every endpoint FERRY_API_TOKEN protects, with a body that the
// endpoint accepts once authorised.
func guarded(n *node) []struct{ method, url, body string } {
	return []struct{ method, url, body string }{
		{http.MethodPost, n.pub + "/v1/publish/orders", "hello"},
		{http.MethodGet, n.admin + "/v1/status", ""},
		{http.MethodGet, n.admin + "/v1/deadletters/orders", ""},
		{http.MethodGet, n.admin + "/v1/deadletters/orders?limit=5", ""},
		{http.MethodPost, n.admin + "/v1/deadletters/orders/redrive", ""},
		{http.MethodPost, n.admin + "/v1/subscriptions/orders/replay", `{"from":"0"}`},
	}
}

func TestAPITokenGuardsPublishAndAdmin(t *testing.T) {
	srv := redistest.StartServer(t)
	a := newApp(t, nil)
	env := baseEnv(t, "billing", srv.URL())
	env["FERRY_API_TOKEN"] = testAPIToken
	env["FERRY_APP_TOKEN"] = testAppToken
	env["FERRY_APP_URL"] = a.srv.URL
	env["FERRY_SUBSCRIPTIONS"] = "orders=/events/orders"
	n := startNode(t, env)

	denied := map[string]string{
		"missing":             "",
		"wrong token":         "Bearer not-the-token",
		"token prefix":        "Bearer " + testAPIToken[:10],
		"token with suffix":   "Bearer " + testAPIToken + "x",
		"no token":            "Bearer",
		"empty token":         "Bearer ",
		"basic scheme":        "Basic " + testAPIToken,
		"token scheme":        "Token " + testAPIToken,
		"bare token":          testAPIToken,
		"scheme glued":        "Bearer" + testAPIToken,
		"app token instead":   "Bearer " + testAppToken,
		"bearer in the token": "Bearer Bearer " + testAPIToken,
	}
	appendsBefore := n.sc.outbox.Stats().Appends
	for _, ep := range guarded(n) {
		for name, auth := range denied {
			req, _ := http.NewRequest(ep.method, ep.url, strings.NewReader(ep.body))
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", ep.method, ep.url, err)
			}
			var p problem
			decErr := json.NewDecoder(resp.Body).Decode(&p)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s %s with %s: %d, want 401", ep.method, ep.url, name, resp.StatusCode)
				continue
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("%s %s with %s: Content-Type %q", ep.method, ep.url, name, ct)
			}
			if wa := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(wa, "Bearer") {
				t.Errorf("%s %s with %s: WWW-Authenticate %q, want Bearer", ep.method, ep.url, name, wa)
			}
			if decErr != nil || p.Status != 401 || p.Type == "" || p.Title == "" || p.Detail == "" {
				t.Errorf("%s %s with %s: problem %+v (%v)", ep.method, ep.url, name, p, decErr)
			}
		}
	}
	if got := n.sc.outbox.Stats().Appends; got != appendsBefore {
		t.Fatalf("unauthorised publishes appended %d records", got-appendsBefore)
	}

	// The right token, with the scheme in any case, opens every endpoint.
	want := []int{http.StatusAccepted, http.StatusOK, http.StatusOK, http.StatusOK, http.StatusOK, http.StatusOK}
	for _, scheme := range []string{"Bearer", "bearer", "BEARER", "bEaReR"} {
		for i, ep := range guarded(n) {
			req, _ := http.NewRequest(ep.method, ep.url, strings.NewReader(ep.body))
			req.Header.Set("Authorization", scheme+" "+testAPIToken)
			if code, body := do(t, req); code != want[i] {
				t.Errorf("%s %s with %q: %d %s, want %d", ep.method, ep.url, scheme, code, body, want[i])
			}
		}
	}

	// Probes and metrics stay open: kubelet and Prometheus carry no token.
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if code, body := do(t, mustReq(http.MethodGet, n.admin+path)); code != http.StatusOK {
			t.Errorf("GET %s without a token: %d %s", path, code, body)
		}
	}

	// Deliveries carry the app token, never the API token the publisher sent.
	got := a.next(t, 10*time.Second)
	if auth := got.Header.Get("Authorization"); auth != "Bearer "+testAppToken {
		t.Fatalf("delivery Authorization = %q, want Bearer <FERRY_APP_TOKEN>", auth)
	}
	if strings.Contains(strings.Join(flatten(got.Header), "\n"), testAPIToken) {
		t.Fatalf("delivery carries the API token: %v", got.Header)
	}
}

func TestNoAppTokenMeansNoAuthorizationOnDeliveries(t *testing.T) {
	srv := redistest.StartServer(t)
	a := newApp(t, nil)
	env := baseEnv(t, "billing", srv.URL())
	env["FERRY_API_TOKEN"] = testAPIToken
	env["FERRY_APP_URL"] = a.srv.URL
	env["FERRY_SUBSCRIPTIONS"] = "orders=/events/orders"
	n := startNode(t, env)
	mustPublish(t, n, "orders", "x", map[string]string{"Authorization": "Bearer " + testAPIToken})
	got := a.next(t, 10*time.Second)
	if auth, ok := got.Header["Authorization"]; ok {
		t.Fatalf("delivery carries Authorization %q without FERRY_APP_TOKEN", auth)
	}
}

func flatten(h http.Header) []string {
	var out []string
	for k, vs := range h {
		for _, v := range vs {
			out = append(out, k+": "+v)
		}
	}
	return out
}

// TestOpenListenAddrWithoutTokenWarns binds all interfaces (allowed: no
// traffic is sent there) and checks the start-up warning.
func TestOpenListenAddrWithoutTokenWarns(t *testing.T) {
	const (
		publishWarn = "FERRY_LISTEN_ADDR is not loopback"
		adminWarn   = "FERRY_ADMIN_ADDR is not loopback"
	)
	cases := []struct {
		name, listen, admin, token string
		want                       []string
	}{
		{"publish on all interfaces, no token", "0.0.0.0:0", "127.0.0.1:0", "", []string{publishWarn}},
		{"admin on all interfaces, no token", "127.0.0.1:0", "0.0.0.0:0", "", []string{adminWarn}},
		{"both open, no token", "0.0.0.0:0", "0.0.0.0:0", "", []string{publishWarn, adminWarn}},
		{"both open, token set", "0.0.0.0:0", "0.0.0.0:0", testAPIToken, nil},
		{"loopback, no token", "127.0.0.1:0", "127.0.0.1:0", "", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := baseEnv(t, "orders-svc", "redis://127.0.0.1:1/0") // Redis is not needed to start
			env["FERRY_LISTEN_ADDR"] = tc.listen
			env["FERRY_ADMIN_ADDR"] = tc.admin
			env["FERRY_API_TOKEN"] = tc.token
			n := startNode(t, env)
			var warns []string
			for _, line := range strings.Split(n.logs.String(), "\n") {
				var rec struct{ Level, Msg string }
				if json.Unmarshal([]byte(line), &rec) == nil && rec.Level == "WARN" && strings.Contains(rec.Msg, "not loopback") {
					warns = append(warns, rec.Msg)
				}
			}
			if len(warns) != len(tc.want) {
				t.Fatalf("warnings %q, want %d containing %q", warns, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				token := "FERRY_API_TOKEN"
				if w == adminWarn {
					token = "FERRY_ADMIN_TOKEN"
				}
				if !strings.Contains(warns[i], w) || !strings.Contains(warns[i], token) {
					t.Errorf("warning %q, want it to name %q and %s", warns[i], w, token)
				}
			}
		})
	}
}
