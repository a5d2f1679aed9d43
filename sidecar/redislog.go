package sidecar

import (
	"context"
	"fmt"
	"log/slog"
)

// RedisLogger adapts go-redis's internal logger (pool dial failures and the
// like) to slog, so those lines go through ferry's handler and format like
// every other line instead of going raw to stderr. main installs it with
// redis.SetLogger; it is process-wide.
type RedisLogger struct{ Log *slog.Logger }

// Printf implements go-redis's internal.Logging.
func (l RedisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.Log.InfoContext(ctx, "redis client", "detail", fmt.Sprintf(format, v...))
}
