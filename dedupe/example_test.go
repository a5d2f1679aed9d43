package dedupe_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/dedupe"
)

// The delivery of one message, as a consumer does it. It needs a Redis on
// localhost:6379, so it is compiled but not run by go test.
func Example() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
	defer rdb.Close()

	if policy, ok, err := dedupe.CheckEvictionPolicy(ctx, rdb); err != nil {
		log.Printf("cannot read maxmemory-policy: %v", err) // log and carry on
	} else if !ok {
		log.Printf("maxmemory-policy %s may evict dedupe keys", policy)
	}

	opts := dedupe.Options{TTL: 24 * time.Hour, Lease: 30 * time.Second, Owner: "billing-7d9f8-x2x4k"}
	if err := opts.Validate(); err != nil {
		log.Fatal(err)
	}
	store := dedupe.New(rdb, opts)

	key := dedupe.Key("orders.created", "billing", "0190f3a2-7c1e-7b4a-9c1d-2f3e4a5b6c7d")
	st, err := store.Claim(ctx, key)
	switch {
	case err != nil || st == dedupe.Busy:
		fmt.Println("leave pending, retry later")
	case st == dedupe.Done:
		fmt.Println("ack without delivering")
	default: // dedupe.Claimed
		if deliver() == nil {
			fmt.Println("ack")
			if err := store.Complete(ctx, key); err != nil {
				log.Printf("complete: %v", err) // redelivered after the lease
			}
		} else if err := store.Release(ctx, key); err != nil {
			log.Printf("release: %v", err) // the lease frees it later
		}
	}
}

func deliver() error { return nil }
