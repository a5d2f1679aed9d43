package delivery

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/internal/redisconn"
	"github.com/ferry-sidecar/ferry/stream"
)

// settleMax bounds the deliveries settled in one round trip pair.
const settleMax = 256

// settleReq is a delivery whose entry is to be acked: one the app answered
// 2xx (complete: mark it done in the dedupe store first), a duplicate, or
// a dead letter already parked.
type settleReq struct {
	d         *delivery
	complete  bool
	duplicate bool
}

// toSettler hands r to the settler. It never blocks for long: settling
// holds window entries and tracked ≤ window.
func (s *Subscriber) toSettler(r settleReq) {
	if r.complete {
		s.m.SettlePending.WithLabelValues(s.opts.Topic).Inc()
	}
	s.settling <- r
}

// settler settles what the workers hand over until s.settling is closed:
// it takes whatever has queued up (at most settleMax), marks the
// completions done in the dedupe store in one pipeline, then acks all of
// it in a second one. Completion comes before the ack, so a Redis failure
// between them never makes ferry deliver again.
func (s *Subscriber) settler(ctx context.Context) {
	batch := make([]settleReq, 0, settleMax)
	for first := range s.settling {
		batch = append(batch[:0], first)
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
		s.settleBatch(ctx, batch)
		clear(batch) // drop the references until the next batch
	}
}

// settleBatch completes and acks batch; what fails waits and is settled
// again later (only these steps: the app has it).
func (s *Subscriber) settleBatch(ctx context.Context, batch []settleReq) {
	keys := make([]string, 0, len(batch))
	completions := 0
	for _, r := range batch {
		if r.complete {
			keys = append(keys, stream.DedupeKey(s.opts.Topic, s.opts.AppID, r.d.msg.ID))
			completions++
		}
	}
	retryAll := func(what string, err error) {
		s.log.Warn(what, "messages", len(batch), "err", redisconn.RedactErr(err))
		for _, r := range batch {
			if ctx.Err() == nil {
				s.later(r.d, waitNoAttempt, false)
			}
		}
		s.m.SettlePending.WithLabelValues(s.opts.Topic).Sub(float64(completions)) // counted again when retried
	}
	if err := s.deps.Dedupe.Complete(ctx, keys...); err != nil {
		retryAll("complete dedupe claims", err)
		return
	}
	s.m.SettlePending.WithLabelValues(s.opts.Topic).Sub(float64(completions))
	for _, r := range batch {
		if r.complete {
			s.unhold(r.d.msg.ID)
		}
	}
	for i := range batch {
		batch[i].complete = false // done: a retried ack must not count it as waiting again
	}

	// One XACK per stream with every id; redrive entries are also deleted.
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
	if err != nil {
		completions = 0
		retryAll("ack", err)
		return
	}
	now := time.Now()
	for _, r := range batch {
		s.finish(r.d)
		switch {
		case r.duplicate:
			s.m.DedupeHits.WithLabelValues(s.opts.Topic).Inc()
			s.log.Debug("duplicate acked without delivery", "msg_id", r.d.msg.ID)
		case r.d.delivered && !r.d.msg.PublishedAt.IsZero():
			s.m.EndToEnd.WithLabelValues(s.opts.Topic).Observe(now.Sub(r.d.msg.PublishedAt).Seconds())
		}
	}
}
