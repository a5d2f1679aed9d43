package sidecar

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// trimTopic applies FERRY_STREAM_MAX_LEN and FERRY_STREAM_MAX_AGE to one
// topic stream without removing what a known consumer group still needs:
//
//   - max-len keeps max(MAX_LEN, each group's lag) newest entries, so no
//     entry a group has not been delivered yet is trimmed;
//   - max-age trims by MINID, held back to each group's oldest pending
//     entry and first undelivered entry.
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
	keep, lagUnknown := maxLen, false
	protect, ownNeed := "", "" // the smallest id some group (our group) still needs
	for _, g := range groups {
		need := ""
		if g.Pending > 0 {
			p, err := s.rdb.XPending(ctx, key, g.Name).Result()
			if err != nil {
				return false, err
			}
			need = p.Lower
		}
		if g.Lag != 0 { // undelivered entries, or unknown (-1: entries were deleted)
			need = minID(need, nextID(g.LastDeliveredID))
		}
		if g.Lag < 0 {
			lagUnknown = true
		}
		keep = max(keep, g.Lag)
		protect = minID(protect, need)
		if g.Name == ownGroup {
			ownNeed = need
			ownBlocked = g.Lag > maxLen
		}
	}
	if length > keep && !lagUnknown {
		if err := s.rdb.XTrimMaxLenApprox(ctx, key, keep, 0).Err(); err != nil {
			return ownBlocked, err
		}
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
