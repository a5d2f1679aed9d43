package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/internal/netnstest"
	"github.com/ferry-sidecar/ferry/internal/redistest"
)

// Secure by default (issue 21), with the binary: remote /v1/* admin calls
// need a token, secrets come from files.
//
// The requests "from another pod" leave from a network namespace joined to
// the host by a veth pair (internal/netnstest): ferry's admin listener is
// bound to the host end only, so the machine's own addresses are never
// used. Loopback callers reach the same listener with 127.0.0.1 as their
// source address, as `ferry status` inside the pod would.

// loopbackClient reaches any local address from 127.0.0.1.
func loopbackClient() *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			Proxy:             nil,
			DialContext:       (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}).DialContext,
			DisableKeepAlives: true,
		},
	}
}

// adminReq sends one admin request with c; token "" sends none.
func adminReq(t *testing.T, c *http.Client, method, url, token, body string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// lastDelivered is the last-delivered id of group on the orders stream.
func lastDelivered(t *testing.T, rdb *redis.Client, group string) string {
	t.Helper()
	groups, err := rdb.XInfoGroups(context.Background(), ordersStream).Result()
	if err != nil {
		t.Fatalf("XINFO GROUPS: %v", err)
	}
	for _, g := range groups {
		if g.Name == group {
			return g.LastDeliveredID
		}
	}
	t.Fatalf("no group %s on %s", group, ordersStream)
	return ""
}

// remoteAdminSetup runs Redis, a publisher, and a subscriber "billing"
// whose admin listener is on the host end of a fresh namespace; n events
// are delivered and acked.
func remoteAdminSetup(t *testing.T, n int) (ns *netnstest.NS, rdb *redis.Client, app *crashApp, subEnv map[string]string, sub *proc) {
	t.Helper()
	ns = netnstest.New(t)
	srv := redistest.StartServer(t)
	rdb = srv.Client(t)
	app = newCrashApp(t, 0, nil)
	pub := startFerry(t, ferryEnv(t, "orders-svc", srv.URL()))
	subEnv = subscriberEnv(t, srv.URL(), app.srv.URL, "billing-0")
	subEnv["FERRY_ADMIN_ADDR"] = net.JoinHostPort(ns.HostIP.String(), strconv.Itoa(redistest.FreePort(t)))
	sub = startFerry(t, subEnv)
	for i := range n {
		mustPublishKey(t, pub, fmt.Sprintf("ra-%d", i))
	}
	waitUntil(t, 20*time.Second, "the events delivered and acked", func() bool {
		d, _ := app.seen()
		return d == n && settled(rdb, "billing", int64(n))
	})
	return ns, rdb, app, subEnv, sub
}

const replayFromStart = `{"from":"0"}`

// TestRemoteAdminNeedsToken: with no token set, /v1/* answers loopback
// callers only; a remote replay is refused with 403 and rewinds nothing;
// the probes and /metrics stay open to everyone.
func TestRemoteAdminNeedsToken(t *testing.T) {
	const n = 5
	ns, rdb, app, _, sub := remoteAdminSetup(t, n)
	remote, local := ns.Client(), loopbackClient()

	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if code, _, body := adminReq(t, remote, http.MethodGet, sub.admin+path, "", ""); code != http.StatusOK {
			t.Errorf("GET %s from the namespace: %d %s, want 200", path, code, body)
		}
	}

	t.Run("remote /v1 without a token is refused", func(t *testing.T) {
		before := lastDelivered(t, rdb, "billing")
		_, deliveries := app.seen()
		for _, c := range []struct{ method, path, body string }{
			{http.MethodPost, "/v1/subscriptions/orders/replay", replayFromStart},
			{http.MethodGet, "/v1/status", ""},
			{http.MethodGet, "/v1/deadletters/orders", ""},
			{http.MethodPost, "/v1/deadletters/orders/redrive", ""},
		} {
			code, hdr, body := adminReq(t, remote, c.method, sub.admin+c.path, "", c.body)
			var p struct {
				Type   string `json:"type"`
				Status int    `json:"status"`
			}
			_ = json.Unmarshal([]byte(body), &p)
			if code != http.StatusForbidden || hdr.Get("Content-Type") != "application/problem+json" ||
				p.Type != "urn:ferry:problem:remote-admin-needs-token" || p.Status != http.StatusForbidden {
				t.Errorf("%s %s from %s: %d %s %s; want 403 problem+json remote-admin-needs-token",
					c.method, c.path, ns.NSIP, code, hdr.Get("Content-Type"), body)
			}
		}
		if after := lastDelivered(t, rdb, "billing"); after != before {
			t.Errorf("last-delivered id of billing moved from %s to %s after a refused replay", before, after)
		}
		if _, now := app.seen(); now != deliveries {
			t.Errorf("%d deliveries after the refused replay, want %d", now, deliveries)
		}
	})

	t.Run("loopback replay works", func(t *testing.T) {
		code, _, body := adminReq(t, local, http.MethodPost, sub.admin+"/v1/subscriptions/orders/replay", "", replayFromStart)
		if code != http.StatusOK || !strings.Contains(body, `"replayed_from":"0-0"`) {
			t.Fatalf("replay from loopback: %d %s, want 200 replayed_from 0-0", code, body)
		}
		waitUntil(t, 20*time.Second, "the replayed deliveries", func() bool {
			_, total := app.seen()
			return total >= 2*n
		})
	})
}

