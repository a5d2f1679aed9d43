package cloudevent_test

import (
	"fmt"
	"time"

	"github.com/ferry-sidecar/ferry/internal/cloudevent"
)

func ExampleParseBatch() {
	_, err := cloudevent.ParseBatch([]byte(`[
		{"id":"1","source":"/orders","type":"order.created","specversion":"1.0"},
		{"id":"2","source":"/orders","specversion":"1.0"}
	]`))
	fmt.Println(err)
	// Output: event 1: attribute "type": required
}

func ExampleNewDaprEnvelope() {
	now := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	e, _ := cloudevent.NewDaprEnvelope(cloudevent.Publish{
		Source: "orders", Topic: "orders", PubsubName: "pubsub",
		ContentType: "application/json", Data: []byte(`{"id":"o1"}`),
		Metadata: map[string]string{"cloudevent.id": "evt-1", "ttlInSeconds": "60"},
	}, now)
	b, _ := e.Marshal()
	fmt.Println(string(b))
	// Output: {"data":{"id":"o1"},"datacontenttype":"application/json","expiration":"2026-11-29T10:01:00Z","id":"evt-1","pubsubname":"pubsub","source":"orders","specversion":"1.0","time":"2026-11-29T10:00:00Z","topic":"orders","type":"com.dapr.event.sent"}
}
