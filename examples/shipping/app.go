package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/dapr/go-sdk/service/common"
	daprd "github.com/dapr/go-sdk/service/http"
	"github.com/go-chi/chi/v5"
)

// Topics and routes of the app: its /dapr/subscribe answer.
const (
	topicOrders     = "orders"
	topicOrdersDead = "orders-dead"
	topicInvoices   = "invoices"
	topicShipments  = "shipments"

	routeOrders      = "/orders"
	routeLargeOrders = "/orders/large"
	routeDeadOrders  = "/orders/dead"
	routeInvoices    = "/invoices"

	// largeOrderRule is a Dapr routing rule (CEL over the CloudEvent).
	largeOrderRule = "event.data.amount_cents >= 100000"
)

// Order is what the orders app publishes.
type Order struct {
	ID          string `json:"id"`
	Customer    string `json:"customer"`
	AmountCents int64  `json:"amount_cents"`
}

// Shipment is what this app publishes on topic shipments.
type Shipment struct {
	ID      string `json:"id"`
	OrderID string `json:"order_id"`
	Large   bool   `json:"large"`
}

// Seen is one event a handler took, as listed by GET /shipments,
// /deadletters and /invoices.
type Seen struct {
	EventID string          `json:"event_id"`
	Topic   string          `json:"topic"`
	Route   string          `json:"route"`
	Data    json.RawMessage `json:"data,omitempty"`
	Raw     string          `json:"raw,omitempty"`
}

type config struct {
	// DaprEndpoint is the sidecar's HTTP API base URL (Dapr or ferry).
	DaprEndpoint string
	PubsubName   string
	Client       *http.Client
	Log          *log.Logger
}

type app struct {
	cfg config

	mu        sync.Mutex
	attempts  map[string]int // order id → deliveries seen
	shipped   []Seen
	dead      []Seen
	invoices  []Seen
	published []Shipment
}

func newApp(cfg config) *app {
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 5 * time.Second}
	}
	if cfg.Log == nil {
		cfg.Log = log.New(io.Discard, "", 0)
	}
	return &app{cfg: cfg, attempts: map[string]int{}}
}

// service builds the Dapr SDK HTTP service with the app's subscriptions and
// its read endpoints. Start it to serve.
func (a *app) service(addr string) (common.Service, error) {
	mux := chi.NewRouter()
	// The Dapr Go SDK v1.11.0 has no DeadLetterTopic in common.Subscription
	// (it came in v1.13.0); until then the field is added to the SDK's own
	// /dapr/subscribe answer, which is what Dapr (and ferry) read.
	mux.Use(withDeadLetterTopics(map[string]string{topicOrders: topicOrdersDead}))
	svc := daprd.NewServiceWithMux(addr, mux)

	subs := []struct {
		sub *common.Subscription
		fn  common.TopicEventHandler
	}{
		{&common.Subscription{PubsubName: a.cfg.PubsubName, Topic: topicOrders, Route: routeLargeOrders, Match: largeOrderRule, Priority: 1}, a.handleOrder(true)},
		{&common.Subscription{PubsubName: a.cfg.PubsubName, Topic: topicOrders, Route: routeOrders}, a.handleOrder(false)},
		{&common.Subscription{PubsubName: a.cfg.PubsubName, Topic: topicOrdersDead, Route: routeDeadOrders}, a.handleDead},
		{&common.Subscription{PubsubName: a.cfg.PubsubName, Topic: topicInvoices, Route: routeInvoices, Metadata: map[string]string{"rawPayload": "true"}}, a.handleInvoice},
	}
	for _, s := range subs {
		if err := svc.AddTopicEventHandler(s.sub, s.fn); err != nil {
			return nil, fmt.Errorf("add handler %s: %w", s.sub.Route, err)
		}
	}
	mux.Get("/shipments", a.list(func() []Seen { return a.shipped }))
	mux.Get("/deadletters", a.list(func() []Seen { return a.dead }))
	mux.Get("/invoices", a.list(func() []Seen { return a.invoices }))
	return svc, nil
}

