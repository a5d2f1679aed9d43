package sidecar

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// settleMax bounds the deliveries settled in one round trip pair.
const settleMax = 256

// settleReq is a delivery the app answered 2xx, with its dedupe key.
type settleReq struct {
	d    *delivery
	dkey string
}

// settler settles what the workers hand over until s.settling is closed:
// it takes whatever has queued up (at most settleMax), marks all of it done
// in the dedupe store in one pipeline, then acks all of it in a second one.
// Per message that is two round trips shared by the batch instead of two
// each; completion still comes before the ack, so a Redis failure between
// them never makes ferry deliver again.
func (s *subscriber) settler(ctx context.Context) {
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

// settleBatch completes and acks batch; what fails is retried later (only
// these steps: the deliveries are marked delivered).
func (s *subscriber) settleBatch(ctx context.Context, batch []settleReq) {
	keys := make([]string, 0, len(batch))
	for _, r := range batch {
		if !r.d.replay {
			keys = append(keys, r.dkey)
		}
	}
	if err := s.sc.dedupe.Complete(ctx, keys...); err != nil {
		s.log.Warn("complete dedupe claims", "messages", len(keys), "err", redactErr(err))
		for _, r := range batch {
			s.later(r.d, waitNoAttempt, false)
		}
		return
	}
	for _, r := range batch {
		if !r.d.replay {
			s.unhold(r.d.msg.ID)
		}
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
	_, err := s.sc.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		if len(topicIDs) > 0 {
			p.XAck(ctx, s.stream, s.group, topicIDs...)
		}
		if len(redriveIDs) > 0 {
			p.XAck(ctx, s.redrive, s.group, redriveIDs...)
			p.XDel(ctx, s.redrive, redriveIDs...)
		}
		return nil
	})
	if err != nil {
		s.log.Warn("ack", "messages", len(batch), "err", redactErr(err))
		for _, r := range batch {
			s.later(r.d, waitNoAttempt, false)
		}
		return
	}
	now := time.Now()
	for _, r := range batch {
		s.finish(r.d)
		if !r.d.msg.PublishedAt.IsZero() {
			s.sc.metrics.EndToEnd.WithLabelValues(s.sub.Topic).Observe(now.Sub(r.d.msg.PublishedAt).Seconds())
		}
	}
}