// TestRemoteAdminWithToken: with a token, remote /v1/* calls work with it
// and are refused (401) without it, from loopback too. FERRY_ADMIN_TOKEN
// rules the admin API; without it FERRY_API_TOKEN does.
func TestRemoteAdminWithToken(t *testing.T) {
	const n = 3
	ns, _, _, subEnv, sub := remoteAdminSetup(t, n)
	remote, local := ns.Client(), loopbackClient()

	check := func(t *testing.T, p *proc, token, other string) {
		t.Helper()
		if code, _, body := adminReq(t, remote, http.MethodPost, p.admin+"/v1/subscriptions/orders/replay", token, replayFromStart); code != http.StatusOK {
			t.Errorf("remote replay with the token: %d %s, want 200", code, body)
		}
		for _, c := range []struct {
			name   string
			client *http.Client
			token  string
		}{
			{"remote, no token", remote, ""},
			{"remote, another token", remote, other},
			{"loopback, no token", local, ""},
		} {
			code, hdr, body := adminReq(t, c.client, http.MethodPost, p.admin+"/v1/subscriptions/orders/replay", c.token, replayFromStart)
			if code != http.StatusUnauthorized || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s: %d %q %s, want 401 with WWW-Authenticate: Bearer", c.name, code, hdr.Get("WWW-Authenticate"), body)
			}
		}
		if code, _, _ := adminReq(t, remote, http.MethodGet, p.admin+"/metrics", "", ""); code != http.StatusOK {
			t.Errorf("remote /metrics without a token: %d, want 200", code)
		}
	}

	t.Run("FERRY_API_TOKEN", func(t *testing.T) {
		sub.kill()
		env := cloneEnv(subEnv)
		env["FERRY_API_TOKEN"] = "api-token-7f3e"
		sub = startFerry(t, env)
		check(t, sub, "api-token-7f3e", "nope")
	})
	t.Run("FERRY_ADMIN_TOKEN", func(t *testing.T) {
		sub.kill()
		env := cloneEnv(subEnv)
		env["FERRY_API_TOKEN"] = "api-token-7f3e"
		env["FERRY_ADMIN_TOKEN"] = "admin-token-c81a"
		sub = startFerry(t, env)
		// The publish token does not open the admin API.
		check(t, sub, "admin-token-c81a", "api-token-7f3e")
	})
}

func cloneEnv(env map[string]string) map[string]string {
	out := make(map[string]string, len(env))
	for k, v := range env {
		out[k] = v
	}
	return out
}

// secretFile writes content to a file of its own and returns its path.
func secretFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// assertNoSecret fails if any secret appears in what ferry wrote.
func assertNoSecret(t *testing.T, where, out string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("secret %q in %s", s, where)
		}
	}
}