// handleOrder ships an order: the first delivery of each order asks for a
// retry (the warehouse is busy), an order without id or amount is refused
// for good (DROP: Dapr drops it, ferry dead-letters it and publishes it to
// orders-dead), and a failed publish of the shipment asks for a retry.
func (a *app) handleOrder(large bool) common.TopicEventHandler {
	route := routeOrders
	if large {
		route = routeLargeOrders
	}
	return func(ctx context.Context, e *common.TopicEvent) (retry bool, err error) {
		var o Order
		if err := json.Unmarshal(e.RawData, &o); err != nil || o.ID == "" || o.AmountCents <= 0 {
			a.cfg.Log.Printf("order event %s refused: not a valid order", e.ID)
			return false, errors.New("not a valid order")
		}
		a.mu.Lock()
		a.attempts[o.ID]++
		n := a.attempts[o.ID]
		a.mu.Unlock()
		if n == 1 {
			a.cfg.Log.Printf("order %s: warehouse busy, asking for a retry", o.ID)
			return true, errors.New("warehouse busy")
		}
		s := Shipment{ID: "shp-" + o.ID, OrderID: o.ID, Large: large}
		if err := a.publish(ctx, topicShipments, s.ID, s); err != nil {
			a.cfg.Log.Printf("order %s: publish shipment: %v", o.ID, err)
			return true, err
		}
		a.mu.Lock()
		a.shipped = append(a.shipped, Seen{EventID: e.ID, Topic: e.Topic, Route: route, Data: e.RawData})
		a.published = append(a.published, s)
		a.mu.Unlock()
		a.cfg.Log.Printf("order %s shipped as %s (event %s, delivery %d, route %s)", o.ID, s.ID, e.ID, n, route)
		return false, nil
	}
}

func (a *app) handleDead(_ context.Context, e *common.TopicEvent) (bool, error) {
	a.mu.Lock()
	a.dead = append(a.dead, Seen{EventID: e.ID, Topic: e.Topic, Route: routeDeadOrders, Data: e.RawData})
	a.mu.Unlock()
	a.cfg.Log.Printf("dead order event %s recorded", e.ID)
	return false, nil
}

// handleInvoice reads the invoice raw: with rawPayload the SDK hands over
// the publisher's bytes in RawData.
func (a *app) handleInvoice(_ context.Context, e *common.TopicEvent) (bool, error) {
	a.mu.Lock()
	a.invoices = append(a.invoices, Seen{EventID: e.ID, Topic: e.Topic, Route: routeInvoices, Raw: string(e.RawData)})
	a.mu.Unlock()
	a.cfg.Log.Printf("invoice event %s: %d raw bytes", e.ID, len(e.RawData))
	return false, nil
}

// publish is Dapr's HTTP publish, as Dapr's docs show it with curl:
// POST {sidecar}/v1.0/publish/{pubsub}/{topic}, 204 when accepted. The
// CloudEvent id is set from the shipment id (metadata.cloudevent.id), so a
// re-publish after a retry carries the same id.
func (a *app) publish(ctx context.Context, topic, id string, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	u := fmt.Sprintf("%s/v1.0/publish/%s/%s?metadata.cloudevent.id=%s",
		a.cfg.DaprEndpoint, url.PathEscape(a.cfg.PubsubName), url.PathEscape(topic), url.QueryEscape(id))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.cfg.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("publish %s: status %d: %s", topic, resp.StatusCode, msg)
	}
	return nil
}

func (a *app) list(get func() []Seen) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		a.mu.Lock()
		items := append([]Seen{}, get()...)
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(items)
	}
}

// withDeadLetterTopics adds deadLetterTopic to the SDK's /dapr/subscribe
// answer for the given topics.
func withDeadLetterTopics(dead map[string]string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet || r.URL.Path != "/dapr/subscribe" {
				next.ServeHTTP(w, r)
				return
			}
			rec := &recorder{header: http.Header{}, status: http.StatusOK}
			next.ServeHTTP(rec, r)
			var subs []map[string]any
			if rec.status != http.StatusOK || json.Unmarshal(rec.body.Bytes(), &subs) != nil {
				http.Error(w, "subscriptions unavailable", http.StatusInternalServerError)
				return
			}
			for _, s := range subs {
				if t, ok := s["topic"].(string); ok && dead[t] != "" {
					s["deadLetterTopic"] = dead[t]
				}
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(subs)
		})
	}
}

// recorder keeps what a handler writes.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *recorder) WriteHeader(s int)           { r.status = s }
