package delivery

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/internal/redisconn"
	"github.com/ferry-sidecar/ferry/stream"
	"github.com/ferry-sidecar/ferry/tracing"
)

// settleMax bounds the deliveries settled in one round trip.
const settleMax = 256

// settleReq is a delivery whose entry is to be acked: one the app answered
// 2xx (complete: mark it done in the dedupe store first), a duplicate, or
// a dead letter already added.
type settleReq struct {
	d         *delivery
	complete  bool
	duplicate bool
}

// takeSlot takes one of the N = 2 × Concurrency settle slots for d before
// its POST (false when ctx ended first). A slot is held from the POST until
// the completion is written, so that deliveries sent or answered but not
// yet recorded — what a crash redelivers — never exceed N; a worker waits
// for a slot when Redis is that slow. N = Concurrency would make every
// worker wait for its previous completion: it cost about a quarter of the
// delivered rate in make bench's keep-up (3.9k/s against 5.3k/s with 2×,
// 6.4k/s with 4×, 7.2k/s unbounded, one 5 s run each).
func (s *Subscriber) takeSlot(ctx context.Context, d *delivery) bool {
	if d.holdsSlot {
		return true
	}
	select {
	case s.settleSlots <- struct{}{}:
		d.holdsSlot = true
		return true
	case <-ctx.Done():
		return false
	}
}

// freeSlot gives back d's settle slot, if it holds one.
func (s *Subscriber) freeSlot(d *delivery) {
	if d.holdsSlot {
		d.holdsSlot = false
		<-s.settleSlots
	}
}

// toSettler hands r to the settler; a completion keeps (or, settled again
// after a Redis failure, takes back) its settle slot until it is written.
// Acks need no slot: settling holds window entries and tracked ≤ window.
func (s *Subscriber) toSettler(r settleReq) {
	if r.complete {
		s.takeSlot(context.Background(), r.d)
		s.m.SettlePending.WithLabelValues(s.opts.Topic).Inc()
	}
	s.settling <- r
}

// settler completes what the workers hand over until s.settling is
// closed: it takes whatever has queued up (at most settleMax, never
// waiting for more), marks the completions done in the dedupe store in
// one round trip, frees their slots, and hands the batch to the acker. It
// never waits for an XACK, a read or a retry: the window between the
// app's answer and the completion is one round trip plus the batch before.
func (s *Subscriber) settler(ctx context.Context) {
	defer close(s.acking)
	for first := range s.settling {
		batch := append(make([]settleReq, 0, 16), first)
	more:
		for len(batch) < settleMax {
			select {
			case r, ok := <-s.settling:
				if !ok {
					break more
				}
				batch = append(batch, r)
			default:
				break more
			}
		}
		completions, err := s.complete(ctx, batch)
		for _, r := range batch {
			if r.complete {
				s.freeSlot(r.d)
			}
		}
		s.m.SettlePending.WithLabelValues(s.opts.Topic).Sub(float64(completions))
		if err != nil {
			s.retrySettle("complete dedupe claims", batch, err, ctx)
			continue
		}
		s.acking <- batch
	}
}

// acker acks what the settler completed until s.acking is closed.
// Completion comes before the ack, so a Redis failure between them never
// makes ferry deliver again: the redelivery finds the id done.
func (s *Subscriber) acker(ctx context.Context) {
	for batch := range s.acking {
		if err := s.ack(ctx, batch); err != nil {
			s.retrySettle("ack", batch, err, ctx)
			continue
		}
		now := time.Now()
		for _, r := range batch {
			s.finish(r.d)
			switch {
			case r.duplicate:
				s.m.DedupeHits.WithLabelValues(s.opts.Topic).Inc()
				s.log.Debug("duplicate acked without delivery", "msg_id", r.d.msg.ID)
			case r.d.delivered && !r.d.msg.PublishedAt.IsZero():
				r.d.trace.Observe(s.m.EndToEnd.WithLabelValues(s.opts.Topic), now.Sub(r.d.msg.PublishedAt).Seconds())
			}
			if !r.d.parked { // a dead letter's span ended when it was added
				r.d.trace.End(r.d.traceOutcome(tracing.Outcome{DedupeHit: r.duplicate}))
			}
		}
	}
}

// retrySettle settles batch again later (the settle verdict: only the
// completion and the ack, never the POST).
func (s *Subscriber) retrySettle(what string, batch []settleReq, err error, ctx context.Context) {
	s.log.Warn(what, "messages", len(batch), "err", redisconn.RedactErr(err))
	if ctx.Err() != nil {
		return
	}
	for _, r := range batch {
		r.d.trace.Wait(waitRedis, waitNoAttempt)
		s.later(r.d, waitNoAttempt, false)
	}
}

// complete marks the deliveries of batch the app took as done in the
// dedupe store, in one round trip, and releases this replica's hold on
// their ids. It returns how many completions it tried.
func (s *Subscriber) complete(ctx context.Context, batch []settleReq) (int, error) {
	keys := make([]string, 0, len(batch))
	for _, r := range batch {
		if r.complete {
			keys = append(keys, stream.DedupeKey(s.opts.Topic, s.opts.AppID, r.d.msg.ID))
		}
	}
	if err := s.deps.Dedupe.Complete(ctx, keys...); err != nil {
		return len(keys), err
	}
	for _, r := range batch {
		if r.complete {
			s.unhold(r.d.msg.ID)
		}
	}
	return len(keys), nil
}

// ack XACKs every entry of batch, one XACK per stream; redrive entries
// are also deleted (that stream is this group's own).
func (s *Subscriber) ack(ctx context.Context, batch []settleReq) error {
	var topicIDs, redriveIDs []string
	for _, r := range batch {
		if r.d.stream == s.redrive {
			redriveIDs = append(redriveIDs, r.d.msg.StreamID)
		} else {
			topicIDs = append(topicIDs, r.d.msg.StreamID)
		}
	}
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		if len(topicIDs) > 0 {
			p.XAck(ctx, s.stream, s.opts.AppID, topicIDs...)
		}
		if len(redriveIDs) > 0 {
			p.XAck(ctx, s.redrive, s.opts.AppID, redriveIDs...)
			p.XDel(ctx, s.redrive, redriveIDs...)
		}
		return nil
	})
	return err
}
