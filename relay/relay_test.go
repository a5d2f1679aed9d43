package relay

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-sidecar/ferry/internal/redistest"
	"github.com/ferry-sidecar/ferry/metrics"
	"github.com/ferry-sidecar/ferry/outbox"
	"github.com/ferry-sidecar/ferry/stream"
)

type topicSet map[string]bool

func (s topicSet) Add(topic string) { s[topic] = true }

func appendEvent(t *testing.T, ob *outbox.Log, topic, id string) {
	t.Helper()
	rec := stream.AppendEvent(nil, &stream.Event{Topic: topic, Fields: []string{stream.FieldID, id}, Body: []byte("body " + id)})
	if err := ob.Append(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
}

// The relay moves records to their topic streams in order, commits the
// checkpoint so the outbox empties, and keeps records while Redis is down,
// sending them once it is back.
func TestRelayMovesRecordsInOrderAndSurvivesAnOutage(t *testing.T) {
	srv := redistest.StartServer(t)
	rdb := srv.Client(t)
	ob, err := outbox.Open(outbox.Options{Dir: t.TempDir(), MaxBytes: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ob.Close() })
	m := metrics.New(prometheus.NewRegistry(), "test", nil)
	topics := topicSet{}
	r := New(ob, rdb, m, topics, nil, nil, Wait{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	for i := range 50 {
		appendEvent(t, ob, "orders", "o-"+strconv.Itoa(i))
	}
	appendEvent(t, ob, "audit", "a-0")
	waitEmpty := func(what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for ob.Stats().PendingRecords != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d records still pending", what, ob.Stats().PendingRecords)
			}
			select {
			case <-r.Committed():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	waitEmpty("relay")
	msgs, err := rdb.XRange(context.Background(), stream.Key("orders"), "-", "+").Result()
	if err != nil || len(msgs) != 50 {
		t.Fatalf("orders stream: %d entries, %v", len(msgs), err)
	}
	for i, xm := range msgs {
		if got := stream.ParseMessage(xm.ID, xm.Values); got.ID != "o-"+strconv.Itoa(i) || got.Body != "body o-"+strconv.Itoa(i) {
			t.Fatalf("entry %d is %s %q: out of order or mangled", i, got.ID, got.Body)
		}
	}
	if !topics["orders"] || !topics["audit"] {
		t.Errorf("topics recorded: %v", topics)
	}

	srv.Stop(t)
	for i := range 5 {
		appendEvent(t, ob, "orders", "late-"+strconv.Itoa(i))
	}
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(m.RelayRecords.WithLabelValues("error")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no relay error counted while Redis was down")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ob.Stats().PendingRecords != 5 {
		t.Fatalf("%d pending while Redis is down, want 5 kept", ob.Stats().PendingRecords)
	}
	srv.Restart(t)
	waitEmpty("after the outage")
	// The test server keeps nothing across its restart: the stream holds the five.
	late, err := srv.Client(t).XRange(context.Background(), stream.Key("orders"), "-", "+").Result()
	if err != nil || len(late) != 5 {
		t.Fatalf("orders stream after the outage: %d entries, %v; want the 5 kept", len(late), err)
	}
	for i, xm := range late {
		if got := stream.ParseMessage(xm.ID, xm.Values).ID; got != "late-"+strconv.Itoa(i) {
			t.Fatalf("entry %d after the outage is %s", i, got)
		}
	}
	if ok := testutil.ToFloat64(m.RelayRecords.WithLabelValues("ok")); ok != 56 {
		t.Errorf("ferry_relay_records_total{result=ok} = %v, want 56", ok)
	}
}
