//go:build ha

package main

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-sidecar/ferry/stream"
)

// Failover chaos with the real binary (make test-ha): 2 publishing
// sidecars and 2 subscribing replicas of one group under a steady load,
// while the primary that owns the topic is killed with SIGKILL three times
// at random moments. With FERRY_REDIS_WAIT_REPLICAS every 202'd id must be
// delivered; without it the loss is measured and reported.

const (
	chaosEvents   = 20000
	chaosDuration = 30 * time.Second // publishing spread over this
	chaosKills    = 3
)

// chaosResult is one run's figures.
type chaosResult struct {
	mode                                 string
	wait                                 bool
	kills, accepted, refused             int
	delivered, lost, duplicates          int
	redisDownLines, relayLines, notReady int
	elapsed                              time.Duration
}

func (r chaosResult) String() string {
	return fmt.Sprintf("CHAOS mode=%s wait=%v kills=%d accepted=%d refused=%d delivered=%d lost=%d duplicates=%d redis_down_lines=%d relay_lines=%d readyz_not_200=%d elapsed=%s",
		r.mode, r.wait, r.kills, r.accepted, r.refused, r.delivered, r.lost, r.duplicates, r.redisDownLines, r.relayLines, r.notReady, r.elapsed.Round(time.Second))
}

// chaosSeed: FERRY_CHAOS_SEED or the time, logged so a run can be replayed.
func chaosSeed(t *testing.T) uint64 {
	if v := os.Getenv("FERRY_CHAOS_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("FERRY_CHAOS_SEED=%q: %v", v, err)
		}
		return s
	}
	return uint64(time.Now().UnixNano())
}

// readyWatch polls /readyz of procs until stop and counts answers not 200.
func readyWatch(procs []*proc, stop <-chan struct{}) *atomic.Int64 {
	var bad atomic.Int64
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			for _, p := range procs {
				resp, err := http.Get(p.admin + "/readyz")
				if err != nil || resp.StatusCode != http.StatusOK {
					bad.Add(1)
				}
				if err == nil {
					resp.Body.Close()
				}
			}
		}
	}()
	return &bad
}

// killPrimary kills the primary of the orders stream with SIGKILL, waits
// for the promotion, restarts the killed node (it rejoins as a replica)
// and waits until the topology is healthy again, so the next kill has a
// replica to promote.
func (b *haBackend) killPrimary(t *testing.T) {
	t.Helper()
	switch b.mode {
	case "cluster":
		killed, _ := b.cluster.KillMasterFor(t, stream.Key("orders"))
		b.cluster.Restart(t, killed)
		b.cluster.WaitHealthy(t)
	case "sentinel":
		killed, _ := b.sentinel.KillPrimary(t)
		b.sentinel.Restart(t, killed)
		b.sentinel.WaitHealthy(t)
	default:
		t.Fatalf("no failover in mode %s", b.mode)
	}
}

