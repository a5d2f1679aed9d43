package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestReceiveOrderAnswers2xxOnlyAfterPublish checks the contract billing has
// with ferry: a failed invoice publish answers 503 (so ferry redelivers the
// order), and the redelivery re-publishes under the same Idempotency-Key.
func TestReceiveOrderAnswers2xxOnlyAfterPublish(t *testing.T) {
	var mu sync.Mutex
	var keys, types []string
	answers := []int{http.StatusServiceUnavailable, http.StatusAccepted}
	ferry := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path != "/v1/publish/invoices" || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("publish to %s with Content-Type %q", r.URL.Path, r.Header.Get("Content-Type"))
		}
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		types = append(types, r.Header.Get("Ce-Type"))
		code := answers[0]
		if len(answers) > 1 {
			answers = answers[1:]
		}
		w.WriteHeader(code)
	}))
	defer ferry.Close()
	a := &app{ferryURL: ferry.URL, client: &http.Client{Timeout: 5 * time.Second}}
	h := a.routes()

	deliver := func(attempt string) int {
		req := httptest.NewRequest("POST", "/events/orders", strings.NewReader(`{"id":"ord-7","customer":"cust-2","amount_cents":900}`))
		req.Header.Set("Ferry-Message-Id", "ord-7")
		req.Header.Set("Ferry-Attempt", attempt)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	if code := deliver("1"); code != http.StatusServiceUnavailable {
		t.Fatalf("first delivery (publish answered 503) got %d, want 503", code)
	}
	if len(a.handled) != 0 {
		t.Fatalf("order recorded as handled after a failed publish: %v", a.handled)
	}
	if code := deliver("2"); code != http.StatusNoContent {
		t.Fatalf("second delivery (publish answered 202) got %d, want 204", code)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(keys) != 2 || keys[0] != "inv-ord-7" || keys[1] != "inv-ord-7" {
		t.Errorf("Idempotency-Keys = %q, want inv-ord-7 twice", keys)
	}
	if types[1] != "invoice.issued" {
		t.Errorf("Ce-Type = %q, want invoice.issued", types[1])
	}
	if len(a.handled) != 1 || a.handled[0].InvoiceID != "inv-ord-7" || a.handled[0].Attempt != "2" {
		t.Errorf("handled = %+v, want one entry for inv-ord-7 at attempt 2", a.handled)
	}
}

func TestReceiveOrderRejectsMalformedWith4xx(t *testing.T) {
	a := &app{ferryURL: "http://127.0.0.1:1", client: &http.Client{Timeout: time.Second}}
	rec := httptest.NewRecorder()
	a.routes().ServeHTTP(rec, httptest.NewRequest("POST", "/events/orders", strings.NewReader(`not json`)))
	if rec.Code < 400 || rec.Code >= 500 || rec.Code == 408 || rec.Code == 429 {
		t.Fatalf("malformed order got %d, want a 4xx that ferry dead-letters", rec.Code)
	}
}
