package redisconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"time"
)

// RedactErr keeps error text free of credentials: go-redis errors carry
// addresses at most, but a dial error is formatted here to be sure.
func RedactErr(err error) string {
	var op *net.OpError
	if errors.As(err, &op) {
		return fmt.Sprintf("%s %s: %v", op.Op, op.Net, op.Err)
	}
	return err.Error()
}

// RedactURL drops the user and password from a URL (Redis or app).
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable)"
	}
	if u.User != nil {
		u.User = url.User("redacted")
	}
	return u.String()
}

// Logger adapts go-redis's internal logger (pool dial failures and the
// like) to slog, so those lines go through ferry's handler, at most one
// line per message kind per Every: go-redis logs "failed to dial after 5
// attempts" per failed dial, which during a failover is per command. The
// line after a quiet spell carries how many were suppressed. main installs
// it with redis.SetLogger; it is process-wide. Make it with NewLogger.
type Logger struct {
	log   *slog.Logger
	every time.Duration
	mu    sync.Mutex
	kinds map[string]*logKind // by format string: go-redis has a bounded set
}

type logKind struct {
	last       time.Time
	suppressed int
}

// LogEvery is how often a Logger lets one kind of go-redis line through.
const LogEvery = time.Minute

// NewLogger returns a Logger writing to log, one line per kind per LogEvery.
func NewLogger(log *slog.Logger) *Logger {
	return &Logger{log: log, every: LogEvery, kinds: make(map[string]*logKind)}
}

// Printf implements go-redis's internal.Logging.
func (l *Logger) Printf(ctx context.Context, format string, v ...any) {
	l.mu.Lock()
	k := l.kinds[format]
	if k == nil {
		if len(l.kinds) >= 100 { // bounded whatever go-redis passes
			clear(l.kinds)
		}
		k = &logKind{}
		l.kinds[format] = k
	}
	now := time.Now()
	if !k.last.IsZero() && now.Sub(k.last) < l.every {
		k.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := k.suppressed
	k.last, k.suppressed = now, 0
	l.mu.Unlock()
	l.log.InfoContext(ctx, "redis client", "detail", fmt.Sprintf(format, v...), "suppressed", suppressed)
}
