package delivery

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/internal/redisconn"
	"github.com/ferry-sidecar/ferry/stream"
)

// Replay rewinds this app's consumer group so that entries from start (a
// stream id) on are delivered again, marked Ferry-Replay and bypassing
// dedupe. The mark (the group's last delivered id before the rewind) is
// kept in Redis so a restart or another replica treats the same entries
// as replays.
func (s *Subscriber) Replay(ctx context.Context, start string) error {
	if err := s.ensureGroup(ctx); err != nil {
		return err
	}
	mark, err := s.lastDelivered(ctx)
	if err != nil {
		return err
	}
	if prev := s.replayUntil.Load(); prev != nil && stream.IDLessEq(mark, *prev) {
		mark = *prev
	}
	if err := s.rdb.Set(ctx, stream.ReplayKey(s.opts.Topic, s.opts.AppID), mark, 0).Err(); err != nil {
		return err
	}
	s.replayUntil.Store(&mark)
	return s.rdb.XGroupSetID(ctx, s.stream, s.opts.AppID, stream.PrevID(start)).Err()
}

// lastDelivered is the group's last delivered id on the topic stream.
func (s *Subscriber) lastDelivered(ctx context.Context) (string, error) {
	groups, err := s.rdb.XInfoGroups(ctx, s.stream).Result()
	if err != nil {
		return "", err
	}
	for _, g := range groups {
		if g.Name == s.opts.AppID {
			return g.LastDeliveredID, nil
		}
	}
	return "0-0", nil
}

// loadReplayMark reads the replay mark that a replay left in Redis.
func (s *Subscriber) loadReplayMark(ctx context.Context) {
	mark, err := s.rdb.Get(ctx, stream.ReplayKey(s.opts.Topic, s.opts.AppID)).Result()
	switch {
	case err == nil && stream.ValidID(mark):
		s.replayUntil.Store(&mark)
	case err != nil && !errors.Is(err, redis.Nil):
		s.log.Warn("read replay mark", "err", redisconn.RedactErr(err))
	}
}
