package retry

import (
	"context"
	"time"
)

// Sleep waits d or until ctx ends; it reports whether d passed. Loops that
// back off use it so that a stop is seen at once.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
