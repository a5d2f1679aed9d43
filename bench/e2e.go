package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// pairs is the end-to-end setup: the sink and both pairs, started once
// and shared by the phases that follow, on their own streams.
type pairs struct {
	sink   *sinkServer
	srv    *http.Server
	ferry  *pair
	c      *pair
	clock  clock
	phases int // phase numbers handed out so far
}

// startPairs flushes Redis (the earlier phases' streams) and starts the
// sink, ceiling C's pair and ferry's pair.
func (e *env) startPairs(ctx context.Context, c clock) (*pairs, error) {
	rdb := redis.NewClient(&redis.Options{Addr: e.redisAddr})
	err := rdb.FlushAll(ctx).Err()
	rdb.Close()
	if err != nil {
		return nil, fmt.Errorf("flush redis: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	ps := &pairs{sink: newSinkServer(), clock: c}
	ps.srv = &http.Server{Handler: ps.sink, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = ps.srv.Serve(ln) }()
	sinkURL := "http://" + ln.Addr().String()
	if ps.c, err = e.startCeilingCPair(ctx, sinkURL); err != nil {
		ps.stop()
		return nil, err
	}
	if ps.ferry, err = e.startFerryPair(ctx, sinkURL); err != nil {
		ps.stop()
		return nil, err
	}
	return ps, nil
}

func (ps *pairs) stop() {
	for _, p := range []*pair{ps.ferry, ps.c} {
		if p != nil {
			p.stop()
		}
	}
	ps.srv.Close()
}

// newSink makes the sink of the next phase current.
func (ps *pairs) newSink(n int64, window int, traced bool) *sink {
	ps.phases++
	s := newSink(ps.clock, ps.phases, n, window, traced)
	ps.sink.cur.Store(s)
	return s
}

// e2eResult is one pair's end-to-end throughput phase.
type e2eResult struct {
	Row  rateRow
	Dups int
	Proc []procRow
}

// endToEnd sends Events events through p with at most Window published and
// not yet delivered; the rate is events over the time from the first send
// to the last first delivery.
func endToEnd(ctx context.Context, e *env, ps *pairs, p *pair) (e2eResult, error) {
	n := e.o.Events
	sk := ps.newSink(int64(n), e.o.Window, true)
	before, err := p.mark()
	if err != nil {
		return e2eResult{}, err
	}
	client := newClient(e.o.Clients)
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var first atomic.Int64 // since epoch of the first send, +1 (0 ⇒ none yet)
	var wg sync.WaitGroup
	for range e.o.Clients {
		wg.Go(func() {
			for ctx.Err() == nil {
				seq := next.Add(1) - 1
				if seq >= int64(n) {
					return
				}
				select {
				case sk.slots <- struct{}{}:
				case <-ctx.Done():
					return
				}
				sent := ps.clock.since()
				first.CompareAndSwap(0, int64(sent)+1)
				if err := post(ctx, client, p.url, eventBody(e.o.BodySize, sent, seq, sk.phase), http.StatusAccepted); err != nil {
					cancel(fmt.Errorf("publish event %d: %w", seq, err))
					return
				}
			}
		})
	}
	deadline := max(time.Minute, time.Duration(n)*time.Millisecond) // 1,000 events/s at least
	if err := waitSink(ctx, sk, deadline); err != nil {
		cancel(err)
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return e2eResult{}, fmt.Errorf("%w\npublishing side log:\n%s\ndelivering side log:\n%s", err, p.pub.logTail(), p.sub.logTail())
	}
	after, err := p.mark()
	if err != nil {
		return e2eResult{}, err
	}
	took := time.Duration(sk.last.Load() - (first.Load() - 1))
	lat := sk.latencies()
	return e2eResult{
		Row:  rateRow{Rate: float64(n) / took.Seconds(), P50: percentile(lat, 0.50), P99: percentile(lat, 0.99), N: n},
		Dups: int(sk.dups.Load()),
		Proc: p.procRows(before, after, n, "end to end"),
	}, nil
}

// waitSink waits until every event of sk is delivered, within d.
func waitSink(ctx context.Context, sk *sink, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-sk.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return fmt.Errorf("%d of %d events delivered within %s", sk.unique.Load(), sk.n, d)
	}
}

// observer follows a stream with XREAD BLOCK, as a consumer would, and
// records when each event of its sink's phase became readable.
type observer struct {
	done chan struct{}
	err  error
}

// observe starts following key from its current end until ctx ends.
func observe(ctx context.Context, addr, key string, sk *sink) (*observer, error) {
	rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 1, ReadTimeout: -1})
	last := "0"
	if xs, err := rdb.XRevRangeN(ctx, key, "+", "-", 1).Result(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("observe %s: %w", key, err)
	} else if len(xs) > 0 {
		last = xs[0].ID
	}
	o := &observer{done: make(chan struct{})}
	go func() {
		defer close(o.done)
		defer rdb.Close()
		for ctx.Err() == nil {
			res, err := rdb.XRead(ctx, &redis.XReadArgs{Streams: []string{key, last}, Count: 512, Block: 200 * time.Millisecond}).Result()
			now := sk.clock.since()
			if errors.Is(err, redis.Nil) {
				continue
			}
			if err != nil {
				if ctx.Err() == nil {
					o.err = fmt.Errorf("observe %s: %w", key, err)
				}
				return
			}
			for _, st := range res {
				for _, m := range st.Messages {
					last = m.ID
					body, _ := m.Values["body"].(string)
					_, seq, phase, ok := parseBody([]byte(body[:min(len(body), bodyHeaderLen)]))
					if ok && phase == sk.phase && seq < sk.n && sk.tr.relayed[seq] == 0 {
						sk.tr.relayed[seq] = int64(now)
					}
				}
			}
		}
	}()
	return o, nil
}

