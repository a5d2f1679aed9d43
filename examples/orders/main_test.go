package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestCreateOrderPublishes checks the headers the orders app sends its
// sidecar and that it passes the sidecar's answer through.
func TestCreateOrderPublishes(t *testing.T) {
	var got http.Header
	var body string
	ferry := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/publish/orders" {
			t.Errorf("published to %s, want /v1/publish/orders", r.URL.Path)
		}
		got = r.Header.Clone()
		b, _ := io.ReadAll(r.Body)
		body = string(b)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"id":"ord-9","topic":"orders"}`)
	}))
	defer ferry.Close()
	a := &app{ferryURL: ferry.URL, client: &http.Client{Timeout: 5 * time.Second}}
	rec := httptest.NewRecorder()
	a.routes().ServeHTTP(rec, httptest.NewRequest("POST", "/orders", strings.NewReader(`{"id":"ord-9","customer":"cust-3","amount_cents":500}`)))
	if rec.Code != http.StatusAccepted {
		t.Fatalf("POST /orders got %d %s, want 202", rec.Code, rec.Body)
	}
	want := map[string]string{
		"Content-Type": "application/json", "Ce-Type": "order.created", "Ce-Source": "orders",
		"Idempotency-Key": "ord-9", "Ordering-Key": "cust-3",
	}
	for k, v := range want {
		if got.Get(k) != v {
			t.Errorf("%s = %q, want %q", k, got.Get(k), v)
		}
	}
	if body != `{"id":"ord-9","customer":"cust-3","amount_cents":500}` {
		t.Errorf("published body %s", body)
	}
}

func TestReceiveInvoiceRecordsDelivery(t *testing.T) {
	a := &app{}
	req := httptest.NewRequest("POST", "/events/invoices", strings.NewReader(`{"id":"inv-ord-9"}`))
	req.Header.Set("Ferry-Message-Id", "inv-ord-9")
	req.Header.Set("Ferry-Attempt", "3")
	rec := httptest.NewRecorder()
	a.routes().ServeHTTP(rec, req)
	if rec.Code != http.StatusNoContent {
		t.Fatalf("delivery got %d, want 204", rec.Code)
	}
	if len(a.invoices) != 1 || a.invoices[0].MessageID != "inv-ord-9" || a.invoices[0].Attempt != "3" {
		t.Fatalf("invoices = %+v", a.invoices)
	}
}
