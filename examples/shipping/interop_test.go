package main

// Interoperability of ferry's internal/cloudevent with the CloudEvents Go SDK
// and of internal/daprsub with the Dapr Go SDK's raw /dapr/subscribe answer.
// They live in this module because the SDKs are too heavy for ferry's own
// go.mod.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/dapr/go-sdk/service/common"
	daprd "github.com/dapr/go-sdk/service/http"

	"github.com/ferry-sidecar/ferry/internal/cloudevent"
	"github.com/ferry-sidecar/ferry/internal/daprsub"
)

const traceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

// sdkReceive POSTs a structured event to an HTTP server that reads it with
// the SDK (cehttp.NewEventFromHTTPRequest), as an SDK receiver does.
func sdkReceive(t *testing.T, body []byte) *cloudevents.Event {
	t.Helper()
	got := make(chan *cloudevents.Event, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ev, err := cehttp.NewEventFromHTTPRequest(r)
		if err != nil {
			t.Errorf("SDK cannot read the event: %v\n%s", err, body)
			w.WriteHeader(http.StatusBadRequest)
			got <- nil
			return
		}
		got <- ev
	}))
	defer srv.Close()
	resp, err := http.Post(srv.URL, cloudevent.ContentType, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	ev := <-got
	if ev == nil {
		t.FailNow()
	}
	if err := ev.Validate(); err != nil {
		t.Fatalf("SDK says the event is invalid: %v", err)
	}
	return ev
}

func TestSDKReadsDaprEnvelopes(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name     string
		ct       string
		data     []byte
		wantData []byte
	}{
		{"json", "application/json", []byte(`{"id":"o1","amount_cents":12345678901234567}`), []byte(`{"amount_cents":12345678901234567,"id":"o1"}`)},
		{"text", "text/plain", []byte("hello"), []byte("hello")},
		{"binary", "application/octet-stream", []byte{0, 1, 2, 255}, []byte{0, 1, 2, 255}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := cloudevent.NewDaprEnvelope(cloudevent.Publish{Source: "orders", Topic: "orders", PubsubName: "pubsub",
				ContentType: tt.ct, Data: tt.data, TraceParent: traceParent, Metadata: map[string]string{"ttlInSeconds": "60"}}, now)
			if err != nil {
				t.Fatal(err)
			}
			body, err := e.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			ev := sdkReceive(t, body)
			if ev.ID() != e.ID() || ev.Source() != "orders" || ev.Type() != "com.dapr.event.sent" || ev.SpecVersion() != "1.0" || ev.DataContentType() != tt.ct {
				t.Errorf("attributes = %s", ev)
			}
			if !bytes.Equal(ev.Data(), tt.wantData) {
				t.Errorf("data = %q, want %q", ev.Data(), tt.wantData)
			}
			ext := ev.Extensions()
			if ext["topic"] != "orders" || ext["pubsubname"] != "pubsub" || ext["traceparent"] != traceParent || ext["expiration"] == nil {
				t.Errorf("extensions = %v", ext)
			}
			if ev.Time().IsZero() {
				t.Error("no time")
			}
		})
	}
}

func TestSDKReadsRawPayloadDelivery(t *testing.T) {
	raw := []byte(`{"not":"a cloudevent"}` + "\x00")
	e, err := cloudevent.ForDelivery(cloudevent.Message{ID: "m1", Topic: "invoices", PubsubName: "pubsub",
		ContentType: "application/json", Body: raw, Header: http.Header{"Traceparent": {traceParent}}}, true)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := e.Marshal()
	ev := sdkReceive(t, body)
	if ev.ID() != "m1" || ev.DataContentType() != "application/octet-stream" || !ev.DataBase64 || !bytes.Equal(ev.Data(), raw) {
		t.Fatalf("event = %s", ev)
	}
	if ev.Extensions()["topic"] != "invoices" {
		t.Errorf("extensions = %v", ev.Extensions())
	}
}

func sdkEvent(t *testing.T, id string) cloudevents.Event {
	t.Helper()
	ev := cloudevents.NewEvent()
	ev.SetID(id)
	ev.SetSource("/orders")
	ev.SetType("order.created")
	ev.SetTime(time.Date(2026, 11, 29, 10, 0, 0, 123000000, time.UTC))
	ev.SetSubject("o1")
	ev.SetExtension("tenant", "acme")
	if err := ev.SetData(cloudevents.ApplicationJSON, map[string]any{"id": "o1", "amount_cents": 1250}); err != nil {
		t.Fatal(err)
	}
	return ev
}

