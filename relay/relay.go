package relay

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/breaker"
	"github.com/ferry-sidecar/ferry/internal/redisconn"
	"github.com/ferry-sidecar/ferry/metrics"
	"github.com/ferry-sidecar/ferry/outbox"
	"github.com/ferry-sidecar/ferry/retry"
	"github.com/ferry-sidecar/ferry/stream"
	"github.com/ferry-sidecar/ferry/tracing"
)

// Batch limits: a batch is what is waiting, up to these.
const (
	MaxRecords = 512
	MaxBytes   = 4 << 20
	// CommitEvery bounds how often the checkpoint is persisted while
	// records keep coming: each commit costs fsyncs of its own. A crash
	// re-sends at most this much (dedupe absorbs it); an idle relay
	// commits at once after this delay.
	CommitEvery = 100 * time.Millisecond
)

// Log is the part of the outbox the relay reads and commits.
type Log interface {
	Checkpoint() outbox.Position
	Read(from outbox.Position, maxRecords, maxBytes int) ([]outbox.Entry, error)
	Commit(p outbox.Position) error
	Notify() <-chan struct{}
}

// TopicRecorder learns the topics the relay sent to (retention trims them).
type TopicRecorder interface{ Add(topic string) }

// Wait asks the relay to drop records from the outbox only once WAIT
// confirms Replicas replicas for their XADDs (FERRY_REDIS_WAIT_REPLICAS,
// FERRY_REDIS_WAIT_TIMEOUT). The zero value turns it off.
type Wait struct {
	Replicas int
	Timeout  time.Duration
	// Health (may be nil) learns the outcome of each node pipeline: in a
	// cluster they run on node clients, which the cluster client's hooks
	// do not see.
	Health interface{ Observe(err error) }
}

// Relay is the outbox → Redis loop.
type Relay struct {
	log       *slog.Logger
	outbox    Log
	rdb       redis.UniversalClient
	metrics   *metrics.Metrics
	topics    TopicRecorder
	breaker   *breaker.Set
	wait      Wait
	committed chan struct{}
	tracer    *tracing.Tracer // nil: off
}

// New returns a relay from ob to rdb; topics and tr (a send span per
// batch and topic) may be nil; wait may be the zero Wait (acknowledged by
// the master is enough).
func New(ob Log, rdb redis.UniversalClient, m *metrics.Metrics, topics TopicRecorder, tr *tracing.Tracer, log *slog.Logger, wait Wait) *Relay {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Relay{
		log:     log,
		outbox:  ob,
		rdb:     rdb,
		metrics: m,
		topics:  topics,
		wait:    wait,
		breaker: breaker.New(breaker.Settings{FailureRatio: 1, MinRequests: 3, Window: 5 * time.Second, OpenTimeout: 2 * time.Second,
			OnStateChange: func(_ string, from, to breaker.State) {
				log.Warn("relay breaker", "from", from.String(), "to", to.String())
			}}),
		committed: make(chan struct{}, 1),
		tracer:    tr,
	}
}

// Committed is signalled after each checkpoint commit (the shutdown drain waits on it).
func (r *Relay) Committed() <-chan struct{} { return r.committed }

