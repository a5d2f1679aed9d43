package relay_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/internal/redisconn"
	"github.com/ferry-sidecar/ferry/internal/redistest"
	"github.com/ferry-sidecar/ferry/metrics"
	"github.com/ferry-sidecar/ferry/outbox"
	"github.com/ferry-sidecar/ferry/relay"
	"github.com/ferry-sidecar/ferry/stream"
)

// fill appends n records to each topic of an outbox in a temp dir.
func fill(t *testing.T, topics []string, n int) *outbox.Log {
	t.Helper()
	ob, err := outbox.Open(outbox.Options{Dir: t.TempDir(), MaxBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ob.Close() })
	for i := range n {
		for _, topic := range topics {
			ev := &stream.Event{Topic: topic, Fields: []string{stream.FieldID, topic + "-" + strconv.Itoa(i)}, Body: []byte("b")}
			if err := ob.Append(context.Background(), stream.AppendEvent(nil, ev)); err != nil {
				t.Fatal(err)
			}
		}
	}
	return ob
}

// run starts r until the test ends.
func run(t *testing.T, r *relay.Relay) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// waitRelayed waits until nothing is pending in ob.
func waitRelayed(t *testing.T, ob *outbox.Log) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for ob.Stats().PendingRecords > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d records still pending after 60 s", ob.Stats().PendingRecords)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func topicsN(n int) []string {
	var ts []string
	for i := range n {
		ts = append(ts, "t"+strconv.Itoa(i))
	}
	return ts
}

// checkStreams asserts every topic's stream on rdb holds n entries, in order.
func checkStreams(t *testing.T, rdb redis.Cmdable, topics []string, n int) {
	t.Helper()
	for _, topic := range topics {
		msgs, err := rdb.XRange(context.Background(), stream.Key(topic), "-", "+").Result()
		if err != nil {
			t.Fatalf("XRANGE %s: %v", topic, err)
		}
		if len(msgs) != n {
			t.Fatalf("%s holds %d entries, want %d", topic, len(msgs), n)
		}
		for i, m := range msgs {
			if want := topic + "-" + strconv.Itoa(i); m.Values[stream.FieldID] != want {
				t.Fatalf("%s entry %d is %v, want %s (order)", topic, i, m.Values[stream.FieldID], want)
			}
		}
	}
}

func clusterClient(t *testing.T, c *redistest.Cluster) redis.UniversalClient {
	rdb, err := redisconn.New(redisconn.Options{URL: c.URL(), Mode: redisconn.Cluster, WaitTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// TestClusterRelay: 24 topics spread over three masters, relayed without
// and with WAIT; every stream complete and in order, on the replicas too
// when WAIT confirmed them.
func TestClusterRelay(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	rdb := clusterClient(t, c)
	for _, wait := range []int{0, 1} {
		t.Run("wait="+strconv.Itoa(wait), func(t *testing.T) {
			topics := topicsN(24)
			for i := range topics {
				topics[i] += "-w" + strconv.Itoa(wait)
			}
			masters := map[string]bool{}
			for _, topic := range topics {
				masters[c.MasterFor(t, stream.Key(topic)).Addr] = true
			}
			if len(masters) != 3 {
				t.Fatalf("24 topics land on %d masters, want 3", len(masters))
			}
			ob := fill(t, topics, 300)
			m := metrics.New(prometheus.NewRegistry(), "test", nil)
			run(t, relay.New(ob, rdb, m, nil, nil, nil, relay.Wait{Replicas: wait, Timeout: 2 * time.Second}))
			waitRelayed(t, ob)
			checkStreams(t, rdb, topics, 300)
			if wait == 0 {
				return
			}
			if n := testutil.CollectAndCount(m.RelayWaitReplicas); n != 1 {
				t.Fatalf("ferry_relay_wait_replicas families = %d", n)
			}
			// WAIT said each XADD reached the replica: read there, no wait.
			for _, topic := range topics {
				master := c.MasterFor(t, stream.Key(topic))
				replica := c.NodeClient(t, c.ReplicaOf(t, master))
				if err := replica.Do(context.Background(), "READONLY").Err(); err != nil {
					t.Fatal(err)
				}
				checkStreams(t, replica, []string{topic}, 300)
			}
		})
	}
}

// TestWaitTooFewReplicas: asking for more replicas than a master has keeps
// every record in the outbox (checkpoint unmoved), counts errors, and
// backs off instead of spinning.
func TestWaitTooFewReplicas(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	rdb := clusterClient(t, c)
	topics := topicsN(6)
	ob := fill(t, topics, 10)
	m := metrics.New(prometheus.NewRegistry(), "test", nil)
	logs := &countHandler{}
	run(t, relay.New(ob, rdb, m, nil, nil, slog.New(logs), relay.Wait{Replicas: 2, Timeout: 100 * time.Millisecond}))
	time.Sleep(3 * time.Second) // observing that nothing happens: no event to await
	if p := ob.Stats().PendingRecords; p != 60 {
		t.Fatalf("pending = %d, want all 60 kept", p)
	}
	errs := testutil.ToFloat64(m.RelayRecords.WithLabelValues("error"))
	if errs == 0 || errs > 60*10 {
		t.Fatalf("relay error records = %v after 3 s: want > 0 and a backoff (≤ 10 attempts)", errs)
	}
	if n := logs.count("relay to redis"); n != 1 {
		t.Fatalf("%d \"relay to redis\" lines, want 1 per episode", n)
	}
	if h := testutil.CollectAndCount(m.RelayWaitReplicas); h != 1 {
		t.Fatal("no wait histogram")
	}
}

// TestSentinelRelayWait: through the Sentinels' failover client, WAIT 2
// (both replicas) confirms every batch.
func TestSentinelRelayWait(t *testing.T) {
	s := redistest.StartSentinel(t, redistest.SentinelOptions{})
	rdb, err := redisconn.New(redisconn.Options{URL: s.URL(), Mode: redisconn.Sentinel, WaitTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	topics := topicsN(4)
	ob := fill(t, topics, 500)
	run(t, relay.New(ob, rdb, metrics.New(prometheus.NewRegistry(), "test", nil), nil, nil, nil, relay.Wait{Replicas: 2, Timeout: 2 * time.Second}))
	waitRelayed(t, ob)
	checkStreams(t, rdb, topics, 500)
}

// TestWaitErrorText: the error names the node and the counts.
func TestWaitErrorText(t *testing.T) {
	err := fmt.Errorf("send: %w", &relay.WaitError{Node: "h:1", Got: 0, Want: 2})
	var we *relay.WaitError
	if !errors.As(err, &we) || we.Error() != "wait on h:1: 0 of 2 replicas acknowledged" {
		t.Fatalf("%v", err)
	}
}

// countHandler counts log lines by message.
type countHandler struct {
	mu   sync.Mutex
	msgs []string
}

func (h *countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, r.Message)
	return nil
}
func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countHandler) WithGroup(string) slog.Handler      { return h }
func (h *countHandler) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range h.msgs {
		if m == msg {
			n++
		}
	}
	return n
}
