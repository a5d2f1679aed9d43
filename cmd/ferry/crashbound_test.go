package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/internal/redistest"
)

// The bound on the duplicates a subscriber crash causes (issue 20), with
// the real binary, Redis and app: a SIGKILL at a seeded random moment of a
// delivery, over many runs in one test.
//
// A crash redelivers what the app had taken and ferry had not yet recorded
// as done in the dedupe store. That is the requests in flight at the app at
// the kill (received, not yet answered: nothing can help those) plus the
// completions that were waiting to be written: answered 2xx, not yet in
// the dedupe store. The bound asserted is, per kill,
//
//	duplicates ≤ in flight at the app at the kill + settleWaitingMax.
const (
	crashConcurrency = 16 // FERRY_DELIVERY_CONCURRENCY of the subscribers
	// settleWaitingMax is N, the README's bound: a delivery holds one of
	// 2 × FERRY_DELIVERY_CONCURRENCY settle slots from its POST until its
	// completion is written, so sent-or-answered-but-unrecorded deliveries
	// never exceed it (delivery.Subscriber.takeSlot). Before that change,
	// completions could pile up behind a slow pipeline (up to the window,
	// 256) and this bound did not hold.
	settleWaitingMax = 2 * crashConcurrency
	crashRuns        = 10   // seeded runs per test
	crashEvents      = 1200 // events delivered per run
	crashAppDelay    = 2 * time.Millisecond
)

// crashSeed is the base seed of the kill moments: FERRY_CRASH_SEED or a
// fixed default, so a failure can be replayed.
func crashSeed(t *testing.T) uint64 {
	if v := os.Getenv("FERRY_CRASH_SEED"); v != "" {
		seed, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("FERRY_CRASH_SEED=%q: %v", v, err)
		}
		return seed
	}
	return 20
}

// crashStream publishes n events (ids ev-0…) through a publisher ferry and
// waits until all are in the orders stream. Every run then delivers them
// to a consumer group of its own, from the start of the stream.
func crashStream(t *testing.T, srv *redistest.Server, rdb *redis.Client, n int) {
	t.Helper()
	const publishers = 16
	pub := startFerry(t, ferryEnv(t, "orders-svc", srv.URL()))
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for w := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += publishers {
				key := fmt.Sprintf("ev-%d", i)
				if code, body := pub.publish("orders", key, map[string]string{"Idempotency-Key": key}); code != http.StatusAccepted {
					errs <- fmt.Errorf("publish %s: %d %s", key, code, body)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitUntil(t, 60*time.Second, "every event in the stream", func() bool {
		l, err := rdb.XLen(context.Background(), ordersStream).Result()
		return err == nil && l == int64(n)
	})
	pub.kill()
}

// crashRun is the outcome of one run.
type crashRun struct {
	seed        uint64
	killAt      int // distinct ids answered when the app held its answers
	before      int // the killed replica's requests in flight at the app right before the SIGKILL
	inflight    int // … and at it: those its workers sent until it died too, less answers flushed meanwhile
	duplicates  int // 200 answers after an id's first
	took        time.Duration
	replicaKind string
}

// killMoment returns the seeded number of distinct ids after which a run
// kills: anywhere from 10 % to 90 % of the events.
func killMoment(seed uint64, run int, n int) int {
	rng := rand.New(rand.NewPCG(seed, uint64(run)))
	return n/10 + rng.IntN(n*8/10)
}

// killAtMoment SIGKILLs p as soon as the app held its answers after
// killAt distinct ids, and counts replica's requests in flight at the app:
// right before the kill (before), and once every request the dead process
// sent has arrived and seen its connection close (at). The answers already
// being written when the hold began go out; a kill that makes one of them
// a duplicate counts it against the bound's N, not as in flight. Then the
// app answers the held requests (the app did the work: each is a
// duplicate when redelivered).
func killAtMoment(t *testing.T, app *crashApp, held <-chan struct{}, p *proc, replica string) (before, at int) {
	t.Helper()
	select {
	case <-held:
	case <-time.After(60 * time.Second):
		t.Fatal("kill moment not reached within 60s")
	}
	before, _ = app.openOf(replica)
	p.kill()
	waitUntil(t, 10*time.Second, "the killed replica's requests orphaned", func() bool {
		_, orphaned := app.openOf(replica)
		return orphaned
	})
	at, _ = app.openOf(replica)
	app.release()
	return before, at
}

// finishRun waits until the group acked every event and every id was
// answered 200, then fills in the duplicates. On a timeout it says what
// is missing: the ids never answered, with their dedupe state, and the
// group's pending entries.
func finishRun(t *testing.T, rdb *redis.Client, app *crashApp, group string, n int, r *crashRun) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		d, _ := app.seen()
		if d == n && settled(rdb, group, int64(n)) {
			break
		}
		if time.Now().After(deadline) {
			ctx := context.Background()
			var missing []string
			for i := range n {
				id := fmt.Sprintf("ev-%d", i)
				if app.count(id) == 0 && len(missing) < 20 {
					st, _ := rdb.Get(ctx, "ferry:{orders}:dedupe:"+group+":"+id).Result()
					missing = append(missing, id+"="+st)
				}
			}
			groups, _ := rdb.XInfoGroups(ctx, ordersStream).Result()
			pend, _ := rdb.XPending(ctx, ordersStream, group).Result()
			t.Fatalf("run not finished within 90s: %d of %d ids answered 200; never answered (dedupe state): %v; groups %+v; pending %+v",
				d, n, missing, groups, pend)
		}
		time.Sleep(20 * time.Millisecond)
	}
	distinct, total := app.seen()
	r.duplicates = total - distinct
}

