package dedupe

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/stream"
)

// Defaults applied by New to zero Options fields.
const (
	DefaultTTL   = 24 * time.Hour
	DefaultLease = 30 * time.Second
)

// Values stored under a dedupe key. They are short on purpose: one key per
// delivered message per group lives for the whole TTL.
const (
	doneValue     = "d"
	pendingPrefix = "p:" // followed by the owner
)

// Options configure a Store.
type Options struct {
	// TTL is how long a completed message id is remembered; redeliveries
	// within it are acked without delivering. Zero means DefaultTTL (24h).
	TTL time.Duration
	// Lease is how long an in-progress claim holds before another owner may
	// take it over: it bounds how long a crashed owner delays its messages.
	// It must be longer than one delivery attempt. Zero means DefaultLease (30s).
	Lease time.Duration
	// Owner names the claimant; required. Use a name that is stable across
	// restarts of the same consumer (the pod name), so a restarted container
	// takes its own claims back at once instead of waiting for the lease.
	// Two live consumers must never share an owner name.
	Owner string
}

// Validate reports the first invalid field. Zero durations are valid (they mean
// the defaults); negative durations and positive ones below a millisecond (the
// resolution of Redis expiries) are not.
func (o Options) Validate() error {
	if o.Owner == "" {
		return errors.New("dedupe options: owner is required")
	}
	if err := checkDuration("ttl", o.TTL); err != nil {
		return err
	}
	return checkDuration("lease", o.Lease)
}

func checkDuration(name string, d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("dedupe options: %s %v is negative", name, d)
	}
	if d > 0 && d < time.Millisecond {
		return fmt.Errorf("dedupe options: %s %v is below 1ms", name, d)
	}
	return nil
}

func (o Options) withDefaults() Options {
	if o.TTL == 0 {
		o.TTL = DefaultTTL
	}
	if o.Lease == 0 {
		o.Lease = DefaultLease
	}
	return o
}

// State is the outcome of Claim.
type State int

const (
	// Claimed means the caller now holds the claim: deliver the message, then
	// Complete it on success or Release it on failure.
	Claimed State = iota
	// Done means the message was already delivered: ack it without delivering.
	Done
	// Busy means another live owner is delivering the message: leave it
	// pending and try again later. Claim also returns Busy with every error,
	// so a caller that forgets to check the error still does not deliver.
	Busy
)

// String returns "claimed", "done" or "busy".
func (s State) String() string {
	switch s {
	case Claimed:
		return "claimed"
	case Done:
		return "done"
	case Busy:
		return "busy"
	default:
		return "State(" + strconv.Itoa(int(s)) + ")"
	}
}

// Key returns the Redis key of one consumer group's dedupe state for one
// message: stream.DedupeKey, ferry:{<topic>}:dedupe:<app id>:<message id>.
// The braces make the topic a Redis Cluster hash tag, so a topic's keys
// share its stream's slot.
func Key(topic, appID, msgID string) string { return stream.DedupeKey(topic, appID, msgID) }

// claimScript: absent ⇒ in progress under ARGV[1] for ARGV[2] ms; done ⇒ done;
// in progress under ARGV[1] (the same owner) ⇒ lease refreshed, claimed again;
// in progress under another owner ⇒ busy. Return codes are the State values;
// -1 is a value this package did not write.
var claimScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 0
end
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 0
end
if v == 'd' then
  return 1
end
if string.sub(v, 1, 2) == 'p:' then
  return 2
