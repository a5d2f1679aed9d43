// Command billing is a sample app for the ferry quickstart. It receives
// "order.created" events from its ferry sidecar and, for each order,
// publishes an "invoice.issued" event on topic invoices through the same
// sidecar. It knows only HTTP.
//
// It answers a delivery with 2xx only after its own publish got 202: if the
// publish fails it answers 503 and ferry delivers the order again later. The
// invoice's Idempotency-Key is derived from the order id, so a retried order
// re-publishes the same invoice id and subscribers see the invoice once.
//
// Configuration (environment):
//
//	PORT       port to listen on, on 127.0.0.1 (default 8080; ferry's FERRY_APP_URL points here)
//	FERRY_URL  the sidecar's publish API (default http://127.0.0.1:7400)
//
// Endpoints:
//
//	POST /events/orders  where ferry delivers orders (subscription orders=/events/orders)
//	GET  /orders         the orders handled so far, as JSON
//	GET  /healthz        200 while running
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
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Order is the body of an "order.created" event.
type Order struct {
	ID          string `json:"id"`
	Customer    string `json:"customer"`
	AmountCents int64  `json:"amount_cents"`
}

// Invoice is the body of an "invoice.issued" event.
type Invoice struct {
	ID          string `json:"id"`
	OrderID     string `json:"order_id"`
	Customer    string `json:"customer"`
	AmountCents int64  `json:"amount_cents"`
}

// Handled is one order delivery that this app answered with 2xx.
type Handled struct {
	MessageID string `json:"message_id"`
	Attempt   string `json:"attempt"`
	OrderID   string `json:"order_id"`
	InvoiceID string `json:"invoice_id"`
}

type app struct {
	ferryURL string
	client   *http.Client

	mu      sync.Mutex
	handled []Handled
}

func main() {
	port := envOr("PORT", "8080")
	a := &app{
		ferryURL: strings.TrimRight(envOr("FERRY_URL", "http://127.0.0.1:7400"), "/"),
		// Below ferry's FERRY_DELIVERY_TIMEOUT (10s by default), so billing
		// answers 503 itself rather than letting the delivery time out.
		client: &http.Client{Timeout: 5 * time.Second},
	}
	srv := &http.Server{Addr: "127.0.0.1:" + port, Handler: a.routes(), ReadHeaderTimeout: 5 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	log.SetFlags(0)
	log.Printf("listening on %s, publishing to %s", srv.Addr, a.ferryURL)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("serve: %v", err)
	}
}

func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /events/orders", a.receiveOrder)
	mux.HandleFunc("GET /orders", a.listOrders)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	return mux
}

func (a *app) receiveOrder(w http.ResponseWriter, r *http.Request) {
	msgID, attempt := r.Header.Get("Ferry-Message-Id"), r.Header.Get("Ferry-Attempt")
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	log.Printf("received order msg=%s attempt=%s body=%s", msgID, attempt, body)
	var o Order
	if err := json.Unmarshal(body, &o); err != nil || o.ID == "" || o.Customer == "" {
		// Retrying cannot fix a malformed order: a 4xx makes ferry dead-letter it.
		http.Error(w, "malformed order", http.StatusUnprocessableEntity)
		return
	}
	inv := Invoice{ID: "inv-" + o.ID, OrderID: o.ID, Customer: o.Customer, AmountCents: o.AmountCents}
	if err := a.publishInvoice(r.Context(), inv); err != nil {
		log.Printf("order %s not handled, ferry will retry it: %v", o.ID, err)
		w.Header().Set("Retry-After", "1")
		http.Error(w, "publish invoice failed", http.StatusServiceUnavailable)
		return
	}
	a.mu.Lock()
	a.handled = append(a.handled, Handled{MessageID: msgID, Attempt: attempt, OrderID: o.ID, InvoiceID: inv.ID})
	a.mu.Unlock()
	log.Printf("issued invoice %s for order %s", inv.ID, o.ID)
	w.WriteHeader(http.StatusNoContent)
}

// publishInvoice returns nil only when the sidecar answered 202: the invoice
// is then durable in ferry's outbox.
func (a *app) publishInvoice(ctx context.Context, inv Invoice) error {
	body, _ := json.Marshal(inv)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.ferryURL+"/v1/publish/invoices", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Ce-Specversion", "1.0")
	req.Header.Set("Ce-Type", "invoice.issued")
	req.Header.Set("Ce-Source", "billing")
	req.Header.Set("Ce-Id", inv.ID)
	// Derived from the order id: a redelivered order re-publishes the same
	// key, and the invoice reaches subscribers once.
	req.Header.Set("Idempotency-Key", inv.ID)
	req.Header.Set("Ordering-Key", inv.Customer)
	resp, err := a.client.Do(req)
	if err != nil {
		return fmt.Errorf("publish invoice: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("publish invoice: ferry answered %s", resp.Status)
	}
	return nil
}

func (a *app) listOrders(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	out := struct {
		Orders []Handled `json:"orders"`
	}{Orders: append([]Handled{}, a.handled...)}
	a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
