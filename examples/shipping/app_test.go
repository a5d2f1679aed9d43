package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-sidecar/ferry/internal/cloudevent"
	"github.com/ferry-sidecar/ferry/internal/daprsub"
)

// sidecar is a stand-in for the sidecar's publish endpoint: it records the
// Dapr publishes the app makes and answers 204, as Dapr and ferry do.
type sidecar struct {
	mu   sync.Mutex
	pubs []*http.Request
	body [][]byte
}

func (s *sidecar) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.pubs = append(s.pubs, r)
	s.body = append(s.body, b)
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// startApp runs the app's Dapr SDK service on a free loopback port and
// returns its base URL and subscriptions, read through ferry's daprsub
// (which waits for the service to listen).
func startApp(t *testing.T, a *app) (string, []daprsub.Subscription) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // the SDK listens itself; Fetch below waits until it does
	svc, err := a.service(addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Start() }()
	t.Cleanup(func() {
		_ = svc.GracefulStop()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("SDK service did not stop")
		}
	})
	base := "http://" + addr
	subs, err := daprsub.Fetch(context.Background(), daprsub.FetchConfig{
		AppURL: base, Wait: 30 * time.Second, MinBackoff: 10 * time.Millisecond,
		Parse: daprsub.ParseOptions{PubsubName: "pubsub"},
	})
	if err != nil {
		select {
		case serr := <-done:
			t.Fatalf("SDK service: %v; fetch: %v", serr, err)
		default:
		}
		t.Fatal(err)
	}
	return base, subs
}

func bySubscriptionTopic(t *testing.T, subs []daprsub.Subscription) map[string]daprsub.Subscription {
	t.Helper()
	m := map[string]daprsub.Subscription{}
	for _, s := range subs {
		m[s.Topic] = s
	}
	return m
}

func TestSubscribeAnswerParsesWithFerry(t *testing.T) {
	_, subs := startApp(t, newApp(config{DaprEndpoint: "http://127.0.0.1:1", PubsubName: "pubsub"}))
	m := bySubscriptionTopic(t, subs)
	if len(subs) != 3 {
		t.Fatalf("subscriptions = %+v", subs)
	}
	orders := m[topicOrders]
	if len(orders.Rules) != 2 || orders.Rules[0].Match != largeOrderRule || orders.Rules[0].Path != routeLargeOrders ||
		orders.Rules[1].Match != "" || orders.Rules[1].Path != routeOrders {
		t.Errorf("orders rules = %+v", orders.Rules)
	}
	if orders.DeadLetterTopic != topicOrdersDead || orders.RawPayload {
		t.Errorf("orders = %+v", orders)
	}
	if inv := m[topicInvoices]; !inv.RawPayload || len(inv.Rules) != 1 || inv.Rules[0].Path != routeInvoices {
		t.Errorf("invoices = %+v", inv)
	}
	if d := m[topicOrdersDead]; len(d.Rules) != 1 || d.Rules[0].Path != routeDeadOrders {
		t.Errorf("orders-dead = %+v", d)
	}
}

// deliver does what ferry does for one delivery in dapr mode: build the
// structured CloudEvent, route it, POST it, read the answer.
func deliver(t *testing.T, base string, sub daprsub.Subscription, m cloudevent.Message) (string, daprsub.Outcome) {
	t.Helper()
	e, err := cloudevent.ForDelivery(m, sub.RawPayload)
	if err != nil {
		t.Fatal(err)
	}
	path, err := sub.Route(e)
	if err != nil {
		t.Fatalf("route: %v", err)
	}
	body, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(base+path, cloudevent.ContentType, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	ans, _ := io.ReadAll(resp.Body)
	o, _ := daprsub.Classify(resp.StatusCode, ans)
	return path, o
}

func orderMessage(id string, amount int64) cloudevent.Message {
	b, _ := json.Marshal(Order{ID: id, Customer: "c1", AmountCents: amount})
	return cloudevent.Message{ID: "msg-" + id, Source: "orders", Topic: topicOrders, PubsubName: "pubsub",
		ContentType: "application/json", Body: b, PublishedAt: time.Now()}
}

func TestOrdersRetryOnceRouteAndShip(t *testing.T) {
	sc := &sidecar{}
	srv := httptest.NewServer(sc)
	defer srv.Close()
	a := newApp(config{DaprEndpoint: srv.URL, PubsubName: "pubsub"})
	base, subs := startApp(t, a)
	orders := bySubscriptionTopic(t, subs)[topicOrders]

	for _, tt := range []struct {
		id     string
		amount int64
		path   string
	}{{"o1", 1250, routeOrders}, {"o2", 250000, routeLargeOrders}} {
		m := orderMessage(tt.id, tt.amount)
		path, o := deliver(t, base, orders, m)
		if path != tt.path || o != daprsub.Retry {
			t.Fatalf("%s first delivery: %s %v, want %s retry", tt.id, path, o, tt.path)
		}
		if path, o = deliver(t, base, orders, m); o != daprsub.Success {
			t.Fatalf("%s second delivery: %s %v, want success", tt.id, path, o)
		}
	}

	sc.mu.Lock()
	defer sc.mu.Unlock()
	if len(sc.pubs) != 2 {
		t.Fatalf("%d publishes, want 2", len(sc.pubs))
	}
	for i, want := range []Shipment{{"shp-o1", "o1", false}, {"shp-o2", "o2", true}} {
		r := sc.pubs[i]
		if r.URL.Path != "/v1.0/publish/pubsub/shipments" || r.URL.Query().Get("metadata.cloudevent.id") != want.ID ||
			r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("publish %d: %s %s", i, r.URL, r.Header.Get("Content-Type"))
		}
		var got Shipment
		if err := json.Unmarshal(sc.body[i], &got); err != nil || got != want {
			t.Errorf("publish %d body = %s (%v), want %+v", i, sc.body[i], err, want)
		}
	}
}

