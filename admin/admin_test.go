package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-sidecar/ferry/breaker"
	"github.com/ferry-sidecar/ferry/delivery"
	"github.com/ferry-sidecar/ferry/outbox"
)

// Hand-written fakes of the parts the admin API reads.
type fakeOutbox struct{ st outbox.Stats }

func (f fakeOutbox) Stats() outbox.Stats { return f.st }

type fakeRedis struct{ up bool }

func (f fakeRedis) Up() bool { return f.up }

type fakeBreakers struct{}

func (fakeBreakers) State(string) breaker.State { return breaker.Open }

type fakeSub struct {
	replayedFrom string
	redisErr     error
}

func (*fakeSub) Topic() string                         { return "orders" }
func (*fakeSub) Route() string                         { return "/events/orders" }
func (f *fakeSub) RefreshStatus(context.Context) error { return f.redisErr }
func (*fakeSub) Status() delivery.Status {
	return delivery.Status{LastDelivered: "5-0", Pending: 2, Lag: 7}
}
func (f *fakeSub) DeadLetters(context.Context, int64) ([]delivery.DeadLetter, error) {
	return []delivery.DeadLetter{{MessageID: "m1", Reason: "poison", Status: 422}}, f.redisErr
}
func (f *fakeSub) Redrive(context.Context) (int, error) { return 3, f.redisErr }
func (f *fakeSub) Replay(_ context.Context, start string) error {
	f.replayedFrom = start
	return f.redisErr
}

func newAPI(token string, sub *fakeSub) *API {
	return New(Options{AppID: "billing", Token: token, OutboxMaxBytes: 1 << 20}, Parts{
		Outbox: fakeOutbox{outbox.Stats{PendingRecords: 4, PendingBytes: 100}}, Redis: fakeRedis{up: true},
		Breakers: fakeBreakers{}, Subscriptions: []Subscription{sub}, Gatherer: prometheus.NewRegistry(),
	}, nil)
}

func call(h http.Handler, method, path, remote, token, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.RemoteAddr = remote
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// Without a token /v1/* answers loopback callers only; probes and metrics
// are open to anyone; with a token the token rules, from anywhere.
func TestV1NeedsLoopbackOrToken(t *testing.T) {
	open := newAPI("", &fakeSub{}).Handler()
	for _, c := range []struct {
		remote, path string
		want         int
	}{
		{"127.0.0.1:5000", "/v1/status", 200},
		{"[::1]:5000", "/v1/status", 200},
		{"10.0.0.7:5000", "/v1/status", 403},
		{"10.0.0.7:5000", "/v1/deadletters/orders", 403},
		{"10.0.0.7:5000", "/healthz", 200},
		{"10.0.0.7:5000", "/metrics", 200},
	} {
		rec := call(open, "GET", c.path, c.remote, "", "")
		if rec.Code != c.want {
			t.Errorf("%s from %s: %d, want %d", c.path, c.remote, rec.Code, c.want)
		}
		if c.want == 403 && !strings.Contains(rec.Body.String(), "urn:ferry:problem:remote-admin-needs-token") {
			t.Errorf("%s from %s: body %s", c.path, c.remote, rec.Body)
		}
	}
	guarded := newAPI("s3cret", &fakeSub{}).Handler()
	for _, c := range []struct {
		remote, token string
		want          int
	}{{"10.0.0.7:5000", "s3cret", 200}, {"10.0.0.7:5000", "", 401}, {"127.0.0.1:5000", "", 401}, {"127.0.0.1:5000", "wrong", 401}} {
		if rec := call(guarded, "GET", "/v1/status", c.remote, c.token, ""); rec.Code != c.want {
			t.Errorf("token %q from %s: %d, want %d", c.token, c.remote, rec.Code, c.want)
		}
	}
}

func TestStatusAndOperations(t *testing.T) {
	sub := &fakeSub{}
	h := newAPI("", sub).Handler()
	const lo = "127.0.0.1:1"
	var st Status
	if err := json.Unmarshal(call(h, "GET", "/v1/status", lo, "", "").Body.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	if st.AppID != "billing" || !st.Redis.Up || st.Outbox.PendingRecords != 4 || len(st.Subscriptions) != 1 ||
		st.Subscriptions[0].Breaker != "open" || st.Subscriptions[0].Lag != 7 || st.Subscriptions[0].LastDelivered != "5-0" {
		t.Fatalf("status %+v", st)
	}
	if rec := call(h, "POST", "/v1/subscriptions/orders/replay", lo, "", `{"from":"1700000000000-3"}`); rec.Code != 200 || sub.replayedFrom != "1700000000000-3" {
		t.Fatalf("replay: %d %s, from %q", rec.Code, rec.Body, sub.replayedFrom)
	}
	for _, c := range []struct {
		method, path, body string
		want               int
	}{
		{"POST", "/v1/subscriptions/orders/replay", `{"from":"yesterday"}`, 400},
		{"POST", "/v1/subscriptions/orders/replay", `{"from":"0","x":1}`, 400},
		{"POST", "/v1/subscriptions/nope/replay", `{"from":"0"}`, 404},
		{"GET", "/v1/deadletters/orders?limit=0", "", 400},
		{"GET", "/v1/deadletters/orders?limit=5", "", 200},
		{"POST", "/v1/deadletters/orders/redrive", "", 200},
		{"GET", "/readyz", "", 503}, // not SetReady yet
	} {
		if rec := call(h, c.method, c.path, lo, "", c.body); rec.Code != c.want {
			t.Errorf("%s %s: %d %s, want %d", c.method, c.path, rec.Code, rec.Body, c.want)
		}
	}
	sub.redisErr = errors.New("dial tcp: connection refused")
	if rec := call(h, "POST", "/v1/deadletters/orders/redrive", lo, "", ""); rec.Code != 503 || rec.Header().Get("Retry-After") == "" {
		t.Errorf("redrive with Redis down: %d, Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
}
