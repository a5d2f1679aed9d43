package redisconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
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
// like) to slog, so those lines go through ferry's handler. main installs
// it with redis.SetLogger; it is process-wide.
type Logger struct{ Log *slog.Logger }

// Printf implements go-redis's internal.Logging.
func (l Logger) Printf(ctx context.Context, format string, v ...any) {
	l.Log.InfoContext(ctx, "redis client", "detail", fmt.Sprintf(format, v...))
}
