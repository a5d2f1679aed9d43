// Command orders is a sample app for the ferry quickstart. It knows only
// HTTP: it publishes "order.created" events with a POST to its ferry sidecar
// and receives "invoice.issued" events as POSTs from it.
//
// Configuration (environment):
//
//	PORT       port to listen on, on 127.0.0.1 (default 8080; ferry's FERRY_APP_URL points here)
//	FERRY_URL  the sidecar's publish API (default http://127.0.0.1:7400)
//
// Endpoints:
//
//	POST /orders           create an order: {"id":"ord-1","customer":"cust-1","amount_cents":1250};
//	                       publishes it; posting the same id again re-publishes with the same
//	                       Idempotency-Key, and subscribers see it once
//	POST /events/invoices  where ferry delivers invoices (subscription invoices=/events/invoices)
//	GET  /invoices         the invoices received so far, as JSON
//	GET  /healthz          200 while running
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

// Received is one event delivery as this app saw it.
type Received struct {
	MessageID string          `json:"message_id"`
	Attempt   string          `json:"attempt"`
	Body      json.RawMessage `json:"body"`
}

type app struct {
	ferryURL string
	client   *http.Client

	mu       sync.Mutex
	invoices []Received
}

func main() {
	port := envOr("PORT", "8080")
	a := &app{
		ferryURL: strings.TrimRight(envOr("FERRY_URL", "http://127.0.0.1:7400"), "/"),
		client:   &http.Client{Timeout: 10 * time.Second},
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
	mux.HandleFunc("POST /orders", a.createOrder)
	mux.HandleFunc("POST /events/invoices", a.receiveInvoice)
	mux.HandleFunc("GET /invoices", a.listInvoices)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	return mux
}

// createOrder publishes the order to the sidecar and answers with the
// sidecar's answer: 202 means ferry has it on disk and will deliver it.
func (a *app) createOrder(w http.ResponseWriter, r *http.Request) {
	var o Order
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&o); err != nil || o.ID == "" || o.Customer == "" {
		http.Error(w, "want {\"id\",\"customer\",\"amount_cents\"}", http.StatusBadRequest)
		return
	}
	body, _ := json.Marshal(o)
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, a.ferryURL+"/v1/publish/orders", bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Ce-Specversion", "1.0")
	req.Header.Set("Ce-Type", "order.created")
	req.Header.Set("Ce-Source", "orders")
	req.Header.Set("Ce-Id", o.ID)
	// The order id is the idempotency key: publishing the same order twice
	// (a retry after a timeout, say) reaches subscribers once.
	req.Header.Set("Idempotency-Key", o.ID)
	// One customer's orders arrive in the order they were placed.
	req.Header.Set("Ordering-Key", o.Customer)
	resp, err := a.client.Do(req)
	if err != nil {
		http.Error(w, fmt.Sprintf("publish order: %v", err), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	log.Printf("published order %s (customer %s): ferry answered %d %s", o.ID, o.Customer, resp.StatusCode, bytes.TrimSpace(answer))
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(answer)
}

func (a *app) receiveInvoice(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	rec := Received{MessageID: r.Header.Get("Ferry-Message-Id"), Attempt: r.Header.Get("Ferry-Attempt"), Body: json.RawMessage(body)}
	if !json.Valid(body) {
		http.Error(w, "body is not JSON", http.StatusBadRequest) // 4xx: ferry dead-letters it
		return
	}
	a.mu.Lock()
	a.invoices = append(a.invoices, rec)
	a.mu.Unlock()
	log.Printf("received invoice msg=%s attempt=%s body=%s", rec.MessageID, rec.Attempt, body)
	w.WriteHeader(http.StatusNoContent)
}

func (a *app) listInvoices(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	out := struct {
		Invoices []Received `json:"invoices"`
	}{Invoices: append([]Received{}, a.invoices...)}
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
