package sidecar

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/breaker"
	"github.com/ferry-sidecar/ferry/outbox"
	"github.com/ferry-sidecar/ferry/retry"
)

// Relay batch limits: a batch is what is waiting, up to these.
const (
	relayMaxRecords = 512
	relayMaxBytes   = 4 << 20
	relayBreaker    = "relay"
	// relayCommitEvery bounds how often the checkpoint is persisted while
	// records keep coming: each commit costs two fsyncs and a rename, as
	// much as the group commit of the records themselves. A crash re-sends
	// at most this much (dedupe absorbs it); an idle relay commits at once
	// after this delay.
	relayCommitEvery = 100 * time.Millisecond
)

// relay moves outbox records to their topic streams in order: read a batch
// after the checkpoint, XADD it in one pipeline, then commit the checkpoint
// (at most every relayCommitEvery while busy). A crash between the two
// re-sends what was not committed (dedupe absorbs it); nothing is skipped. While Redis fails it backs off behind a breaker.
type relay struct {
	log       *slog.Logger
	outbox    *outbox.Log
	rdb       redis.UniversalClient
	metrics   *Metrics
	backoff   retry.Policy
	breaker   *breaker.Set
	committed chan struct{} // signalled after each commit, for the shutdown drain
	published *publishedTopics
}

func newRelay(log *slog.Logger, ob *outbox.Log, rdb redis.UniversalClient, m *Metrics, published *publishedTopics) *relay {
	return &relay{
		published: published,
		log:       log,
		outbox:    ob,
		rdb:       rdb,
		metrics:   m,
		backoff:   retry.Policy{Initial: 100 * time.Millisecond, Max: 5 * time.Second, MaxAttempts: 1 << 30},
		breaker: breaker.New(breaker.Settings{FailureRatio: 1, MinRequests: 3, Window: 5 * time.Second, OpenTimeout: 2 * time.Second, OnStateChange: func(_ string, from, to breaker.State) {
			log.Warn("relay breaker", "from", from.String(), "to", to.String())
		}}),
		committed: make(chan struct{}, 1),
	}
}

// Run relays until ctx ends; it returns nil then.
func (r *relay) Run(ctx context.Context) error {
	pos := r.outbox.Checkpoint()
	failures := 0
	dirty, lastCommit := false, time.Now() // dirty: pos is relayed but not committed
	commit := func() {
		if err := r.outbox.Commit(pos); err != nil {
			// The records are in Redis; failing to persist the checkpoint
			// re-sends them after a restart, which dedupe absorbs.
			r.log.Error("relay commit checkpoint", "err", err)
		}
		dirty, lastCommit = false, time.Now()
		select {
		case r.committed <- struct{}{}:
		default:
		}
	}
	defer func() {
		if dirty {
			commit()
		}
	}()
	for ctx.Err() == nil {
		entries, err := r.outbox.Read(pos, relayMaxRecords, relayMaxBytes)
		if err != nil {
			r.log.Error("relay read outbox", "err", err)
			if !sleepCtx(ctx, r.backoff.Delay(1, time.Second)) {
				return nil
			}
			continue
		}
		if len(entries) == 0 {
			wait := time.Second // a safety net; Notify is the signal
			if dirty {
				wait = max(0, relayCommitEvery-time.Since(lastCommit))
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-r.outbox.Notify():
				t.Stop()
			case <-t.C:
				if dirty {
					commit()
				}
			}
			continue
		}
		if err := r.send(ctx, entries); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			failures++
			if dirty {
				// What went through before is in Redis: persist that now, or
				// an outage keeps it pending, counted as left at shutdown
				// and sent again after a restart.
				commit()
			}
			if !errors.Is(err, breaker.ErrOpen) {
				r.metrics.RelayRecords.WithLabelValues("error").Add(float64(len(entries)))
				if failures == 1 || failures%50 == 0 {
					r.log.Warn("relay to redis", "records", len(entries), "failures", failures, "err", redactErr(err))
				}
			}
			if !sleepCtx(ctx, r.backoff.Delay(min(failures, 30), 0)) {
				return nil
			}
			continue
		}
		if failures > 0 {
			r.log.Info("relay resumed", "failures", failures)
			failures = 0
		}
		pos, dirty = entries[len(entries)-1].Next, true
		r.metrics.RelayRecords.WithLabelValues("ok").Add(float64(len(entries)))
		if time.Since(lastCommit) >= relayCommitEvery {
			commit()
		}
	}
	return nil
}

// send XADDs entries in one pipeline, in order.
func (r *relay) send(ctx context.Context, entries []outbox.Entry) error {
	done, err := r.breaker.Allow(relayBreaker)
	if err != nil {
		return err
	}
	pipe := r.rdb.Pipeline()
	prevTopic := ""
	for _, e := range entries {
		ev, err := decodeEvent(e.Data)
		if err != nil {
			// Cannot happen for records ferry wrote (CRC-checked); skipping
			// one would still be better than blocking the outbox forever.
			r.log.Error("relay skip malformed record", "segment", e.Next.Segment, "offset", e.Next.Offset, "err", err)
			continue
		}
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: streamKey(ev.Topic), Values: streamValues(&ev, e.Time)})
		if ev.Topic != prevTopic { // a batch is mostly one topic: one lock, not one per record
			r.published.add(ev.Topic)
			prevTopic = ev.Topic
		}
	}
	_, err = pipe.Exec(ctx)
	done(err == nil)
	return err
}

// sleepCtx waits d or until ctx ends; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Redis keys of DESIGN.md; the topic in braces is a Cluster hash tag.
func streamKey(topic string) string          { return "ferry:{" + topic + "}:stream" }
func deadLetterKey(topic, app string) string { return "ferry:{" + topic + "}:dlq:" + app }
func redriveKey(topic, app string) string    { return "ferry:{" + topic + "}:redrive:" + app }
func replayKey(topic, app string) string     { return "ferry:{" + topic + "}:replay:" + app }
