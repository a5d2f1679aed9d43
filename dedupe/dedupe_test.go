package dedupe_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/dedupe"
	"github.com/ferry-sidecar/ferry/internal/redistest"
)

func newStore(t testing.TB, rdb redis.UniversalClient, opts dedupe.Options) *dedupe.Store {
	t.Helper()
	if err := opts.Validate(); err != nil {
		t.Fatalf("options: %v", err)
	}
	return dedupe.New(rdb, opts)
}

// value returns the key's raw value, and false when the key is absent.
func value(t testing.TB, rdb redis.UniversalClient, key string) (string, bool) {
	t.Helper()
	v, err := rdb.Get(context.Background(), key).Result()
	if errors.Is(err, redis.Nil) {
		return "", false
	}
	if err != nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	return v, true
}

func pttl(t testing.TB, rdb redis.UniversalClient, key string) time.Duration {
	t.Helper()
	d, err := rdb.PTTL(context.Background(), key).Result()
	if err != nil {
		t.Fatalf("PTTL %s: %v", key, err)
	}
	return d
}

func claim(t testing.TB, s *dedupe.Store, key string, want dedupe.State) {
	t.Helper()
	got, err := s.Claim(context.Background(), key)
	if err != nil {
		t.Fatalf("Claim(%s): %v", key, err)
	}
	if got != want {
		t.Fatalf("Claim(%s) = %v, want %v", key, got, want)
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name string
		opts dedupe.Options
		ok   bool
	}{
		{"zero durations take defaults", dedupe.Options{Owner: "a"}, true},
		{"explicit", dedupe.Options{TTL: time.Hour, Lease: time.Second, Owner: "a"}, true},
		{"one millisecond", dedupe.Options{TTL: time.Millisecond, Lease: time.Millisecond, Owner: "a"}, true},
		{"no owner", dedupe.Options{}, false},
		{"negative ttl", dedupe.Options{TTL: -time.Second, Owner: "a"}, false},
		{"negative lease", dedupe.Options{Lease: -time.Second, Owner: "a"}, false},
		{"sub-millisecond ttl", dedupe.Options{TTL: time.Microsecond, Owner: "a"}, false},
		{"sub-millisecond lease", dedupe.Options{Lease: time.Microsecond, Owner: "a"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.opts.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestStateString(t *testing.T) {
	for st, want := range map[dedupe.State]string{
		dedupe.Claimed: "claimed", dedupe.Done: "done", dedupe.Busy: "busy", dedupe.State(7): "State(7)",
	} {
		if got := st.String(); got != want {
			t.Errorf("State(%d).String() = %q, want %q", int(st), got, want)
		}
	}
}

func TestKey(t *testing.T) {
	got := dedupe.Key("orders.created", "billing", "0190f3a2-7c1e-7b4a-9c1d-2f3e4a5b6c7d")
	want := "ferry:{orders.created}:dedupe:billing:0190f3a2-7c1e-7b4a-9c1d-2f3e4a5b6c7d"
	if got != want {
		t.Fatalf("Key = %q, want %q", got, want)
	}
}

func TestClaimCompleteDone(t *testing.T) {
	rdb := redistest.Start(t)
	ctx := context.Background()
	lease, ttl := 10*time.Second, time.Hour
	a := newStore(t, rdb, dedupe.Options{TTL: ttl, Lease: lease, Owner: "pod-a"})
	b := newStore(t, rdb, dedupe.Options{TTL: ttl, Lease: lease, Owner: "pod-b"})
	key := dedupe.Key("t", "app", "m1")

	claim(t, a, key, dedupe.Claimed)
	if v, _ := value(t, rdb, key); v != "p:pod-a" {
		t.Fatalf("in-progress value = %q, want %q", v, "p:pod-a")
	}
	if d := pttl(t, rdb, key); d <= 0 || d > lease {
		t.Fatalf("in-progress PTTL = %v, want in (0, %v]", d, lease)
	}

	if err := a.Complete(ctx, key); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if v, _ := value(t, rdb, key); v != "d" {
		t.Fatalf("done value = %q, want %q", v, "d")
	}
	if d := pttl(t, rdb, key); d <= lease || d > ttl {
		t.Fatalf("done PTTL = %v, want in (%v, %v]", d, lease, ttl)
	}
	claim(t, a, key, dedupe.Done)
	claim(t, b, key, dedupe.Done)
}

func TestDefaults(t *testing.T) {
	rdb := redistest.Start(t)
	s := newStore(t, rdb, dedupe.Options{Owner: "pod-a"})
	key := dedupe.Key("t", "app", "m1")
	claim(t, s, key, dedupe.Claimed)
	if d := pttl(t, rdb, key); d <= dedupe.DefaultLease-5*time.Second || d > dedupe.DefaultLease {
		t.Fatalf("lease PTTL = %v, want about %v", d, dedupe.DefaultLease)
	}
	if err := s.Complete(context.Background(), key); err != nil {
		t.Fatal(err)
	}
	if d := pttl(t, rdb, key); d <= dedupe.DefaultTTL-time.Minute || d > dedupe.DefaultTTL {
		t.Fatalf("done PTTL = %v, want about %v", d, dedupe.DefaultTTL)
	}
}

func TestClaimBusyUnderAnotherOwner(t *testing.T) {
	rdb := redistest.Start(t)
	a := newStore(t, rdb, dedupe.Options{Lease: 10 * time.Second, Owner: "pod-a"})
	b := newStore(t, rdb, dedupe.Options{Lease: 10 * time.Second, Owner: "pod-b"})
	key := dedupe.Key("t", "app", "m1")

	claim(t, a, key, dedupe.Claimed)
	before := pttl(t, rdb, key)
	claim(t, b, key, dedupe.Busy)
	if v, _ := value(t, rdb, key); v != "p:pod-a" {
		t.Fatalf("value after a Busy claim = %q, want pod-a's claim untouched", v)
	}
	if after := pttl(t, rdb, key); after > before {
		t.Fatalf("a Busy claim extended the lease: PTTL %v → %v", before, after)
	}
}

func TestClaimReentrant(t *testing.T) {
	rdb := redistest.Start(t)
	ctx := context.Background()
	lease := 10 * time.Second
	key := dedupe.Key("t", "app", "m1")

	a := newStore(t, rdb, dedupe.Options{Lease: lease, Owner: "pod-a"})
	claim(t, a, key, dedupe.Claimed)

	// The container restarts under the same pod name: a new Store, same owner.
	if err := rdb.PExpire(ctx, key, time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	restarted := newStore(t, rdb, dedupe.Options{Lease: lease, Owner: "pod-a"})
	claim(t, restarted, key, dedupe.Claimed)
	if d := pttl(t, rdb, key); d <= time.Second || d > lease {
		t.Fatalf("PTTL after re-entrant claim = %v, want the lease renewed to (1s, %v]", d, lease)
	}
	claim(t, newStore(t, rdb, dedupe.Options{Lease: lease, Owner: "pod-b"}), key, dedupe.Busy)
}

func TestRelease(t *testing.T) {
	ctx := context.Background()
	lease := 10 * time.Second
	tests := []struct {
		name      string
		setup     func(t *testing.T, rdb *redis.Client, a, b *dedupe.Store, key string)
		wantValue string // "" ⇒ absent
	}{
		{
			name:      "own claim is released",
			setup:     func(t *testing.T, _ *redis.Client, a, _ *dedupe.Store, key string) { claim(t, a, key, dedupe.Claimed) },
			wantValue: "",
		},
		{
			name:      "another owner's claim is untouched",
			setup:     func(t *testing.T, _ *redis.Client, _, b *dedupe.Store, key string) { claim(t, b, key, dedupe.Claimed) },
			wantValue: "p:pod-b",
		},
		{
			name: "done is untouched",
			setup: func(t *testing.T, _ *redis.Client, a, _ *dedupe.Store, key string) {
				claim(t, a, key, dedupe.Claimed)
				if err := a.Complete(ctx, key); err != nil {
					t.Fatal(err)
				}
			},
			wantValue: "d",
		},
		{
			name:      "absent stays absent",
			setup:     func(*testing.T, *redis.Client, *dedupe.Store, *dedupe.Store, string) {},
			wantValue: "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rdb := redistest.Start(t)
			a := newStore(t, rdb, dedupe.Options{Lease: lease, Owner: "pod-a"})
			b := newStore(t, rdb, dedupe.Options{Lease: lease, Owner: "pod-b"})
			key := dedupe.Key("t", "app", "m1")
			tt.setup(t, rdb, a, b, key)
			if err := a.Release(ctx, key); err != nil {
				t.Fatalf("Release: %v", err)
			}
			v, ok := value(t, rdb, key)
			if tt.wantValue == "" && ok {
				t.Fatalf("after Release the key holds %q, want absent", v)
			}
			if tt.wantValue != "" && v != tt.wantValue {
				t.Fatalf("after Release the key holds %q (present %v), want %q", v, ok, tt.wantValue)
			}
		})
	}

	t.Run("released key is claimable by another owner at once", func(t *testing.T) {
		rdb := redistest.Start(t)
		a := newStore(t, rdb, dedupe.Options{Lease: lease, Owner: "pod-a"})
		b := newStore(t, rdb, dedupe.Options{Lease: lease, Owner: "pod-b"})
		key := dedupe.Key("t", "app", "m1")
		claim(t, a, key, dedupe.Claimed)
		claim(t, b, key, dedupe.Busy)
		if err := a.Release(ctx, key); err != nil {
			t.Fatal(err)
		}
		claim(t, b, key, dedupe.Claimed)
	})
}

func TestLeaseExpiry(t *testing.T) {
	rdb := redistest.Start(t)
	lease := 200 * time.Millisecond
	a := newStore(t, rdb, dedupe.Options{Lease: lease, Owner: "pod-a"})
	b := newStore(t, rdb, dedupe.Options{Lease: lease, Owner: "pod-b"})
	key := dedupe.Key("t", "app", "m1")

	claimed := time.Now()
	claim(t, a, key, dedupe.Claimed)
	claim(t, b, key, dedupe.Busy)
	// pod-a dies without releasing; pod-b takes over once the lease runs out.
	eventually(t, 5*time.Second, "pod-b claims after pod-a's lease", func() bool {
		st, err := b.Claim(context.Background(), key)
		if err != nil {
			t.Fatalf("Claim: %v", err)
		}
		return st == dedupe.Claimed
	})
	if waited := time.Since(claimed); waited < lease/2 {
		t.Fatalf("pod-b claimed after %v, before the %v lease could have run out", waited, lease)
	}
	if v, _ := value(t, rdb, key); v != "p:pod-b" {
		t.Fatalf("value = %q, want pod-b's claim", v)
	}
	claim(t, a, key, dedupe.Busy)
}

func TestCompleteTTL(t *testing.T) {
	ctx := context.Background()
	ttl := time.Minute
	rdb := redistest.Start(t)
	a := newStore(t, rdb, dedupe.Options{TTL: ttl, Lease: time.Hour, Owner: "pod-a"})
	b := newStore(t, rdb, dedupe.Options{TTL: ttl, Lease: time.Hour, Owner: "pod-b"})

	cases := map[string]func(key string){
		"own claim":     func(key string) { claim(t, a, key, dedupe.Claimed) },
		"other's claim": func(key string) { claim(t, b, key, dedupe.Claimed) },
		"absent":        func(string) {},
		"already done": func(key string) {
			if err := rdb.Set(ctx, key, "d", time.Second).Err(); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, setup := range cases {
		key := dedupe.Key("t", "app", name)
		setup(key)
		if err := a.Complete(ctx, key); err != nil {
			t.Fatalf("%s: Complete: %v", name, err)
		}
		if v, _ := value(t, rdb, key); v != "d" {
			t.Errorf("%s: value = %q, want done", name, v)
		}
		// Longer than the 1s "already done" expiry and the 1h lease: the TTL replaced both.
		if d := pttl(t, rdb, key); d <= time.Second || d > ttl {
			t.Errorf("%s: PTTL = %v, want in (1s, %v]", name, d, ttl)
		}
	}
}

// pipelineCounter counts SET and DEL commands sent alone and in pipelines.
type pipelineCounter struct {
	mu                sync.Mutex
	single, pipelines int
	pipelined         int
}

func (*pipelineCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *pipelineCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if n := cmd.Name(); n == "set" || n == "del" {
			c.mu.Lock()
			c.single++
			c.mu.Unlock()
		}
		return next(ctx, cmd)
	}
}

func (c *pipelineCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		n := 0
		for _, cmd := range cmds {
			if name := cmd.Name(); name == "set" || name == "del" {
				n++
			}
		}
		if n > 0 {
			c.mu.Lock()
			c.pipelines++
			c.pipelined += n
			c.mu.Unlock()
		}
		return next(ctx, cmds)
	}
}

func (c *pipelineCounter) counts() (single, pipelines, pipelined int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.single, c.pipelines, c.pipelined
}

func TestCompleteAndForgetManyKeysInOneRoundTrip(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t)
	counter := &pipelineCounter{}
	rdb.AddHook(counter)
	ttl := time.Hour
	s := newStore(t, rdb, dedupe.Options{TTL: ttl, Owner: "pod-a"})

	const n = 500
	keys := make([]string, n)
	for i := range keys {
		// Different topics: in a cluster these hash to different slots.
		keys[i] = dedupe.Key("topic-"+strconv.Itoa(i%7), "app", "m"+strconv.Itoa(i))
		if i%2 == 0 {
			claim(t, s, keys[i], dedupe.Claimed)
		}
	}
	if err := s.Complete(ctx, keys...); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if single, pipes, sets := counter.counts(); single != 0 || pipes != 1 || sets != n {
		t.Fatalf("Complete sent %d single commands and %d pipelines of %d SETs, want 0 and 1 of %d", single, pipes, sets, n)
	}
	for _, k := range keys {
		if v, _ := value(t, rdb, k); v != "d" {
			t.Fatalf("%s = %q after Complete, want done", k, v)
		}
		if d := pttl(t, rdb, k); d <= 0 || d > ttl {
			t.Fatalf("%s PTTL = %v, want in (0, %v]", k, d, ttl)
		}
		claim(t, s, k, dedupe.Done)
	}

	if err := s.Forget(ctx, keys...); err != nil {
		t.Fatalf("Forget: %v", err)
	}
	if single, pipes, cmds := counter.counts(); single != 0 || pipes != 2 || cmds != 2*n {
		t.Fatalf("after Forget: %d single commands, %d pipelines, %d commands pipelined; want 0, 2, %d", single, pipes, cmds, 2*n)
	}
	if got := rdb.Exists(ctx, keys...).Val(); got != 0 {
		t.Fatalf("%d keys exist after Forget, want 0", got)
	}

	// No keys: nothing to send.
	if err := s.Complete(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Forget(ctx); err != nil {
		t.Fatal(err)
	}
	if _, pipes, _ := counter.counts(); pipes != 2 {
		t.Fatalf("an empty Complete or Forget sent a pipeline")
	}
}

func TestForget(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t)
	a := newStore(t, rdb, dedupe.Options{Lease: time.Hour, Owner: "pod-a"})
	b := newStore(t, rdb, dedupe.Options{Lease: time.Hour, Owner: "pod-b"})
	done, own, other, absent := dedupe.Key("t", "app", "done"), dedupe.Key("t", "app", "own"),
		dedupe.Key("u", "app", "other"), dedupe.Key("t", "app", "absent")

	claim(t, a, done, dedupe.Claimed)
	if err := a.Complete(ctx, done); err != nil {
		t.Fatal(err)
	}
	claim(t, a, own, dedupe.Claimed)
	claim(t, b, other, dedupe.Claimed)

	// One key alone, then several at once.
	if err := a.Forget(ctx, done); err != nil {
		t.Fatalf("Forget one: %v", err)
	}
	if err := a.Forget(ctx, own, other, absent); err != nil {
		t.Fatalf("Forget many: %v", err)
	}
	for _, k := range []string{done, own, other, absent} {
		if v, ok := value(t, rdb, k); ok {
			t.Errorf("%s = %q after Forget, want absent", k, v)
		}
		// A redriven message is delivered again.
		claim(t, b, k, dedupe.Claimed)
	}
}

// TestClaimRace has goroutines of two owners claim the same ids at once: per
// id exactly one owner wins (its other goroutines re-enter its claim), and the
// other owner only ever sees Busy.
func TestClaimRace(t *testing.T) {
	rdb := redistest.Start(t)
	const ids, perOwner = 200, 4
	owners := []string{"pod-a", "pod-b"}

	type result struct {
		owner int
		id    int
		state dedupe.State
	}
	results := make(chan result, len(owners)*perOwner*ids)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for o, name := range owners {
		s := newStore(t, rdb, dedupe.Options{Lease: time.Hour, Owner: name})
		for g := range perOwner {
			wg.Go(func() {
				<-start
				for i := range ids {
					id := (i + g*ids/perOwner) % ids // spread the starting points
					st, err := s.Claim(context.Background(), dedupe.Key("t", "app", strconv.Itoa(id)))
					if err != nil {
						t.Errorf("Claim: %v", err)
						return
					}
					results <- result{o, id, st}
				}
			})
		}
	}
	close(start)
	wg.Wait()
	close(results)

	var claimed [ids][2]int
	for r := range results {
		switch r.state {
		case dedupe.Claimed:
			claimed[r.id][r.owner]++
		case dedupe.Busy:
		default:
			t.Errorf("id %d: owner %s got %v", r.id, owners[r.owner], r.state)
		}
	}
	for id, c := range claimed {
		winners := 0
		for o := range owners {
			if c[o] > 0 {
				winners++
				if c[o] != perOwner {
					t.Errorf("id %d: winner %s got Claimed %d times, want all %d of its goroutines (re-entrant)", id, owners[o], c[o], perOwner)
				}
			}
		}
		if winners != 1 {
			t.Errorf("id %d: %d owners got Claimed (%v), want exactly 1", id, winners, c)
		}
	}
}

// TestClaimRaceDistinctOwners: with one owner per goroutine, exactly one
// Claimed per id.
func TestClaimRaceDistinctOwners(t *testing.T) {
	rdb := redistest.Start(t)
	const ids, goroutines = 200, 8
	var mu sync.Mutex
	claimed := make(map[int]int)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for g := range goroutines {
		s := newStore(t, rdb, dedupe.Options{Lease: time.Hour, Owner: fmt.Sprintf("pod-%d", g)})
		wg.Go(func() {
			<-start
			for id := range ids {
				st, err := s.Claim(context.Background(), dedupe.Key("t", "app", strconv.Itoa(id)))
				if err != nil {
					t.Errorf("Claim: %v", err)
					return
				}
				if st == dedupe.Claimed {
					mu.Lock()
					claimed[id]++
					mu.Unlock()
				}
			}
		})
	}
	close(start)
	wg.Wait()
	for id := range ids {
		if claimed[id] != 1 {
			t.Errorf("id %d claimed %d times, want 1", id, claimed[id])
		}
	}
}

func TestRedisDown(t *testing.T) {
	srv := redistest.StartServer(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { rdb.Close() })
	s := newStore(t, rdb, dedupe.Options{Owner: "pod-a"})
	key := dedupe.Key("t", "app", "m1")
	srv.Stop(t)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := s.Claim(ctx, key)
	if err == nil {
		t.Fatalf("Claim with Redis down: no error, state %v", st)
	}
	if st != dedupe.Busy {
		t.Fatalf("Claim with Redis down returned %v with the error, want Busy (never Claimed)", st)
	}
	if errors.As(err, new(redis.Error)) {
		t.Fatalf("Claim with Redis down: %v is a Redis reply, want a connection error", err)
	}
	if err := s.Complete(ctx, key); err == nil {
		t.Fatal("Complete with Redis down: no error")
	}
	if err := s.Complete(ctx, key, key+"2"); err == nil {
		t.Fatal("Complete of two keys with Redis down: no error")
	}
	if err := s.Release(ctx, key); err == nil {
		t.Fatal("Release with Redis down: no error")
	}
	if err := s.Forget(ctx, key, key+"2"); err == nil {
		t.Fatal("Forget with Redis down: no error")
	}
	if _, _, err := dedupe.CheckEvictionPolicy(ctx, rdb); err == nil {
		t.Fatal("CheckEvictionPolicy with Redis down: no error")
	}
}

// TestScriptCacheLost: a restarted Redis has no scripts cached; EVALSHA
// answers NOSCRIPT and the store falls back to EVAL.
func TestScriptCacheLost(t *testing.T) {
	ctx := context.Background()
	for _, how := range []string{"restart", "script flush"} {
		t.Run(how, func(t *testing.T) {
			srv := redistest.StartServer(t)
			rdb := srv.Client(t)
			a := newStore(t, rdb, dedupe.Options{Lease: time.Hour, Owner: "pod-a"})
			b := newStore(t, rdb, dedupe.Options{Lease: time.Hour, Owner: "pod-b"})
			k1, k2 := dedupe.Key("t", "app", "m1"), dedupe.Key("t", "app", "m2")
			claim(t, a, k1, dedupe.Claimed)
			if err := a.Release(ctx, k1); err != nil {
				t.Fatal(err)
			}

			if cached := scriptsCached(t, rdb); cached != 2 {
				t.Fatalf("%d of 2 scripts cached after first use, want 2", cached)
			}

			if how == "restart" {
				srv.Restart(t)
			} else if err := rdb.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			evals := &evalCounter{}
			rdb.AddHook(evals)

			// go-redis reconnects after the restart; allow it a few tries.
			eventually(t, 5*time.Second, "Claim after "+how, func() bool {
				st, err := a.Claim(ctx, k2)
				return err == nil && st == dedupe.Claimed
			})
			claim(t, b, k2, dedupe.Busy)
			if err := a.Release(ctx, k2); err != nil {
				t.Fatalf("Release after %s: %v", how, err)
			}
			if _, ok := value(t, rdb, k2); ok {
				t.Fatal("Release after a flushed cache left the key")
			}
			if n := evals.count(); n != 2 {
				t.Fatalf("%d EVAL fallbacks, want 2 (one per script)", n)
			}
			if cached := scriptsCached(t, rdb); cached != 2 {
				t.Fatalf("%d of 2 scripts cached after the fallback, want 2", cached)
			}
		})
	}
}

func scriptsCached(t *testing.T, rdb *redis.Client) int {
	t.Helper()
	// After a restart go-redis may need a moment to reconnect.
	var loaded []bool
	eventually(t, 5*time.Second, "SCRIPT EXISTS", func() bool {
		var err error
		loaded, err = rdb.ScriptExists(context.Background(), dedupe.ScriptHashes...).Result()
		return err == nil
	})
	n := 0
	for _, l := range loaded {
		if l {
			n++
		}
	}
	return n
}

// evalCounter counts EVAL commands (the fallback of EVALSHA).
type evalCounter struct {
	mu sync.Mutex
	n  int
}

func (*evalCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *evalCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "eval" {
			c.mu.Lock()
			c.n++
			c.mu.Unlock()
		}
		return next(ctx, cmd)
	}
}

func (*evalCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (c *evalCounter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// TestErrorsKeepRedisReplies: errors wrap go-redis's, so callers match them
// with errors.Is / errors.As / redis.HasErrorPrefix, never by their text.
func TestErrorsKeepRedisReplies(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t)
	s := newStore(t, rdb, dedupe.Options{Owner: "pod-a"})

	wrongType := dedupe.Key("t", "app", "hash")
	if err := rdb.HSet(ctx, wrongType, "f", "v").Err(); err != nil {
		t.Fatal(err)
	}
	st, err := s.Claim(ctx, wrongType)
	if !redis.HasErrorPrefix(err, "WRONGTYPE") {
		t.Fatalf("Claim of a hash: %v, want a WRONGTYPE redis error", err)
	}
	if st != dedupe.Busy {
		t.Fatalf("Claim of a hash returned %v, want Busy", st)
	}
	if err := s.Release(ctx, wrongType); !redis.HasErrorPrefix(err, "WRONGTYPE") {
		t.Fatalf("Release of a hash: %v, want a WRONGTYPE redis error", err)
	}

	foreign := dedupe.Key("t", "app", "foreign")
	if err := rdb.Set(ctx, foreign, "something else", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	st, err = s.Claim(ctx, foreign)
	if !errors.Is(err, dedupe.ErrUnknownValue) || st != dedupe.Busy {
		t.Fatalf("Claim of a foreign value = %v, %v; want Busy, ErrUnknownValue", st, err)
	}
	if v, _ := value(t, rdb, foreign); v != "something else" {
		t.Fatalf("Claim changed a foreign value to %q", v)
	}

	// Our own reads of absent keys go through redis.Nil.
	if _, err := rdb.Get(ctx, dedupe.Key("t", "app", "absent")).Result(); !errors.Is(err, redis.Nil) {
		t.Fatalf("GET absent: %v, want redis.Nil", err)
	}
}

func TestInvalidOptionsFailEveryCall(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t)
	s := dedupe.New(rdb, dedupe.Options{}) // no owner
	key := dedupe.Key("t", "app", "m1")
	if st, err := s.Claim(ctx, key); err == nil || st != dedupe.Busy {
		t.Fatalf("Claim without an owner = %v, %v; want Busy and an error", st, err)
	}
	if err := s.Complete(ctx, key); err == nil {
		t.Fatal("Complete without an owner: no error")
	}
	if err := s.Release(ctx, key); err == nil {
		t.Fatal("Release without an owner: no error")
	}
	if err := s.Forget(ctx, key); err == nil {
		t.Fatal("Forget without an owner: no error")
	}
	if n := rdb.DBSize(ctx).Val(); n != 0 {
		t.Fatalf("an invalid store wrote %d keys", n)
	}
}

func TestCheckEvictionPolicy(t *testing.T) {
	ctx := context.Background()
	t.Run("noeviction", func(t *testing.T) {
		policy, ok, err := dedupe.CheckEvictionPolicy(ctx, redistest.Start(t))
		if err != nil || !ok || policy != "noeviction" {
			t.Fatalf("= %q, %v, %v; want noeviction, true, nil", policy, ok, err)
		}
	})
	t.Run("evicting", func(t *testing.T) {
		rdb := redistest.StartServer(t, "--maxmemory-policy", "allkeys-lru").Client(t)
		policy, ok, err := dedupe.CheckEvictionPolicy(ctx, rdb)
		if err != nil || ok || policy != "allkeys-lru" {
			t.Fatalf("= %q, %v, %v; want allkeys-lru, false, nil", policy, ok, err)
		}
	})
	t.Run("CONFIG renamed away", func(t *testing.T) {
		rdb := redistest.StartServer(t, "--rename-command", "CONFIG", "").Client(t)
		_, ok, err := dedupe.CheckEvictionPolicy(ctx, rdb)
		if ok || !redis.HasErrorPrefix(err, "unknown command") {
			t.Fatalf("ok=%v err=%v; want false and an 'unknown command' redis error", ok, err)
		}
	})
	t.Run("CONFIG denied by ACL", func(t *testing.T) {
		srv := redistest.StartServer(t)
		admin := srv.Client(t)
		if err := admin.Do(ctx, "ACL", "SETUSER", "ferry", "on", ">secret", "~*", "&*", "+@all", "-config").Err(); err != nil {
			t.Fatalf("ACL SETUSER: %v", err)
		}
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, Username: "ferry", Password: "secret"})
		t.Cleanup(func() { rdb.Close() })
		_, ok, err := dedupe.CheckEvictionPolicy(ctx, rdb)
		if ok || !redis.HasErrorPrefix(err, "NOPERM") {
			t.Fatalf("ok=%v err=%v; want false and a NOPERM redis error", ok, err)
		}
		// The same user can still use the store.
		claim(t, newStore(t, rdb, dedupe.Options{Owner: "pod-a"}), dedupe.Key("t", "app", "m1"), dedupe.Claimed)
	})
}