// chaosRun is one run: fresh topology, 2 publishers, 2 subscriber replicas.
func chaosRun(t *testing.T, mode string, wait bool, rng *rand.Rand) chaosResult {
	start := time.Now()
	b := startBackend(t, mode)
	app := newCrashApp(t, 0, nil)
	var pubs, subs []*proc
	for i := range 2 {
		env := b.env(t, "orders-svc", wait)
		env["HOSTNAME"] = "orders-svc-" + itoa(i)
		pubs = append(pubs, startFerry(t, env))
	}
	for i := range 2 {
		env := b.env(t, "billing", wait)
		env["HOSTNAME"] = "billing-" + itoa(i)
		env["FERRY_APP_URL"] = app.srv.URL + "/billing-" + itoa(i)
		env["FERRY_SUBSCRIPTIONS"] = "orders=/orders"
		env["FERRY_CLAIM_IDLE"] = "2s"
		env["FERRY_DEDUPE_LEASE"] = "2s"
		subs = append(subs, startFerry(t, env))
	}
	all := append(slices.Clone(pubs), subs...)
	stop := make(chan struct{})
	notReady := readyWatch(all, stop)
	var accepted sync.Map
	var acceptedN, refused atomic.Int64
	published := make(chan struct{})
	go func() {
		defer close(published)
		pacedPublish(pubs, chaosEvents, chaosDuration, &accepted, &acceptedN, &refused)
	}()

	// Kill moments: random fractions of the load, at least 15% apart.
	var at []int
	for len(at) < chaosKills {
		f := int(float64(chaosEvents) * (0.05 + 0.8*rng.Float64()))
		if !slices.ContainsFunc(at, func(x int) bool { return abs(x-f) < chaosEvents*15/100 }) {
			at = append(at, f)
		}
	}
	slices.Sort(at)
	for _, n := range at {
		waitUntil(t, 2*chaosDuration, "load reached the kill moment", func() bool { return acceptedN.Load() >= int64(n) })
		b.killPrimary(t)
	}
	<-published

	// Settle: every accepted id delivered, or (without WAIT) nothing more
	// is coming: outboxes empty and the app has seen nothing new for 5 s.
	total := int(acceptedN.Load())
	last, lastChange := -1, time.Now()
	deadline := time.Now().Add(120 * time.Second)
	for time.Now().Before(deadline) {
		d, _ := app.seen()
		if d == total {
			break
		}
		if d != last {
			last, lastChange = d, time.Now()
		}
		if !wait && time.Since(lastChange) > 5*time.Second && outboxPending(t, pubs[0]) == 0 && outboxPending(t, pubs[1]) == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	r := chaosResult{mode: mode, wait: wait, kills: chaosKills, accepted: total, refused: int(refused.Load()), notReady: int(notReady.Load())}
	app.mu.Lock()
	accepted.Range(func(k, _ any) bool {
		switch n := app.counts[k.(string)]; {
		case n == 0:
			r.lost++
		default:
			r.delivered++
			r.duplicates += n - 1
		}
		return true
	})
	app.mu.Unlock()
	for _, p := range all {
		r.redisDownLines += strings.Count(p.logs(), `"msg":"redis down"`)
		r.relayLines += strings.Count(p.logs(), `"msg":"relay to redis"`)
	}
	r.elapsed = time.Since(start)
	return r
}

func abs(x int) int { return max(x, -x) }

// chaos runs FERRY_CHAOS_RUNS runs (default 1) per WAIT setting in mode
// and checks what each promises.
func chaos(t *testing.T, mode string) {
	seed := chaosSeed(t)
	runs := 1
	if v := os.Getenv("FERRY_CHAOS_RUNS"); v != "" {
		runs, _ = strconv.Atoi(v)
	}
	t.Logf("FERRY_CHAOS_SEED=%d", seed)
	rng := rand.New(rand.NewPCG(seed, 13))
	for _, wait := range []bool{true, false} {
		for run := range runs {
			t.Run(fmt.Sprintf("wait=%v/run=%d", wait, run), func(t *testing.T) {
				r := chaosRun(t, mode, wait, rng)
				t.Log(r)
				fmt.Println(r) // for the README figures: visible without -v
				if r.refused != 0 {
					t.Errorf("%d publishes not answered 202 during the failovers", r.refused)
				}
				if r.notReady != 0 {
					t.Errorf("/readyz answered other than 200 %d times during the failovers", r.notReady)
				}
				if wait && r.lost != 0 {
					t.Errorf("with FERRY_REDIS_WAIT_REPLICAS %d of %d accepted events were lost", r.lost, r.accepted)
				}
				// One line per episode: per kill at most a couple per process.
				if limit := 4 * 2 * r.kills; r.redisDownLines > limit || r.relayLines > limit {
					t.Errorf("%d \"redis down\" and %d \"relay to redis\" lines for %d kills over 4 processes: want at most %d each",
						r.redisDownLines, r.relayLines, r.kills, limit)
				}
			})
		}
	}
}

func TestFailoverChaosCluster(t *testing.T)  { chaos(t, "cluster") }
func TestFailoverChaosSentinel(t *testing.T) { chaos(t, "sentinel") }

// TestClusterSpread64Topics: 64 topics over a cluster land on all three
// primaries (the spread is reported), and end-to-end throughput (one
// publisher, one subscriber of all 64, on this machine) is reported next
// to a standalone server's; only a collapse fails it.
func TestClusterSpread64Topics(t *testing.T) {
	var topics []string
	for i := range 64 {
		topics = append(topics, "topic-"+itoa(i))
	}
	const perTopic = 60
	rates := map[string]float64{}
	for _, mode := range []string{"standalone", "cluster"} {
		b := startBackend(t, mode)
		if mode == "cluster" {
			spread := map[string]int{}
			for _, tp := range topics {
				spread[b.cluster.MasterFor(t, stream.Key(tp)).Addr]++
			}
			fmt.Printf("SPREAD 64 topics over %d primaries: %v\n", len(spread), spread)
			if len(spread) != 3 {
				t.Fatalf("64 topics on %d primaries, want 3: %v", len(spread), spread)
			}
		}
		rates[mode] = spreadRun(t, b, topics, perTopic)
	}
	fmt.Printf("THROUGHPUT 64 topics x %d events, publish→delivered: standalone %.0f ev/s (%.1f per topic), cluster %.0f ev/s (%.1f per topic)\n",
		perTopic, rates["standalone"], rates["standalone"]/64, rates["cluster"], rates["cluster"]/64)
	if rates["cluster"] < rates["standalone"]/4 {
		t.Errorf("cluster %.0f ev/s against standalone %.0f: collapsed", rates["cluster"], rates["standalone"])
	}
}
