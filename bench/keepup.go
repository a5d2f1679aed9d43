package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// lagSample is the backlog at one moment of the keep-up phase.
type lagSample struct {
	At       time.Duration // since the publishers started
	GroupLag int64         // XINFO GROUPS lag + pending of the delivering group
	Backlog  int64         // accepted by the publishing side − delivered at the sink
}

// keepUpResult is the keep-up phase: full-rate publishing with delivery
// running, then the drain.
type keepUpResult struct {
	Duration    time.Duration // publishing time
	Published   int64         // 202s
	PublishRate float64
	DeliverRate float64 // delivered while publishing, per second
	MaxGroupLag int64
	MaxBacklog  int64
	AtStop      lagSample
	Drain       time.Duration // from the stop until both figures are 0; -1: not within the bound
	Samples     []lagSample
	Dups        int
}

// summarizeLag fills the figures of r from its samples; stop is when the
// publishers stopped.
func summarizeLag(r *keepUpResult, stop time.Duration) {
	r.Drain = -1
	for _, s := range r.Samples {
		r.MaxGroupLag = max(r.MaxGroupLag, s.GroupLag)
		r.MaxBacklog = max(r.MaxBacklog, s.Backlog)
		if s.At <= stop {
			r.AtStop = s
		}
		if s.At >= stop && s.GroupLag == 0 && s.Backlog == 0 && r.Drain < 0 {
			r.Drain = s.At - stop
		}
	}
}

// keepUp publishes through p with Clients closed-loop clients (its full
// publish rate) for KeepUp, sampling the backlog every 100 ms, then waits
// for it to drain (at most two minutes).
func keepUp(ctx context.Context, e *env, ps *pairs, p *pair) (keepUpResult, error) {
	capacity := int64(max(1, e.o.KeepUp.Seconds()) * 100_000) // beyond any rate of this machine
	sk := ps.newSink(capacity, 0, false)
	rdb := redis.NewClient(&redis.Options{Addr: e.redisAddr, PoolSize: 1})
	defer rdb.Close()
	client := newClient(e.o.Clients)
	defer client.CloseIdleConnections()

	var accepted, next atomic.Int64
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	start := time.Now()
	until := start.Add(e.o.KeepUp)
	var wg sync.WaitGroup
	for range e.o.Clients {
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(until) {
				seq := next.Add(1) - 1
				if seq >= capacity {
					return
				}
				if err := post(ctx, client, p.url, eventBody(e.o.BodySize, ps.clock.since(), seq, sk.phase), http.StatusAccepted); err != nil {
					cancel(fmt.Errorf("publish event %d: %w", seq, err))
					return
				}
				accepted.Add(1)
			}
		})
	}
	var r keepUpResult
	sample := func() error {
		lag, err := groupLag(ctx, rdb, p.stream, p.group)
		r.Samples = append(r.Samples, lagSample{At: time.Since(start), GroupLag: lag, Backlog: accepted.Load() - sk.unique.Load()})
		return err
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	published := make(chan struct{})
	go func() { wg.Wait(); close(published) }()
	stopped, drainUntil := time.Duration(-1), time.Time{}
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return r, fmt.Errorf("%w\npublishing side log:\n%s", context.Cause(ctx), p.pub.logTail())
		case <-published:
			published = nil // the stop, sampled at once
			stopped, drainUntil = time.Since(start), time.Now().Add(2*time.Minute)
			r.Published, r.Duration = accepted.Load(), stopped
			r.DeliverRate = float64(sk.unique.Load()) / stopped.Seconds()
		case <-tick.C:
		}
		if err := sample(); err != nil {
			return r, err
		}
		last := r.Samples[len(r.Samples)-1]
		if stopped >= 0 && (last.GroupLag == 0 && last.Backlog == 0 || time.Now().After(drainUntil)) {
			break
		}
	}
	r.PublishRate = float64(r.Published) / r.Duration.Seconds()
	r.Dups = int(sk.dups.Load())
	summarizeLag(&r, stopped)
	return r, nil
}

// groupLag is what the group has not acked: XINFO GROUPS lag + pending.
func groupLag(ctx context.Context, rdb *redis.Client, key, name string) (int64, error) {
	groups, err := rdb.XInfoGroups(ctx, key).Result()
	if err != nil {
		return 0, fmt.Errorf("xinfo groups %s: %w", key, err)
	}
	for _, g := range groups {
		if g.Name == name {
			return max(g.Lag, 0) + g.Pending, nil
		}
	}
	return 0, fmt.Errorf("xinfo groups %s: no group %s", key, name)
}