end
return -1
`)

// releaseScript deletes KEYS[1] only while it holds ARGV[1] (this owner's claim).
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// ErrUnknownValue is returned by Claim when the key holds a value this package
// did not write; the message is left alone.
var ErrUnknownValue = errors.New("dedupe key holds an unknown value")

// Store is the Redis-backed idempotency store of one owner. It is safe for
// concurrent use. Every method is one round trip whatever the number of keys
// (Claim and Release take a second one, once, after Redis lost its scripts).
type Store struct {
	rdb     redis.UniversalClient
	opts    Options
	pending string // the in-progress value of this owner: "p:<owner>"
	ttlMS   int64
	leaseMS int64
	err     error // from Options.Validate: returned by every method
}

// New returns a Store that keeps its state in rdb; zero TTL and Lease take the
// defaults. New does not fail: if opts do not validate, every method returns
// that error (and Claim returns Busy), so call Options.Validate at startup.
// rdb may be a Client, a FailoverClient or a ClusterClient.
func New(rdb redis.UniversalClient, opts Options) *Store {
	opts = opts.withDefaults()
	return &Store{
		rdb:     rdb,
		opts:    opts,
		pending: pendingPrefix + opts.Owner,
		ttlMS:   opts.TTL.Milliseconds(),
		leaseMS: opts.Lease.Milliseconds(),
		err:     opts.Validate(),
	}
}

// Claim takes the message's key for this owner, atomically:
//
//   - absent: it becomes in progress under this owner for the lease ⇒ Claimed;
//   - done ⇒ Done;
//   - in progress under this owner (a restarted container with the same name,
//     or a retry) ⇒ Claimed, with the lease renewed;
//   - in progress under another owner ⇒ Busy; its lease expiring makes the
//     key absent, which is how a dead owner's claims are taken over.
//
// On error the state is Busy: never deliver on an error.
func (s *Store) Claim(ctx context.Context, key string) (State, error) {
	if s.err != nil {
		return Busy, fmt.Errorf("claim dedupe key: %w", s.err)
	}
	// Run sends EVALSHA and falls back to EVAL on NOSCRIPT, so a flushed
	// script cache (a restarted or failed-over Redis) costs one extra call.
	n, err := claimScript.Run(ctx, s.rdb, []string{key}, s.pending, s.leaseMS).Int64()
	if err != nil {
		return Busy, fmt.Errorf("claim dedupe key: %w", err)
	}
	switch st := State(n); st {
	case Claimed, Done, Busy:
		return st, nil
	default:
		return Busy, fmt.Errorf("claim dedupe key: %w", ErrUnknownValue)
	}
}

// ClaimMany is Claim for many keys in one pipelined round trip (plus one
// SCRIPT LOAD after Redis lost its scripts). states[i] is the state of
// keys[i]. A key holding a value this package did not write is Busy and err
// wraps ErrUnknownValue; the other states are valid. On a Redis error every
// state is Busy.
func (s *Store) ClaimMany(ctx context.Context, keys ...string) (states []State, err error) {
	states = make([]State, len(keys))
	for i := range states {
		states[i] = Busy
	}
	if s.err != nil {
		return states, fmt.Errorf("claim dedupe keys: %w", s.err)
	}
	if len(keys) == 0 {
		return states, nil
	}
	run := func() ([]*redis.Cmd, error) {
		cmds := make([]*redis.Cmd, len(keys))
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range keys {
				cmds[i] = claimScript.EvalSha(ctx, p, []string{k}, s.pending, s.leaseMS)
			}
			return nil
		})
		return cmds, err
	}
	cmds, err := run()
	if redis.HasErrorPrefix(err, "NOSCRIPT") {
		if err := claimScript.Load(ctx, s.rdb).Err(); err != nil {
			return states, fmt.Errorf("claim %d dedupe keys: load script: %w", len(keys), err)
		}
		cmds, err = run()
	}
	if err != nil {
		return states, fmt.Errorf("claim %d dedupe keys: %w", len(keys), err)
	}
	unknown := false
	for i, c := range cmds {
		n, err := c.Int64()
		switch st := State(n); {
		case err == nil && (st == Claimed || st == Done || st == Busy):
			states[i] = st
		default:
			unknown = true
		}
	}
	if unknown {
		return states, fmt.Errorf("claim dedupe keys: %w", ErrUnknownValue)
	}
	return states, nil
}

// Complete records the messages as delivered, remembered for the TTL, whatever
// their current state: the app answered 2xx, so even a claim that expired and
// passed to another owner must now read as done. Many keys go in one
// pipelined round trip of single-key commands, which also works across Redis
// Cluster slots. On error some keys may be done and others not; completing
// again is harmless.
func (s *Store) Complete(ctx context.Context, keys ...string) error {
	if s.err != nil {
		return fmt.Errorf("complete dedupe keys: %w", s.err)
	}
	switch len(keys) {
	case 0:
		return nil
	case 1:
		if err := s.rdb.Set(ctx, keys[0], doneValue, s.opts.TTL).Err(); err != nil {
			return fmt.Errorf("complete dedupe key: %w", err)
		}
		return nil
	}
	// A plain SET with an expiry is atomic per key: no script needed, so no
	// NOSCRIPT to recover from inside a pipeline.
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.Set(ctx, k, doneValue, s.opts.TTL)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("complete %d dedupe keys: %w", len(keys), err)
	}
	return nil
}

// Release gives up this owner's claim after a failed attempt, so the next
// attempt (by any owner) can claim at once: a key in progress under this owner
// becomes absent. A key that is done, absent, or claimed by another owner
// (after this owner's lease ran out) is left untouched.
func (s *Store) Release(ctx context.Context, key string) error {
	if s.err != nil {
		return fmt.Errorf("release dedupe key: %w", s.err)
	}
	if err := releaseScript.Run(ctx, s.rdb, []string{key}, s.pending).Err(); err != nil {
		return fmt.Errorf("release dedupe key: %w", err)
	}
	return nil
}

// Forget deletes the keys whatever their state, so the messages are delivered
// again (a redrive). Many keys go in one pipelined round trip of single-key
// DELs, which also works across Redis Cluster slots.
func (s *Store) Forget(ctx context.Context, keys ...string) error {
	if s.err != nil {
		return fmt.Errorf("forget dedupe keys: %w", s.err)
	}
	switch len(keys) {
	case 0:
		return nil
	case 1:
		if err := s.rdb.Del(ctx, keys[0]).Err(); err != nil {
			return fmt.Errorf("forget dedupe key: %w", err)
		}
		return nil
	}
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.Del(ctx, k)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("forget %d dedupe keys: %w", len(keys), err)
	}
	return nil
}

// CheckEvictionPolicy reads the server's maxmemory-policy; ok is true only
// for "noeviction", the one policy under which Redis never drops dedupe keys
// (or stream entries) to make room. err is set when the policy cannot be read,
// typically because CONFIG is renamed away or denied by an ACL (managed Redis
// services do both): the caller should log it and carry on.
func CheckEvictionPolicy(ctx context.Context, rdb redis.UniversalClient) (policy string, ok bool, err error) {
	m, err := rdb.ConfigGet(ctx, "maxmemory-policy").Result()
	if err != nil {
		return "", false, fmt.Errorf("get maxmemory-policy: %w", err)
	}
	// A ClusterClient asks one node; the policy should be the same on all.
	policy, found := m["maxmemory-policy"]
	if !found {
		return "", false, errors.New("get maxmemory-policy: not in the CONFIG GET reply")
	}
	return policy, policy == "noeviction", nil
}
