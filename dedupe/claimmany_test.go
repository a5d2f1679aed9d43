package dedupe_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/ferry-sidecar/ferry/dedupe"
	"github.com/ferry-sidecar/ferry/internal/redistest"
)

// ClaimMany gives every key the state Claim would, in one pipeline, and
// recovers from a flushed script cache.
func TestClaimMany(t *testing.T) {
	ctx := context.Background()
	srv := redistest.StartServer(t)
	rdb := srv.Client(t)
	a := newStore(t, rdb, dedupe.Options{Lease: time.Hour, Owner: "pod-a"})
	b := newStore(t, rdb, dedupe.Options{Lease: time.Hour, Owner: "pod-b"})

	const n = 60
	keys := make([]string, n)
	want := make([]dedupe.State, n)
	for i := range keys {
		keys[i] = dedupe.Key("topic-"+strconv.Itoa(i%3), "app", "m"+strconv.Itoa(i))
		switch i % 4 {
		case 0: // absent
			want[i] = dedupe.Claimed
		case 1: // done
			claim(t, b, keys[i], dedupe.Claimed)
			if err := b.Complete(ctx, keys[i]); err != nil {
				t.Fatal(err)
			}
			want[i] = dedupe.Done
		case 2: // another owner's
			claim(t, b, keys[i], dedupe.Claimed)
			want[i] = dedupe.Busy
		case 3: // this owner's already
			claim(t, a, keys[i], dedupe.Claimed)
			want[i] = dedupe.Claimed
		}
	}
	if err := rdb.ScriptFlush(ctx).Err(); err != nil { // the fallback must load it again
		t.Fatal(err)
	}
	counter := &evalCounter{}
	rdb.AddHook(counter)
	got, err := a.ClaimMany(ctx, keys...)
	if err != nil {
		t.Fatalf("ClaimMany: %v", err)
	}
	for i := range keys {
		if got[i] != want[i] {
			t.Errorf("ClaimMany state of key %d = %v, want %v", i, got[i], want[i])
		}
	}
	for i, k := range keys {
		v, _ := value(t, rdb, k)
		switch want[i] {
		case dedupe.Claimed:
			if v != "p:pod-a" {
				t.Errorf("%s = %q after ClaimMany, want claimed by pod-a", k, v)
			}
		case dedupe.Busy:
			if v != "p:pod-b" {
				t.Errorf("%s = %q after ClaimMany, want still pod-b's", k, v)
			}
		}
	}
	if c := counter.count(); c != 0 {
		t.Errorf("%d EVAL fallbacks, want 0 (ClaimMany loads the script instead)", c)
	}

	// A value this package did not write: Busy and ErrUnknownValue, the rest valid.
	odd := dedupe.Key("t", "app", "odd")
	if err := rdb.Set(ctx, odd, "something else", 0).Err(); err != nil {
		t.Fatal(err)
	}
	fresh := dedupe.Key("t", "app", "fresh")
	got, err = a.ClaimMany(ctx, odd, fresh)
	if !errors.Is(err, dedupe.ErrUnknownValue) {
		t.Fatalf("ClaimMany with an unknown value: err %v, want ErrUnknownValue", err)
	}
	if got[0] != dedupe.Busy || got[1] != dedupe.Claimed {
		t.Fatalf("ClaimMany states %v, want [busy claimed]", got)
	}

	if got, err := a.ClaimMany(ctx); err != nil || len(got) != 0 {
		t.Fatalf("ClaimMany() = %v, %v; want no states, no error", got, err)
	}

	// Redis down: every state Busy, and an error.
	srv.Stop(t)
	got, err = a.ClaimMany(ctx, keys[0], keys[1])
	if err == nil {
		t.Fatal("ClaimMany with Redis down: no error")
	}
	for i, st := range got {
		if st != dedupe.Busy {
			t.Errorf("ClaimMany with Redis down: state %d = %v, want busy", i, st)
		}
	}
}