// pipelines runs every phase that needs both pairs: end-to-end
// throughput (C, then ferry), the steady loads (C then ferry at each
// rate), and ferry's keep-up.
func pipelines(ctx context.Context, e *env, res *results) error {
	ps, err := e.startPairs(ctx, clock{epoch: time.Now()})
	if err != nil {
		return err
	}
	defer ps.stop()
	if e.o.Only == "" {
		if err := throughput(ctx, e, ps, res); err != nil {
			return err
		}
	}
	for _, rate := range e.o.Rates {
		for _, p := range []*pair{ps.c, ps.ferry} {
			l, err := steady(ctx, e, ps, p, rate)
			if err != nil {
				return err
			}
			e.logf("%s at %s/s: end to end p50 %s p99 %s", p.name, group(rate), ms(l.E2E[0]), ms(l.E2E[1]))
			res.Latency = append(res.Latency, l)
		}
	}
	if e.o.KeepUp > 0 {
		k, err := keepUp(ctx, e, ps, ps.ferry)
		if err != nil {
			return fmt.Errorf("keep-up: %w", err)
		}
		res.KeepUp = &k
	}
	return nil
}

// throughput is end-to-end throughput, ceiling C's then ferry's.
func throughput(ctx context.Context, e *env, ps *pairs, res *results) error {
	c, err := endToEnd(ctx, e, ps, ps.c)
	if err != nil {
		return fmt.Errorf("ceiling C: %w", err)
	}
	res.CE2E = c.Row
	res.CCPU = [2]time.Duration{c.Proc[0].CPUPerEvent(), c.Proc[1].CPUPerEvent()}
	e.logf("ceiling C end to end: %s events/s", group(c.Row.Rate))
	profDur := min(e.o.Warmup+e.o.Duration, time.Duration(e.o.Events)*50*time.Microsecond)
	profPub := e.profile(ctx, ps.ferry.ferryPub, "e2e-publisher", profDur)
	profSub := e.profile(ctx, ps.ferry.ferrySub, "e2e-subscriber", profDur)
	f, err := endToEnd(ctx, e, ps, ps.ferry)
	if err != nil {
		return fmt.Errorf("ferry: %w", err)
	}
	if err := errors.Join(profPub.wait(), profSub.wait()); err != nil {
		return err
	}
	res.E2E, res.Duplicates = f.Row, f.Dups
	res.FerryCPU = [2]time.Duration{f.Proc[0].CPUPerEvent(), f.Proc[1].CPUPerEvent()}
	res.Procs = append(res.Procs, c.Proc...)
	res.Procs = append(res.Procs, f.Proc...)
	e.logf("ferry end to end: %s events/s", group(f.Row.Rate))
	return nil
}