// checkBound logs every run and the min/median/max duplicates per kill,
// and fails the runs over the bound.
func checkBound(t *testing.T, runs []crashRun) {
	t.Helper()
	dups := make([]int, 0, len(runs))
	for i, r := range runs {
		dups = append(dups, r.duplicates)
		t.Logf("run %2d seed %d/%d: kill after %4d ids, in flight at the app %2d (%2d right before), duplicates %2d, excess over in flight %3d, %s",
			i, r.seed, i, r.killAt, r.inflight, r.before, r.duplicates, r.duplicates-r.inflight, r.took.Round(10*time.Millisecond))
	}
	slices.Sort(dups)
	t.Logf("%s: duplicates per kill over %d runs: min %d, median %d, max %d (N = settleWaitingMax = %d, FERRY_DELIVERY_CONCURRENCY = %d)",
		runs[0].replicaKind, len(runs), dups[0], dups[len(dups)/2], dups[len(dups)-1], settleWaitingMax, crashConcurrency)
	for i, r := range runs {
		inflight := max(r.before, r.inflight)
		if limit := inflight + settleWaitingMax; r.duplicates > limit {
			t.Errorf("run %d (FERRY_CRASH_SEED=%d): %d duplicates after one kill, bound %d = %d in flight at the app + N %d",
				i, r.seed, r.duplicates, limit, inflight, settleWaitingMax)
		}
	}
}

// crashSubscriberEnv is subscriber replica hostname of app id group,
// delivering to app under /replica.
func crashSubscriberEnv(t *testing.T, redisURL string, app *crashApp, group, replica string) map[string]string {
	env := subscriberEnv(t, redisURL, app.srv.URL+"/"+replica, group+"-"+replica)
	env["FERRY_APP_ID"] = group
	env["FERRY_DELIVERY_CONCURRENCY"] = strconv.Itoa(crashConcurrency)
	return env
}

// crashRunsOf runs crashRuns seeded runs against one stream of crashEvents
// events and checks the bound over them. Each run gets a fresh app and a
// consumer group of its own, and the kill moment; run kills at it and
// returns the replicas left running.
func crashRunsOf(t *testing.T, kind string, seed uint64, run func(srv *redistest.Server, app *crashApp, group string, r *crashRun) []*proc) {
	srv := redistest.StartServer(t)
	rdb := srv.Client(t)
	crashStream(t, srv, rdb, crashEvents)
	runs := make([]crashRun, crashRuns)
	for i := range runs {
		start := time.Now()
		r := &runs[i]
		r.seed, r.replicaKind = seed, kind
		r.killAt = killMoment(seed, i, crashEvents)
		app := newCrashApp(t, crashAppDelay, nil)
		group := fmt.Sprintf("billing-%s-%d", kind, i)
		left := run(srv, app, group, r)
		finishRun(t, rdb, app, group, crashEvents, r)
		for _, p := range left {
			p.kill()
		}
		r.took = time.Since(start)
	}
	checkBound(t, runs)
}

// TestSubscriberCrashDuplicatesBounded: SIGKILL a subscriber at a seeded
// random moment of a delivery and restart it; the duplicates the app sees
// stay within the bound, in every run.
func TestSubscriberCrashDuplicatesBounded(t *testing.T) {
	crashRunsOf(t, "restart", crashSeed(t), func(srv *redistest.Server, app *crashApp, group string, r *crashRun) []*proc {
		env := crashSubscriberEnv(t, srv.URL(), app, group, "r0")
		held := app.holdAfter(r.killAt)
		sub := startFerry(t, env)
		r.before, r.inflight = killAtMoment(t, app, held, sub, "r0")
		return []*proc{startFerry(t, env)}
	})
}

// TestReplicaTakeoverDuplicatesBounded: two replicas of one app share the
// delivery; one is SIGKILLed at a seeded random moment and not restarted;
// the other claims its pending entries after FERRY_CLAIM_IDLE (1s) and
// delivers them. The duplicates stay within the same bound, counting the
// dead replica's requests in flight at the app.
func TestReplicaTakeoverDuplicatesBounded(t *testing.T) {
	crashRunsOf(t, "takeover", crashSeed(t)+1000, func(srv *redistest.Server, app *crashApp, group string, r *crashRun) []*proc {
		app.hold() // both replicas deliver before the kill moment
		r0 := startFerry(t, crashSubscriberEnv(t, srv.URL(), app, group, "r0"))
		r1 := startFerry(t, crashSubscriberEnv(t, srv.URL(), app, group, "r1"))
		held := app.holdAfter(r.killAt)
		app.release()
		r.before, r.inflight = killAtMoment(t, app, held, r0, "r0")
		return []*proc{r1}
	})
}
