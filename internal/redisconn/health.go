package redisconn

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Health is a redis.Hook that follows whether Redis answers, from the
// outcome of every command, and reports each transition: OnChange every
// time, a log line once per episode. A failover flaps (commands on the new
// primary succeed while pooled ones still dial the dead one): a transition
// within HealthQuiet of the last line is not logged then, and when HealthQuiet has
// passed the state is logged if it differs from the last line, with the
// number of transitions folded in ("flaps"). Add it with client.AddHook.
type Health struct {
	up atomic.Bool
	// outages counts up-to-down transitions: state taken in Redis before
	// one may be gone after it (a restart without persistence, a failover).
	outages  atomic.Uint64
	log      *slog.Logger
	onChange func(up bool)

	mu      sync.Mutex
	logged  bool      // the state the last line said
	lastLog time.Time // zero: nothing logged yet
	lastErr error     // the latest down transition's error
	flaps   int       // transitions since the last line
	timer   *time.Timer
}

// HealthQuiet is how long after a "redis up" or "redis down" line further
// transitions are folded into the same episode instead of logged.
const HealthQuiet = 10 * time.Second

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
			h.report(nil)
			h.onChange(true)
		}
		return
	}
	if h.up.Swap(false) {
		h.outages.Add(1)
		h.report(err)
		h.onChange(false)
	}
}

// report logs a transition now, or folds it into the current episode and
// makes sure the state is logged once the episode's quiet time is over.
func (h *Health) report(downErr error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if downErr != nil {
		h.lastErr = downErr
	}
	h.flaps++
	since := time.Since(h.lastLog)
	if h.lastLog.IsZero() || since >= HealthQuiet {
		h.emit()
		return
	}
	if h.timer == nil {
		h.timer = time.AfterFunc(HealthQuiet-since, func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.timer = nil
			h.emit()
		})
	}
}

// emit logs the current state unless the last line already said it.
func (h *Health) emit() {
	up := h.up.Load()
	if up == h.logged && !h.lastLog.IsZero() {
		return
	}
	if up {
		h.log.Info("redis up", "flaps", h.flaps-1)
	} else {
		msg := "unknown"
		if h.lastErr != nil {
			msg = RedactErr(h.lastErr)
		}
		h.log.Warn("redis down", "err", msg, "flaps", h.flaps-1)
	}
	h.logged, h.lastLog, h.flaps = up, time.Now(), 0
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