// TestSecretsFromFiles: FERRY_API_TOKEN_FILE, FERRY_ADMIN_TOKEN_FILE,
// FERRY_APP_TOKEN_FILE and FERRY_REDIS_PASSWORD_FILE each work (the file's
// trailing newline is not part of the secret), and no secret is logged.
func TestSecretsFromFiles(t *testing.T) {
	const (
		apiToken   = "api-file-token-51d2"
		adminToken = "admin-file-token-0b7c"
		appToken   = "app-file-token-e94f"
		password   = "redis-file-pass-3a60"
	)
	srv := redistest.StartServer(t, "--requirepass", password)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, Password: password})
	t.Cleanup(func() { rdb.Close() })
	noPassURL := srv.URL() // no password in the URL: it comes from the file

	gotAuth := make(chan string, 16)
	app := newCrashApp(t, 0, func(r *http.Request) int {
		select {
		case gotAuth <- r.Header.Get("Authorization"):
		default:
		}
		return http.StatusOK
	})

	pubEnv := ferryEnv(t, "orders-svc", noPassURL)
	pubEnv["FERRY_LOG_LEVEL"] = "debug"
	pubEnv["FERRY_REDIS_PASSWORD_FILE"] = secretFile(t, "redis-password", password+"\n")
	pubEnv["FERRY_API_TOKEN_FILE"] = secretFile(t, "api-token", apiToken+"\n")
	pubEnv["FERRY_ADMIN_TOKEN_FILE"] = secretFile(t, "admin-token", adminToken+"\n")
	pub := startFerry(t, pubEnv)

	subEnv := subscriberEnv(t, noPassURL, app.srv.URL, "billing-0")
	subEnv["FERRY_LOG_LEVEL"] = "debug"
	subEnv["FERRY_REDIS_PASSWORD_FILE"] = secretFile(t, "redis-password", password+"\r\n")
	subEnv["FERRY_APP_TOKEN_FILE"] = secretFile(t, "app-token", appToken+"\n")
	sub := startFerry(t, subEnv)

	if code, body := pub.publish("orders", "x", nil); code != http.StatusUnauthorized {
		t.Errorf("publish without a token: %d %s, want 401", code, body)
	}
	if code, body := pub.publish("orders", "x", map[string]string{"Authorization": "Bearer " + apiToken, "Idempotency-Key": "f-1"}); code != http.StatusAccepted {
		t.Fatalf("publish with the token from FERRY_API_TOKEN_FILE: %d %s, want 202", code, body)
	}
	// Relayed through a Redis that needs the password from the file.
	waitUntil(t, 20*time.Second, "the event relayed with the password from the file", func() bool {
		l, err := rdb.XLen(context.Background(), ordersStream).Result()
		return err == nil && l == 1
	})
	select {
	case auth := <-gotAuth:
		if auth != "Bearer "+appToken {
			t.Errorf("delivery Authorization %q, want the token from FERRY_APP_TOKEN_FILE", auth)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no delivery within 20s (the subscriber's Redis password comes from its file)")
	}

	local := loopbackClient()
	if code, _, body := adminReq(t, local, http.MethodGet, pub.admin+"/v1/status", adminToken, ""); code != http.StatusOK {
		t.Errorf("status with the token from FERRY_ADMIN_TOKEN_FILE: %d %s, want 200", code, body)
	}
	if code, _, _ := adminReq(t, local, http.MethodGet, pub.admin+"/v1/status", apiToken, ""); code != http.StatusUnauthorized {
		t.Errorf("status with the publish token: %d, want 401 (the admin token is its own)", code)
	}
	_, _, metrics := adminReq(t, local, http.MethodGet, sub.admin+"/metrics", "", "")
	_, _, status := adminReq(t, local, http.MethodGet, sub.admin+"/v1/status", "", "")
	for _, p := range []*proc{pub, sub} {
		p.term(15 * time.Second)
		assertNoSecret(t, p.env["FERRY_APP_ID"]+" log", p.logs(), apiToken, adminToken, appToken, password)
	}
	assertNoSecret(t, "metrics", metrics, apiToken, adminToken, appToken, password)
	assertNoSecret(t, "status", status, apiToken, adminToken, appToken, password)
}

// TestSecretFileErrorsExitTwo: a variable and its _FILE both set, or an
// unreadable _FILE, stop ferry with exit 2 and a message naming the _FILE
// variable, never the secret.
func TestSecretFileErrorsExitTwo(t *testing.T) {
	const secret = "both-set-secret-6c1d"
	file := secretFile(t, "secret", secret+"\n")
	missing := filepath.Join(t.TempDir(), "no-such-secret")
	for _, c := range []struct {
		name, variable string
		env            map[string]string
	}{
		{"api token both set", "FERRY_API_TOKEN_FILE", map[string]string{"FERRY_API_TOKEN": secret, "FERRY_API_TOKEN_FILE": file}},
		{"admin token both set", "FERRY_ADMIN_TOKEN_FILE", map[string]string{"FERRY_ADMIN_TOKEN": secret, "FERRY_ADMIN_TOKEN_FILE": file}},
		{"app token both set", "FERRY_APP_TOKEN_FILE", map[string]string{"FERRY_APP_TOKEN": secret, "FERRY_APP_TOKEN_FILE": file}},
		{"redis password in the URL and a file", "FERRY_REDIS_PASSWORD_FILE", map[string]string{"FERRY_REDIS_URL": "redis://:" + secret + "@127.0.0.1:1/0", "FERRY_REDIS_PASSWORD_FILE": file}},
		{"api token file missing", "FERRY_API_TOKEN_FILE", map[string]string{"FERRY_API_TOKEN_FILE": missing}},
		{"admin token file missing", "FERRY_ADMIN_TOKEN_FILE", map[string]string{"FERRY_ADMIN_TOKEN_FILE": missing}},
		{"app token file missing", "FERRY_APP_TOKEN_FILE", map[string]string{"FERRY_APP_TOKEN_FILE": missing}},
		{"redis password file missing", "FERRY_REDIS_PASSWORD_FILE", map[string]string{"FERRY_REDIS_PASSWORD_FILE": missing}},
		{"api token file is a directory", "FERRY_API_TOKEN_FILE", map[string]string{"FERRY_API_TOKEN_FILE": t.TempDir()}},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := ferryEnv(t, "a", "redis://127.0.0.1:1/0")
			for k, v := range c.env {
				env[k] = v
			}
			code, out := runFerry(t, env, 10*time.Second) // a config error exits at once
			if code != 2 || !strings.Contains(out, c.variable) {
				t.Errorf("exit %d, output %.600q; want 2 naming %s", code, out, c.variable)
			}
			assertNoSecret(t, "output", out, secret)
		})
	}
}