// Run relays until ctx ends; it returns nil then, after committing what
// was sent.
//
// It is one loop on purpose: the position, the dirty flag and the failure
// count are its state, and splitting it would pass all three around. The
// checkpoint is written by a committer goroutine (commitLoop), so that its
// fsyncs never hold back the next XADD.
func (r *Relay) Run(ctx context.Context) error {
	pos := r.outbox.Checkpoint()
	failures := 0
	dirty, lastCommit := false, time.Now() // dirty: pos is relayed but not handed to the committer
	toCommit := make(chan outbox.Position, 1)
	committerDone := make(chan struct{})
	go func() {
		defer close(committerDone)
		r.commitLoop(toCommit)
	}()
	commit := func() {
		select { // the newest position replaces one not yet taken
		case <-toCommit:
		default:
		}
		toCommit <- pos
		dirty, lastCommit = false, time.Now()
	}
	defer func() {
		if dirty {
			commit()
		}
		close(toCommit)
		<-committerDone // every position handed over is committed when Run returns
	}()
	for ctx.Err() == nil {
		entries, err := r.outbox.Read(pos, MaxRecords, MaxBytes)
		if err != nil {
			r.log.Error("relay read outbox", "err", err)
			if !retry.Sleep(ctx, time.Second) {
				return nil
			}
			continue
		}
		if len(entries) == 0 {
			if !r.idle(ctx, dirty, lastCommit, commit) {
				return nil
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
					r.log.Warn("relay to redis", "records", len(entries), "failures", failures, "err", redisconn.RedactErr(err))
				}
			}
			if !retry.Sleep(ctx, redisconn.Backoff.Delay(min(failures, 30), 0)) {
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
		if time.Since(lastCommit) >= CommitEvery {
			commit()
		}
	}
	return nil
}

// commitLoop persists each position it is handed, in order, until the
// channel is closed, and signals Committed after each.
func (r *Relay) commitLoop(positions <-chan outbox.Position) {
	for p := range positions {
		if err := r.outbox.Commit(p); err != nil {
			// The records are in Redis; failing to persist the checkpoint
			// re-sends them after a restart, which dedupe absorbs.
			r.log.Error("relay commit checkpoint", "err", err)
		}
		select {
		case r.committed <- struct{}{}:
		default:
		}
	}
}

// idle waits for new records (Notify), committing a dirty checkpoint once
// CommitEvery has passed; false when ctx ended.
func (r *Relay) idle(ctx context.Context, dirty bool, lastCommit time.Time, commit func()) bool {
	wait := time.Second // a safety net; Notify is the signal
	if dirty {
		wait = max(0, CommitEvery-time.Since(lastCommit))
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-r.outbox.Notify():
	case <-t.C:
		if dirty {
			commit()
		}
	}
	return true
}

// send XADDs entries in order: in one pipeline, or with Wait per master
// node. An error means nothing of the batch may be taken as relayed.
func (r *Relay) send(ctx context.Context, entries []outbox.Entry) error {
	done, err := r.breaker.Allow("relay")
	if err != nil {
		return err
	}
	span := r.tracer.StartSend()
	adds := r.decode(entries, &span)
	if r.wait.Replicas > 0 {
		err = r.sendWaited(ctx, adds)
	} else {
		pipe := r.rdb.Pipeline() // a ClusterClient pipeline splits by slot
		for _, a := range adds {
			pipe.XAdd(ctx, a)
		}
		_, err = pipe.Exec(ctx)
	}
	done(err == nil)
	span.End(redactedErr(err))
	return err
}

// decode turns entries into XADD arguments, in order, adds them to the
// send span and tells the topic recorder the topics.
func (r *Relay) decode(entries []outbox.Entry, span *tracing.Send) []*redis.XAddArgs {
	adds := make([]*redis.XAddArgs, 0, len(entries))
	prevTopic := ""
	for _, e := range entries {
		ev, err := stream.DecodeEvent(e.Data)
		if err != nil {
			// Cannot happen for records ferry wrote (CRC-checked); skipping
			// one would still be better than blocking the outbox forever.
			r.log.Error("relay skip malformed record", "segment", e.Next.Segment, "offset", e.Next.Offset, "err", err)
			continue
		}
		adds = append(adds, &redis.XAddArgs{Stream: stream.Key(ev.Topic), Values: ev.Values(e.Time)})
		if r.tracer.Enabled() {
			span.Add(ev.Topic, field(ev.Fields, stream.FieldID), field(ev.Fields, stream.FieldTraceparent))
		}
		if ev.Topic != prevTopic && r.topics != nil { // a batch is mostly one topic: one call, not one per record
			r.topics.Add(ev.Topic)
			prevTopic = ev.Topic
		}
	}
	return adds
}

// field is the value of name in fields (name, value, …), "" when absent.
func field(fields []string, name string) string {
	for i := 0; i+1 < len(fields); i += 2 {
		if fields[i] == name {
			return fields[i+1]
		}
	}
	return ""
}

// redactedErr is err without addresses (a span's status is exported), nil
// for nil.
func redactedErr(err error) error {
	if err == nil {
		return nil
	}
	return errors.New(redisconn.RedactErr(err))
}