func TestInvalidOrderIsDropped(t *testing.T) {
	a := newApp(config{DaprEndpoint: "http://127.0.0.1:1", PubsubName: "pubsub"})
	base, subs := startApp(t, a)
	orders := bySubscriptionTopic(t, subs)[topicOrders]
	if _, o := deliver(t, base, orders, orderMessage("bad", -5)); o != daprsub.Drop {
		t.Fatalf("invalid order: %v, want drop", o)
	}
	// The dead letter, published by ferry on orders-dead, reaches the app.
	dead := bySubscriptionTopic(t, subs)[topicOrdersDead]
	m := orderMessage("bad", -5)
	m.Topic = topicOrdersDead
	if _, o := deliver(t, base, dead, m); o != daprsub.Success {
		t.Fatalf("dead letter: %v", o)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.dead) != 1 || a.dead[0].EventID != "msg-bad" {
		t.Fatalf("dead = %+v", a.dead)
	}
}

func TestPublishFailureAsksForRetry(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"errorCode":"ERR_PUBSUB_PUBLISH_MESSAGE","message":"outbox full"}`))
	}))
	defer srv.Close()
	base, subs := startApp(t, newApp(config{DaprEndpoint: srv.URL, PubsubName: "pubsub"}))
	orders := bySubscriptionTopic(t, subs)[topicOrders]
	m := orderMessage("o3", 100)
	for i := range 3 {
		if _, o := deliver(t, base, orders, m); o != daprsub.Retry {
			t.Fatalf("delivery %d: %v, want retry", i+1, o)
		}
	}
}

func TestInvoicesArriveRaw(t *testing.T) {
	a := newApp(config{DaprEndpoint: "http://127.0.0.1:1", PubsubName: "pubsub"})
	base, subs := startApp(t, a)
	inv := bySubscriptionTopic(t, subs)[topicInvoices]
	raw := `{"id":"inv-o1","order_id":"o1","amount_cents":1250}`
	m := cloudevent.Message{ID: "inv-o1", Source: "billing", Topic: topicInvoices, PubsubName: "pubsub",
		ContentType: "application/json", Body: []byte(raw), PublishedAt: time.Now()}
	if _, o := deliver(t, base, inv, m); o != daprsub.Success {
		t.Fatalf("invoice: %v", o)
	}
	resp, err := http.Get(base + "/invoices")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var seen []Seen
	if err := json.NewDecoder(resp.Body).Decode(&seen); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || seen[0].Raw != raw || seen[0].EventID != "inv-o1" || seen[0].Topic != topicInvoices {
		t.Fatalf("invoices = %+v", seen)
	}
}

// TestHandlerSeesDaprEnvelope checks the SDK's view of an event that an app
// published through ferry's Dapr endpoint (stored as the envelope).
func TestHandlerSeesDaprEnvelope(t *testing.T) {
	srv := httptest.NewServer(&sidecar{})
	defer srv.Close()
	a := newApp(config{DaprEndpoint: srv.URL, PubsubName: "pubsub"})
	base, subs := startApp(t, a)
	env, err := cloudevent.NewDaprEnvelope(cloudevent.Publish{Source: "orders", Topic: topicOrders, PubsubName: "pubsub",
		ContentType: "application/json", Data: []byte(`{"id":"o9","customer":"c","amount_cents":7}`),
		TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := env.Marshal()
	m := cloudevent.Message{ID: env.ID(), Topic: topicOrders, PubsubName: "pubsub", ContentType: cloudevent.ContentType, Body: stored, PublishedAt: time.Now()}
	orders := bySubscriptionTopic(t, subs)[topicOrders]
	if _, o := deliver(t, base, orders, m); o != daprsub.Retry {
		t.Fatalf("first: %v", o)
	}
	if _, o := deliver(t, base, orders, m); o != daprsub.Success {
		t.Fatalf("second: %v", o)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.shipped) != 1 || a.shipped[0].EventID != env.ID() || !strings.Contains(string(a.shipped[0].Data), `"o9"`) {
		t.Fatalf("shipped = %+v", a.shipped)
	}
}
