package tracing_test

import (
	"context"
	"fmt"
	"net/http"

	"github.com/ferry-sidecar/ferry/tracing"
)

// The calls a subscriber makes for one message. With no OTEL_* endpoint the
// tracer is off: nothing is recorded and the app gets the publisher's
// traceparent as carried.
func Example() {
	tr, err := tracing.New(context.Background(), tracing.Settings{ServiceName: "billing"})
	if err != nil {
		panic(err) // ferry: exit 2, the error names the variable
	}
	defer tr.Shutdown(context.Background())

	carried := http.Header{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}
	p := tr.StartProcess(tracing.Message{Topic: "orders", Group: "billing", ID: "m1", Traceparent: "", Header: carried})
	a := p.StartAttempt("/orders", 1)
	req := carried.Clone()
	a.Inject(req) // with tracing on: the attempt span's traceparent
	a.End(http.StatusOK, "success")
	p.End(tracing.Outcome{Attempt: 1, Result: "success"})

	fmt.Println(tr.Enabled())
	fmt.Println(req.Get("Traceparent"))
	// Output:
	// false
	// 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
}
