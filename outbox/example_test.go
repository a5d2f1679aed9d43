package outbox_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/ferry-sidecar/ferry/outbox"
)

func Example() {
	dir, err := os.MkdirTemp("", "outbox-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	l, err := outbox.Open(outbox.Options{Dir: dir, MaxBytes: 1 << 20})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()

	// Publish: each Append returns once its record is fsync'd.
	ctx := context.Background()
	for _, msg := range []string{"order created", "order paid"} {
		if err := l.Append(ctx, []byte(msg)); err != nil {
			log.Fatal(err) // errors.Is(err, outbox.ErrFull) ⇒ answer 503
		}
	}

	// Relay: read from the checkpoint, send, then commit what was sent.
	entries, err := l.Read(l.Checkpoint(), 100, 1<<20)
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range entries {
		fmt.Println(string(e.Data)) // XADD here
	}
	if err := l.Commit(entries[len(entries)-1].Next); err != nil {
		log.Fatal(err)
	}
	fmt.Println("pending:", l.Stats().PendingRecords)
	// Output:
	// order created
	// order paid
	// pending: 0
}