func TestFerryReadsSDKStructured(t *testing.T) {
	ctx := binding.WithForceStructured(context.Background())
	req, err := cehttp.NewHTTPRequestFromEvent(ctx, "http://127.0.0.1/", sdkEvent(t, "e1"))
	if err != nil {
		t.Fatal(err)
	}
	if !cloudevent.IsStructured(req.Header.Get("Content-Type")) {
		t.Fatalf("Content-Type = %q", req.Header.Get("Content-Type"))
	}
	body, _ := io.ReadAll(req.Body)
	e, err := cloudevent.Parse(body)
	if err != nil {
		t.Fatalf("Parse(%s): %v", body, err)
	}
	if e.ID() != "e1" || e.Source() != "/orders" || e.Type() != "order.created" || e["tenant"] != "acme" || e["subject"] != "o1" {
		t.Fatalf("event = %v", e)
	}

	// Binary mode: ferry's native API carries the Ce-* headers; a
	// Dapr-style subscriber gets them as one structured event.
	req, err = cehttp.NewHTTPRequestFromEvent(context.Background(), "http://127.0.0.1/", sdkEvent(t, "e2"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(req.Body)
	d, err := cloudevent.ForDelivery(cloudevent.Message{ID: "m2", Topic: "orders", PubsubName: "pubsub",
		ContentType: req.Header.Get("Content-Type"), Header: req.Header, Body: body}, false)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := d.Marshal()
	ev := sdkReceive(t, out)
	want := sdkEvent(t, "e2")
	if ev.ID() != "e2" || ev.Source() != want.Source() || ev.Type() != want.Type() || !ev.Time().Equal(want.Time()) ||
		ev.Subject() != "o1" || ev.Extensions()["tenant"] != "acme" || ev.Extensions()["topic"] != "orders" {
		t.Fatalf("event = %s", ev)
	}
	var gotData, wantData map[string]any
	_ = json.Unmarshal(ev.Data(), &gotData)
	_ = json.Unmarshal(want.Data(), &wantData)
	if gotData["id"] != wantData["id"] || gotData["amount_cents"] != wantData["amount_cents"] {
		t.Fatalf("data = %s, want %s", ev.Data(), want.Data())
	}
}

func TestFerryReadsSDKBatch(t *testing.T) {
	events := []cloudevents.Event{sdkEvent(t, "b1"), sdkEvent(t, "b2"), sdkEvent(t, "b3")}
	events[2].SetData("application/octet-stream", []byte{1, 2, 3})
	req, err := cehttp.NewHTTPRequestFromEvents(context.Background(), "http://127.0.0.1/", events)
	if err != nil {
		t.Fatal(err)
	}
	if !cloudevent.IsBatch(req.Header.Get("Content-Type")) {
		t.Fatalf("Content-Type = %q", req.Header.Get("Content-Type"))
	}
	body, _ := io.ReadAll(req.Body)
	got, err := cloudevent.ParseBatch(body)
	if err != nil {
		t.Fatalf("ParseBatch(%s): %v", body, err)
	}
	if len(got) != 3 || got[0].ID() != "b1" || got[2].ID() != "b3" {
		t.Fatalf("batch = %v", got)
	}
	if got[2]["data_base64"] != base64.StdEncoding.EncodeToString([]byte{1, 2, 3}) {
		t.Errorf("binary data = %v", got[2])
	}
	// What ferry validates, the SDK reads back, one by one.
	for _, e := range got {
		b, _ := e.Marshal()
		if ev := sdkReceive(t, b); ev.ID() != e.ID() {
			t.Errorf("round trip: %s", ev)
		}
	}
}

// TestDaprSDKSubscribeAnswer reads what a bare Dapr SDK HTTP service serves
// on /dapr/subscribe (no middleware): route-only, rules with priorities,
// metadata.
func TestDaprSDKSubscribeAnswer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	svc := daprd.NewService(addr)
	noop := func(context.Context, *common.TopicEvent) (bool, error) { return false, nil }
	for _, s := range []*common.Subscription{
		{PubsubName: "pubsub", Topic: "a", Route: "/a"},
		{PubsubName: "pubsub", Topic: "b", Route: "/b/default"},
		{PubsubName: "pubsub", Topic: "b", Route: "/b/second", Match: `event.type == "second"`, Priority: 2},
		{PubsubName: "pubsub", Topic: "b", Route: "/b/first", Match: `event.type == "first"`, Priority: 1},
		{PubsubName: "pubsub", Topic: "c", Route: "/c", Metadata: map[string]string{"rawPayload": "true"}, DisableTopicValidation: true},
	} {
		if err := svc.AddTopicEventHandler(s, noop); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- svc.Start() }()
	defer func() {
		_ = svc.GracefulStop()
		<-done
	}()
	subs, err := daprsub.Fetch(context.Background(), daprsub.FetchConfig{AppURL: "http://" + addr, Wait: 30 * time.Second,
		MinBackoff: 10 * time.Millisecond, Parse: daprsub.ParseOptions{PubsubName: "pubsub"}})
	if err != nil {
		t.Fatal(err)
	}
	m := bySubscriptionTopic(t, subs)
	if len(subs) != 3 || m["a"].Rules[0].Path != "/a" || !m["c"].RawPayload {
		t.Fatalf("subscriptions = %+v", subs)
	}
	b := m["b"]
	if len(b.Rules) != 3 || b.Rules[0].Path != "/b/first" || b.Rules[1].Path != "/b/second" || b.Rules[2].Path != "/b/default" || b.Rules[2].Match != "" {
		t.Fatalf("b rules = %+v", b.Rules)
	}
	for typ, want := range map[string]string{"first": "/b/first", "second": "/b/second", "other": "/b/default"} {
		if p, err := b.Route(cloudevent.Event{"type": typ}); p != want || err != nil {
			t.Errorf("route %s = %q, %v; want %s", typ, p, err, want)
		}
	}
}
