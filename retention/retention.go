package retention

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/internal/redisconn"
	"github.com/ferry-sidecar/ferry/stream"
)

// Options set the limits. MaxLen ≤ 0 means no length cap; MaxAge 0 no age cap.
type Options struct {
	MaxLen int64
	MaxAge time.Duration
}

// Trimmer trims topic streams; it is safe for concurrent use.
type Trimmer struct {
	rdb    redis.UniversalClient
	opts   Options
	rounds atomic.Int64
	now    func() time.Time
}

// New returns a Trimmer over rdb.
func New(rdb redis.UniversalClient, opts Options) *Trimmer {
	return &Trimmer{rdb: rdb, opts: opts, now: time.Now}
}

// Rounds counts the trims done (all topics): tests wait on it.
func (t *Trimmer) Rounds() int64 { return t.rounds.Load() }

// spanLimit bounds how many entries trimTopic counts between a group's
// oldest pending entry and its last delivered one in one round.
const spanLimit = 10000

// countRange counts the entries of KEYS[1] from ARGV[1] to ARGV[2], at
// most ARGV[3], inside Redis: only the number crosses the network.
var countRange = redis.NewScript(`return #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2], 'COUNT', ARGV[3])`)

// Trim applies FERRY_STREAM_MAX_LEN and FERRY_STREAM_MAX_AGE to one
// topic stream without removing what a known consumer group still needs:
// each group's oldest pending entry and everything after it (its pending
// entries being retried, and those not delivered yet).
//
//   - max-len: when every group's needed entries lie within the newest
//     MAX_LEN, trim to MAX_LEN (approximately); otherwise trim only what
//     lies before the oldest needed entry (MINID);
//   - max-age: trim by MINID, held back to the oldest needed entry.
//
// A round that cannot tell (the group's lag is unknown, or more than
// spanLimit entries lie between its oldest pending and its last delivered
// entry) skips the max-len trim: never trimming too much wins.
//
// It reports whether ownGroup is what holds trimming back (it lags past retention).
//
// It is one function on purpose: the decision needs every group's figures
// at once, and reads best next to the rules above.
func (t *Trimmer) Trim(ctx context.Context, topic, ownGroup string) (ownBlocked bool, err error) {
	defer t.rounds.Add(1)
	key := stream.Key(topic)
	groups, err := t.rdb.XInfoGroups(ctx, key).Result()
	if err != nil {
		if redis.HasErrorPrefix(err, "ERR no such key") {
			return false, nil
		}
		return false, err
	}
	length, err := t.rdb.XLen(ctx, key).Result()
	if err != nil {
		return false, err
	}
	maxLen := t.opts.MaxLen
	if maxLen <= 0 {
		maxLen = 1<<63 - 1
	}
	protect, ownNeed := "", ""          // the oldest id some group (our group) still needs
	needed, decidable := int64(0), true // entries from protect to the end
	for _, g := range groups {
		need, count := "", g.Lag
		if g.Lag != 0 { // undelivered entries, or unknown (-1: entries were deleted)
			need = stream.NextID(g.LastDeliveredID)
		}
		if g.Pending > 0 {
			p, err := t.rdb.XPending(ctx, key, g.Name).Result()
			if err != nil {
				return false, err
			}
			need = p.Lower
			span, err := countRange.Run(ctx, t.rdb, []string{key}, p.Lower, g.LastDeliveredID, spanLimit+1).Int64()
			if err != nil {
				return false, err
			}
			if span > spanLimit {
				decidable = false
			}
			count += span
		}
		if g.Lag < 0 {
			decidable = false
		}
		needed = max(needed, count)
		protect = stream.MinID(protect, need)
		if g.Name == ownGroup {
			ownNeed = need
			ownBlocked = count > maxLen
		}
	}
	switch {
	case length <= maxLen:
	case protect == "" || (decidable && needed <= maxLen):
		err = t.rdb.XTrimMaxLenApprox(ctx, key, maxLen, 0).Err()
	case decidable: // more than MAX_LEN still needed: keep all of it
		err = t.rdb.XTrimMinIDApprox(ctx, key, protect, 0).Err()
	}
	if err != nil {
		return ownBlocked, err
	}
	if t.opts.MaxAge > 0 {
		cutoff := stream.TimeID(t.now().Add(-t.opts.MaxAge))
		if ownNeed != "" && !stream.IDLessEq(cutoff, ownNeed) {
			ownBlocked = true
		}
		if err := t.rdb.XTrimMinIDApprox(ctx, key, stream.MinID(cutoff, protect), 0).Err(); err != nil {
			return ownBlocked, err
		}
	}
	return ownBlocked, nil
}

// Topics remembers the topics a sidecar published to, so that their
// streams are trimmed even where no subscriber sidecar runs. Bounded by
// maxTrackedTopics; the zero value is ready to use.
type Topics struct {
	mu     sync.Mutex
	topics map[string]struct{}
}

const maxTrackedTopics = 1024

// Add remembers topic.
func (p *Topics) Add(topic string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.topics == nil {
		p.topics = map[string]struct{}{}
	}
	if len(p.topics) < maxTrackedTopics {
		p.topics[topic] = struct{}{}
	}
}

// List returns the remembered topics.
func (p *Topics) List() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.topics))
	for t := range p.topics {
		out = append(out, t)
	}
	return out
}

// Run trims the streams of topics every interval until ctx ends, skipping
// those skip reports (subscribers trim their own topic); it returns nil.
func (t *Trimmer) Run(ctx context.Context, topics *Topics, skip func(topic string) bool, every time.Duration, log *slog.Logger) error {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		for _, topic := range topics.List() {
			if skip(topic) {
				continue
			}
			if _, err := t.Trim(ctx, topic, ""); err != nil && ctx.Err() == nil {
				log.Debug("trim stream", "topic", topic, "err", redisconn.RedactErr(err))
			}
		}
	}
}
