package delivery

import (
	"context"

	"github.com/ferry-sidecar/ferry/internal/redisconn"
)

// Replay rewinds this app's consumer group so that entries from start (a
// stream id) on are delivered again, marked Ferry-Replay and bypassing
// dedupe (group.Group.Replay keeps the mark in Redis).
func (s *Subscriber) Replay(ctx context.Context, start string) error {
	return s.g.Replay(ctx, start, s.opts.FromLatest)
}

// loadReplayMark reads the replay mark that a replay left in Redis.
func (s *Subscriber) loadReplayMark(ctx context.Context) {
	if err := s.g.LoadReplayMark(ctx); err != nil {
		s.log.Warn("read replay mark", "err", redisconn.RedactErr(err))
	}
}
