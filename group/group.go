package group

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/stream"
)

// Group is one app's consumer group on one topic.
type Group struct {
	rdb           redis.UniversalClient
	topic         string
	appID         string
	StreamKey     string // the topic's stream
	RedriveKey    string // this group's redriven dead letters
	DeadLetterKey string // this group's dead-letter stream
	replayUntil   atomic.Pointer[string]
	status        atomic.Pointer[Status]
}

// Status is what /v1/status reports of a group.
type Status struct {
	LastDelivered string
	Pending       int64
	Lag           int64 // entries not yet acked: XINFO lag + pending
}

// New returns the group appID on topic; it touches nothing in Redis.
func New(rdb redis.UniversalClient, topic, appID string) *Group {
	g := &Group{rdb: rdb, topic: topic, appID: appID,
		StreamKey: stream.Key(topic), RedriveKey: stream.RedriveKey(topic, appID), DeadLetterKey: stream.DeadLetterKey(topic, appID)}
	g.status.Store(&Status{})
	return g
}

// Ensure creates the group on the topic stream (at its start, or its end
// with fromLatest) and on the redrive stream; an existing group is fine.
func (g *Group) Ensure(ctx context.Context, fromLatest bool) error {
	start := "0"
	if fromLatest {
		start = "$"
	}
	for _, key := range []string{g.StreamKey, g.RedriveKey} {
		err := g.rdb.XGroupCreateMkStream(ctx, key, g.appID, start).Err()
		if err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
			return err
		}
		start = "0" // the redrive stream holds only this group's entries
	}
	return nil
}

// Refresh reads the group's pending count, lag and last delivered id
// (XINFO GROUPS) into Status and returns it.
func (g *Group) Refresh(ctx context.Context) (Status, error) {
	groups, err := g.rdb.XInfoGroups(ctx, g.StreamKey).Result()
	if err != nil {
		return Status{}, err
	}
	for _, gi := range groups {
		if gi.Name == g.appID {
			st := Status{LastDelivered: gi.LastDeliveredID, Pending: gi.Pending, Lag: max(gi.Lag, 0) + gi.Pending}
			g.status.Store(&st)
			return st, nil
		}
	}
	return *g.status.Load(), nil
}

// Status returns the figures as last refreshed.
func (g *Group) Status() Status { return *g.status.Load() }

// Replay rewinds the group so that entries from start (a stream id) on are
// delivered again, as replays (IsReplay). The mark — the group's last
// delivered id before the rewind, or an earlier mark's if later — is kept
// in Redis.
func (g *Group) Replay(ctx context.Context, start string, fromLatest bool) error {
	if err := g.Ensure(ctx, fromLatest); err != nil {
		return err
	}
	mark, err := g.lastDelivered(ctx)
	if err != nil {
		return err
	}
	if prev := g.replayUntil.Load(); prev != nil && stream.IDLessEq(mark, *prev) {
		mark = *prev
	}
	if err := g.rdb.Set(ctx, stream.ReplayKey(g.topic, g.appID), mark, 0).Err(); err != nil {
		return err
	}
	g.replayUntil.Store(&mark)
	return g.rdb.XGroupSetID(ctx, g.StreamKey, g.appID, stream.PrevID(start)).Err()
}

// IsReplay reports whether the topic stream's entry id is a replay.
func (g *Group) IsReplay(id string) bool {
	until := g.replayUntil.Load()
	return until != nil && stream.IDLessEq(id, *until)
}

// LoadReplayMark reads the replay mark a replay left in Redis (one by
// another replica, or before a restart); no mark is not an error.
func (g *Group) LoadReplayMark(ctx context.Context) error {
	mark, err := g.rdb.Get(ctx, stream.ReplayKey(g.topic, g.appID)).Result()
	switch {
	case err == nil && stream.ValidID(mark):
		g.replayUntil.Store(&mark)
	case err != nil && !errors.Is(err, redis.Nil):
		return err
	}
	return nil
}

// lastDelivered is the group's last delivered id on the topic stream.
func (g *Group) lastDelivered(ctx context.Context) (string, error) {
	groups, err := g.rdb.XInfoGroups(ctx, g.StreamKey).Result()
	if err != nil {
		return "", err
	}
	for _, gi := range groups {
		if gi.Name == g.appID {
			return gi.LastDeliveredID, nil
		}
	}
	return "0-0", nil
}
