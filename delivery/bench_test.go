package delivery

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/breaker"
	"github.com/ferry-sidecar/ferry/dedupe"
	"github.com/ferry-sidecar/ferry/internal/redisconn"
	"github.com/ferry-sidecar/ferry/internal/redistest"
	"github.com/ferry-sidecar/ferry/metrics"
	"github.com/ferry-sidecar/ferry/retry"
	"github.com/ferry-sidecar/ferry/stream"
)

// BenchmarkDeliver is the subscribing side of one message, in process:
// b.N entries are in the stream as the relay writes them (with a sampled
// app traceparent), and one subscriber reads, claims, POSTs to a loopback
// app and settles them; an op is one message, from the first read to the
// app's last answer (cpu-ns/op: this process's CPU time). allocs/op counts the whole process (the app server
// and go-redis too), so it is a guard for what delivery adds.
func BenchmarkDeliver(b *testing.B) {
	benchDeliver(b, http.Header{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}, nil)
}

// benchDeliver runs BenchmarkDeliver with carried headers hdr; with
// adjusts the subscriber's deps.
func benchDeliver(b *testing.B, hdr http.Header, with func(*Deps)) {
	ctx := context.Background()
	srv := redistest.StartServer(b)
	rdb := srv.Client(b)
	fill(b, rdb, hdr)
	var got atomic.Int64
	all := make(chan struct{})
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if got.Add(1) == int64(b.N) {
			close(all)
		}
	}))
	defer app.Close()
	health := redisconn.NewHealth(nil, nil)
	rdb.AddHook(health)
	deps := Deps{
		Redis:    rdb,
		Dedupe:   dedupe.New(rdb, dedupe.Options{Owner: "c1"}),
		Breakers: breaker.New(breaker.Settings{}),
		Retry:    retry.Policy{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond},
		Client:   NewClient(8),
		Metrics:  metrics.New(prometheus.NewRegistry(), "bench", []string{"orders"}),
		Health:   health,
	}
	if with != nil {
		with(&deps)
	}
	sub := New(Options{Topic: "orders", Route: "/orders", AppID: "billing", Consumer: "c1", AppURL: app.URL,
		Concurrency: 8, Timeout: 5 * time.Second, ClaimIdle: time.Minute, DedupeLease: 30 * time.Second}, deps)
	run, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime()
	go func() {
		defer close(done)
		_ = sub.Run(run, run)
	}()
	select {
	case <-all:
	case <-time.After(5 * time.Minute):
		b.Errorf("delivered %d of %d in 5 minutes", got.Load(), b.N)
	}
	b.StopTimer()
	// Process CPU per message, the app's and Redis client's included:
	// on a shared machine it says more than the wall clock.
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
	stop()
	<-done
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// fill XADDs b.N entries the way the relay does.
func fill(b *testing.B, rdb redis.UniversalClient, hdr http.Header) {
	ctx := context.Background()
	body := make([]byte, 1024)
	for i := 0; i < b.N; i += 500 {
		pipe := rdb.Pipeline()
		for j := i; j < min(b.N, i+500); j++ {
			fields := []string{stream.FieldID, "m" + strconv.Itoa(j), stream.FieldSource, "shop", stream.FieldContentType, "application/json"}
			for k, v := range hdr {
				fields = append(fields, stream.HeaderField+k, v[0])
			}
			ev := stream.Event{Topic: "orders", Fields: fields, Body: body}
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream.Key("orders"), Values: ev.Values(time.Now())})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
