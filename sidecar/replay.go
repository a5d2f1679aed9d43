package sidecar

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

var streamIDPattern = regexp.MustCompile(`^[0-9]{1,20}(-[0-9]{1,20})?$`)

// errBadFrom is a replay `from` that is neither RFC 3339 nor a stream id.
var errBadFrom = errors.New(`"from" must be an RFC 3339 time or a stream id like 1700000000000-0`)

// replayStart turns a replay `from` into the first stream id to deliver again.
func replayStart(from string) (string, error) {
	if t, err := time.Parse(time.RFC3339Nano, from); err == nil {
		if t.UnixMilli() < 0 {
			return "", errBadFrom
		}
		return strconv.FormatInt(t.UnixMilli(), 10) + "-0", nil
	}
	if !streamIDPattern.MatchString(from) {
		return "", errBadFrom
	}
	ms, seq, ok := splitID(from)
	if !ok {
		return "", errBadFrom
	}
	return fmt.Sprintf("%d-%d", ms, seq), nil
}

func splitID(id string) (ms, seq uint64, ok bool) {
	a, b, hasSeq := cutDash(id)
	ms, err := strconv.ParseUint(a, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	if hasSeq {
		if seq, err = strconv.ParseUint(b, 10, 64); err != nil {
			return 0, 0, false
		}
	}
	return ms, seq, true
}

func cutDash(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '-' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// before returns the stream id just before id ("0-0" has none: itself).
func before(id string) string {
	ms, seq, _ := splitID(id)
	switch {
	case seq > 0:
		return fmt.Sprintf("%d-%d", ms, seq-1)
	case ms > 0:
		return fmt.Sprintf("%d-%d", ms-1, uint64(math.MaxUint64))
	}
	return "0-0"
}

// replay rewinds this app's consumer group so that entries from start on
// are delivered again, marked Ferry-Replay and bypassing dedupe. The mark
// (the group's last delivered id before the rewind) is kept in Redis so a
// restart or another replica treats the same entries as replays.
func (s *subscriber) replay(ctx context.Context, start string) error {
	if err := s.ensureGroup(ctx); err != nil {
		return err
	}
	last, err := s.lastDelivered(ctx)
	if err != nil {
		return err
	}
	mark := last
	if prev := s.replayUntil.Load(); prev != nil && streamIDLessEq(mark, *prev) {
		mark = *prev
	}
	if err := s.sc.rdb.Set(ctx, replayKey(s.sub.Topic, s.group), mark, 0).Err(); err != nil {
		return err
	}
	s.replayUntil.Store(&mark)
	return s.sc.rdb.XGroupSetID(ctx, s.stream, s.group, before(start)).Err()
}

// lastDelivered is the group's last delivered id on the topic stream.
func (s *subscriber) lastDelivered(ctx context.Context) (string, error) {
	groups, err := s.sc.rdb.XInfoGroups(ctx, s.stream).Result()
	if err != nil {
		return "", err
	}
	for _, g := range groups {
		if g.Name == s.group {
			return g.LastDeliveredID, nil
		}
	}
	return "0-0", nil
}

// loadReplayMark reads the replay mark that a replay left in Redis.
func (s *subscriber) loadReplayMark(ctx context.Context) {
	mark, err := s.sc.rdb.Get(ctx, replayKey(s.sub.Topic, s.group)).Result()
	if err == nil && streamIDPattern.MatchString(mark) {
		s.replayUntil.Store(&mark)
	} else if err != nil && !errors.Is(err, redis.Nil) {
		s.log.Warn("read replay mark", "err", redactErr(err))
	}
}

// refreshStatus updates the lag gauge and /v1/status every refreshEvery (5s).
func (s *subscriber) refreshStatus(ctx context.Context) {
	t := time.NewTicker(s.sc.refreshEvery)
	defer t.Stop()
	for {
		s.updateStatus(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *subscriber) updateStatus(ctx context.Context) {
	if s.refreshGroupStatus(ctx) != nil {
		return
	}
	s.loadReplayMark(ctx)
	blocked, err := s.sc.trimTopic(ctx, s.sub.Topic, s.group)
	s.sc.trimRounds.Add(1)
	if err != nil {
		s.log.Debug("trim stream", "err", redactErr(err))
		return
	}
	if blocked != s.retentionBlocked {
		s.retentionBlocked = blocked
		if blocked {
			s.log.Warn("consumer group lags past stream retention: trimming is held back for it", "app_id", s.group,
				"stream_max_len", s.sc.cfg.StreamMaxLen, "stream_max_age", s.sc.cfg.StreamMaxAge.String())
		} else {
			s.log.Info("consumer group back within stream retention", "app_id", s.group)
		}
	}
	v := 0.0
	if blocked {
		v = 1
	}
	s.sc.metrics.RetentionLagging.WithLabelValues(s.sub.Topic).Set(v)
}

// refreshGroupStatus reads the group's pending count, lag and last delivered
// id (XINFO GROUPS) into the status and the lag gauge.
func (s *subscriber) refreshGroupStatus(ctx context.Context) error {
	groups, err := s.sc.rdb.XInfoGroups(ctx, s.stream).Result()
	if err != nil {
		return err
	}
	for _, g := range groups {
		if g.Name != s.group {
			continue
		}
		lag := max(g.Lag, 0) + g.Pending
		s.status.Store(&subStatus{LastDelivered: g.LastDeliveredID, Pending: g.Pending, Lag: lag})
		s.sc.metrics.ConsumerLag.WithLabelValues(s.sub.Topic).Set(float64(lag))
	}
	return nil
}
