package daprpub_test

import (
	"fmt"

	"github.com/ferry-sidecar/ferry/internal/daprpub"
)

func ExampleParseBulk() {
	_, err := daprpub.ParseBulk([]byte(`[
		{"entryId":"a","event":{"id":"o1"},"contentType":"application/json"},
		{"entryId":"a","event":"hello","contentType":"text/plain"}
	]`), "orders", "pubsub", nil)
	fmt.Println(err.Status, string(err.Body()))
	// Output: 400 {"errorCode":"ERR_PUBSUB_EVENTS_SER","message":"error marshaling events to bytes for topic orders pubsub pubsub. error: entry 1 (entryId \"a\"): entryId is duplicated or not present for entry"}
}
