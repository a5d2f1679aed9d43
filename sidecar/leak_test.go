package sidecar

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestNoGoroutineOutlivesShutdown runs two whole sidecars through
// publishes, deliveries, a retry and a dead letter, stops them, and then
// finds no goroutine of theirs still running: every one was joined.
func TestNoGoroutineOutlivesShutdown(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	p := startPair(t, map[string]string{"FERRY_RETRY_MAX_ATTEMPTS": "2"}, func(r received) int {
		switch {
		case r.Body == "poison":
			return http.StatusUnprocessableEntity
		case r.Body == "flaky" && r.Header.Get(hdrAttempt) == "1":
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	for i := range 20 {
		mustPublish(t, p.pub, "orders", "e"+strconv.Itoa(i), nil)
	}
	mustPublish(t, p.pub, "orders", "flaky", nil)
	mustPublish(t, p.pub, "orders", "poison", nil)
	waitFor(t, 15*time.Second, "delivered and dead-lettered", func() bool {
		return p.sub.metric("ferry_delivery_attempts_total", map[string]string{"result": "success"}) == 21 &&
			p.sub.metric("ferry_deadletters_total", map[string]string{"reason": "poison"}) == 1
	})
	for _, n := range []*node{p.sub, p.pub} {
		if err := n.stop(); err != nil {
			t.Fatalf("stop: %v", err)
		}
	}
	p.app.srv.Close()
	p.rdb.Close()
	http.DefaultClient.CloseIdleConnections() // the test's own client
	// The redis-server process belongs to the test, not to ferry: it ends at cleanup.
	goleak.VerifyNone(t, ignore,
		goleak.IgnoreTopFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).reaper"),
		goleak.IgnoreAnyFunction("os/exec.(*Cmd).Wait"),
		goleak.IgnoreAnyFunction("github.com/ferry-sidecar/ferry/internal/redistest.(*Server).start.func1"))
}
