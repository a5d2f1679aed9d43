package daprsub_test

import (
	"fmt"

	"github.com/ferry-sidecar/ferry/internal/cloudevent"
	"github.com/ferry-sidecar/ferry/internal/daprsub"
)

func ExampleSubscription_Route() {
	subs, err := daprsub.Parse([]byte(`[{"pubsubname":"pubsub","topic":"orders",
		"routes":{"rules":[{"match":"event.data.amount_cents >= 100000","path":"/orders/large"}]},
		"deadLetterTopic":"orders-dead"}]`), daprsub.ParseOptions{PubsubName: "pubsub"})
	if err != nil {
		fmt.Println(err)
		return
	}
	large, _ := cloudevent.Decode([]byte(`{"data":{"amount_cents":250000}}`))
	small, _ := cloudevent.Decode([]byte(`{"data":{"amount_cents":1250}}`))
	fmt.Println(subs[0].Route(large))
	fmt.Println(subs[0].Route(small))
	// Output:
	// /orders/large <nil>
	//  no routing rule matches the event
}

func ExampleClassify() {
	for _, a := range []struct {
		status int
		body   string
	}{{200, ""}, {200, `{"status":"RETRY"}`}, {200, `{"status":"DROP"}`}, {404, ""}, {400, ""}} {
		o, _ := daprsub.Classify(a.status, []byte(a.body))
		fmt.Println(a.status, a.body, o)
	}
	// Output:
	// 200  success
	// 200 {"status":"RETRY"} retry
	// 200 {"status":"DROP"} drop
	// 404  drop
	// 400  retry
}
