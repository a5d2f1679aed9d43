package redisconn

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// Health is a redis.Hook that follows whether Redis answers, from the
// outcome of every command, and reports each transition once: a log line
// and OnChange. Add it with client.AddHook.
type Health struct {
	up atomic.Bool
	// outages counts up-to-down transitions: state taken in Redis before
	// one may be gone after it (a restart without persistence, a failover).
	outages  atomic.Uint64
	log      *slog.Logger
	onChange func(up bool)
}

// NewHealth returns a Health that starts down (nothing answered yet).
// onChange (may be nil) is called on every transition, from the goroutine
// whose command saw it.
func NewHealth(log *slog.Logger, onChange func(up bool)) *Health {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if onChange == nil {
		onChange = func(bool) {}
	}
	return &Health{log: log, onChange: onChange}
}

// Up reports whether the last Redis command succeeded.
func (h *Health) Up() bool { return h.up.Load() }

// Outages is the number of times Redis went from up to down.
func (h *Health) Outages() uint64 { return h.outages.Load() }

// Observe records the outcome of one command or pipeline.
func (h *Health) Observe(err error) {
	if !SaysDown(err) {
		if err != nil && !errors.Is(err, redis.Nil) && !isRedisAnswer(err) {
			return // our own cancellation says nothing about Redis
		}
		if !h.up.Swap(true) {
			h.log.Info("redis up")
			h.onChange(true)
		}
		return
	}
	if h.up.Swap(false) {
		h.outages.Add(1)
		h.log.Warn("redis down", "err", RedactErr(err))
		h.onChange(false)
	}
}

// SaysDown reports whether err means Redis (or the node that owns the key)
// cannot serve now: a network error, or LOADING, READONLY, MASTERDOWN,
// CLUSTERDOWN, TRYAGAIN. Our own cancellation and a command's own error
// are not.
func SaysDown(err error) bool {
	switch {
	case err == nil, errors.Is(err, redis.Nil):
		return false
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded) && !isNetErr(err):
		return false
	}
	if isRedisAnswer(err) {
		for _, p := range []string{"LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN"} {
			if redis.HasErrorPrefix(err, p) {
				return true
			}
		}
		return false
	}
	return true
}

func isRedisAnswer(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr)
}

func isNetErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne)
}

// DialHook implements redis.Hook.
func (h *Health) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			h.Observe(err)
		}
		return c, err
	}
}

// ProcessHook implements redis.Hook.
func (h *Health) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.Observe(err)
		return err
	}
}

// ProcessPipelineHook implements redis.Hook.
func (h *Health) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		h.Observe(err)
		return err
	}
}
