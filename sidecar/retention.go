package sidecar

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// spanLimit bounds how many entries trimTopic counts between a group's
// oldest pending entry and its last delivered one in one round.
const spanLimit = 10000

// countRange counts the entries of KEYS[1] from ARGV[1] to ARGV[2], at
// most ARGV[3], inside Redis: only the number crosses the network.
var countRange = redis.NewScript(`return #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2], 'COUNT', ARGV[3])`)

// trimTopic applies FERRY_STREAM_MAX_LEN and FERRY_STREAM_MAX_AGE to one
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
func (s *Sidecar) trimTopic(ctx context.Context, topic, ownGroup string) (ownBlocked bool, err error) {
	key := streamKey(topic)
	groups, err := s.rdb.XInfoGroups(ctx, key).Result()
	if err != nil {
		if redis.HasErrorPrefix(err, "ERR no such key") {
			return false, nil
		}
		return false, err
	}
	length, err := s.rdb.XLen(ctx, key).Result()
	if err != nil {
		return false, err
	}
	maxLen := s.cfg.StreamMaxLen
	protect, ownNeed := "", ""          // the oldest id some group (our group) still needs
	needed, decidable := int64(0), true // entries from protect to the end
	for _, g := range groups {
		need, count := "", g.Lag
		if g.Lag != 0 { // undelivered entries, or unknown (-1: entries were deleted)
			need = nextID(g.LastDeliveredID)
		}
		if g.Pending > 0 {
			p, err := s.rdb.XPending(ctx, key, g.Name).Result()
			if err != nil {
				return false, err
			}
			need = p.Lower
			span, err := countRange.Run(ctx, s.rdb, []string{key}, p.Lower, g.LastDeliveredID, spanLimit+1).Int64()
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
		protect = minID(protect, need)
		if g.Name == ownGroup {
			ownNeed = need
			ownBlocked = count > maxLen
		}
	}
	switch {
	case length <= maxLen:
	case protect == "" || (decidable && needed <= maxLen):
		err = s.rdb.XTrimMaxLenApprox(ctx, key, maxLen, 0).Err()
	case decidable: // more than MAX_LEN still needed: keep all of it
		err = s.rdb.XTrimMinIDApprox(ctx, key, protect, 0).Err()
	}
	if err != nil {
		return ownBlocked, err
	}
	if s.cfg.StreamMaxAge > 0 {
		cutoff := strconv.FormatInt(time.Now().Add(-s.cfg.StreamMaxAge).UnixMilli(), 10) + "-0"
		if ownNeed != "" && !streamIDLessEq(cutoff, ownNeed) {
			ownBlocked = true
		}
		if err := s.rdb.XTrimMinIDApprox(ctx, key, minID(cutoff, protect), 0).Err(); err != nil {
			return ownBlocked, err
		}
	}
	return ownBlocked, nil
}

// minID returns the smaller stream id; "" is no id.
func minID(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	case streamIDLessEq(a, b):
		return a
	}
	return b
}

// nextID returns the smallest id after id.
func nextID(id string) string {
	ms, seq, ok := splitID(id)
	if !ok {
		return "0-1"
	}
	return fmt.Sprintf("%d-%d", ms, seq+1)
}

// publishedTopics remembers the topics this sidecar published to, so that
// their streams are trimmed even where no subscriber sidecar runs. Bounded.
type publishedTopics struct {
	mu     sync.Mutex
	topics map[string]struct{}
}

const maxTrackedTopics = 1024

func (p *publishedTopics) add(topic string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.topics == nil {
		p.topics = map[string]struct{}{}
	}
	if len(p.topics) < maxTrackedTopics {
		p.topics[topic] = struct{}{}
	}
}

func (p *publishedTopics) list() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.topics))
	for t := range p.topics {
		out = append(out, t)
	}
	return out
}

// retentionLoop trims the streams this sidecar publishes to and does not
// subscribe to (subscribers trim their own topic) every refreshEvery.
func (s *Sidecar) retentionLoop(ctx context.Context) {
	t := time.NewTicker(s.refreshEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, topic := range s.published.list() {
			if s.subscribes(topic) {
				continue
			}
			if _, err := s.trimTopic(ctx, topic, ""); err != nil && ctx.Err() == nil {
				s.log.Debug("trim stream", "topic", topic, "err", redactErr(err))
			}
		}
		s.trimRounds.Add(1)
	}
}

func (s *Sidecar) subscribes(topic string) bool {
	for _, sub := range s.subs {
		if sub.sub.Topic == topic {
			return true
		}
	}
	return false
}
