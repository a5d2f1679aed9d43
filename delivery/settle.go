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
	pending := s.m.SettlePending.WithLabelValues(s.opts.Topic)
	retryAll := func(what string, err error) {
		s.log.Warn(what, "messages", len(batch), "err", redisconn.RedactErr(err))
		for _, r := range batch {
			if ctx.Err() == nil {
				s.later(r.d, waitNoAttempt, false) // the settle verdict counts it as waiting again
			}
		}
	}
	completions, err := s.complete(ctx, batch)
	pending.Sub(float64(completions))
	if err != nil {
		retryAll("complete dedupe claims", err)
		return
	}
	if err := s.ack(ctx, batch); err != nil {
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
