package main

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-sidecar/ferry/retry"
)

// scheduleAt is when event i of a paced load at rate per second starting
// at start is due: evenly spaced, never drifting (it is computed from i,
// not from the previous send).
func scheduleAt(start time.Time, rate float64, i int64) time.Time {
	return start.Add(time.Duration(float64(i) * float64(time.Second) / rate))
}

// pacedCount is how many events a paced load at rate sends in d.
func pacedCount(rate float64, d time.Duration) int64 {
	return int64(rate * d.Seconds())
}

// pacedResult is what a paced load did.
type pacedResult struct {
	Sent int64
	Lat  []time.Duration // send → 202, per event sent
	Late []time.Duration // actual send − scheduled time, per event sent
}

// pacedLoop sends events 0..n-1 at rate per second, each at its scheduled
// time, from workers goroutines (so that a slow answer does not hold back
// the next send while workers are free). send gets the event's sequence
// number; its latency is measured from just before it to its return. The
// first error stops the load.
func pacedLoop(ctx context.Context, rate float64, n int64, workers int, send func(ctx context.Context, seq int64) error) (pacedResult, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	start := time.Now().Add(10 * time.Millisecond)
	var next atomic.Int64
	lat := make([]time.Duration, n)
	late := make([]time.Duration, n)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= n {
					return
				}
				at := scheduleAt(start, rate, i)
				if d := time.Until(at); d > 0 && !retry.Sleep(ctx, d) {
					return
				}
				t0 := time.Now()
				if err := send(ctx, i); err != nil {
					cancel(err)
					return
				}
				lat[i], late[i] = time.Since(t0), t0.Sub(at)
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return pacedResult{}, err
	}
	return pacedResult{Sent: n, Lat: lat, Late: late}, nil
}

// percentile is the q-quantile (0 ≤ q ≤ 1) of d by the nearest rank; 0 for
// none.
func percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return sortedPercentile(s, q)
}

// sortedPercentile is percentile of an already sorted slice.
func sortedPercentile(s []time.Duration, q float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	i := int(q*float64(len(s)-1) + 0.5)
	return s[min(max(i, 0), len(s)-1)]
}
