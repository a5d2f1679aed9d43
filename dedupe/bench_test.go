package dedupe_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/ferry-sidecar/ferry/dedupe"
	"github.com/ferry-sidecar/ferry/internal/redistest"
)

// BenchmarkClaimComplete is the dedupe cost of one delivered message: a Claim
// and a Complete, two round trips to a local redis-server.
func BenchmarkClaimComplete(b *testing.B) {
	ctx := context.Background()
	rdb := redistest.Start(b)
	s := dedupe.New(rdb, dedupe.Options{Owner: "pod-a"})
	b.Run("serial", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			key := dedupe.Key("t", "serial", strconv.Itoa(i))
			if st, err := s.Claim(ctx, key); err != nil || st != dedupe.Claimed {
				b.Fatalf("Claim = %v, %v", st, err)
			}
			if err := s.Complete(ctx, key); err != nil {
				b.Fatal(err)
			}
		}
	})
	var n atomic.Int64 // outside: the parallel body may run more than once
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				key := dedupe.Key("t", "parallel", strconv.FormatInt(n.Add(1), 10))
				if st, err := s.Claim(ctx, key); err != nil || st != dedupe.Claimed {
					b.Errorf("Claim = %v, %v", st, err)
					return
				}
				if err := s.Complete(ctx, key); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	// The sidecar completes a whole read at once.
	b.Run("batch-of-100", func(b *testing.B) {
		keys := make([]string, 100)
		for i := 0; b.Loop(); i++ {
			for j := range keys {
				keys[j] = dedupe.Key("t", "batch", strconv.Itoa(i*len(keys)+j))
				if st, err := s.Claim(ctx, keys[j]); err != nil || st != dedupe.Claimed {
					b.Fatalf("Claim = %v, %v", st, err)
				}
			}
			if err := s.Complete(ctx, keys...); err != nil {
				b.Fatal(err)
			}
		}
	})
}
