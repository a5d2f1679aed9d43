package relay

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/redis/go-redis/v9"
)

// WaitError says WAIT confirmed fewer replicas than asked: the batch stays
// in the outbox and is sent again.
type WaitError struct {
	Node      string
	Got, Want int64
}

func (e *WaitError) Error() string {
	return fmt.Sprintf("wait on %s: %d of %d replicas acknowledged", e.Node, e.Got, e.Want)
}

// nodeBatch is the part of a batch whose keys one master serves.
type nodeBatch struct {
	node *redis.Client
	adds []*redis.XAddArgs
}

// sendWaited groups adds by the master of their key and sends each group
// as XADDs + WAIT in one pipeline on that master's own client: WAIT counts
// the writes of the connection it travels on, so it must follow the XADDs
// on it (a ClusterClient pipeline would route the keyless WAIT to any
// node). A node client follows no MOVED or ASK, so every XADD's answer is
// checked, not only WAIT's. The groups run in parallel; any failure fails
// the whole batch (resending what did arrive is absorbed by dedupe).
func (r *Relay) sendWaited(ctx context.Context, adds []*redis.XAddArgs) error {
	groups, err := r.byNode(ctx, adds)
	if err != nil {
		return err
	}
	errs := make([]error, len(groups))
	var wg sync.WaitGroup
	for i, g := range groups {
		wg.Go(func() { errs[i] = r.sendNode(ctx, g) })
	}
	wg.Wait()
	err = errors.Join(errs...)
	if cc, ok := r.rdb.(*redis.ClusterClient); ok && err != nil {
		cc.ReloadState(ctx) // a MOVED or a dead master: learn the new slot map
	}
	return err
}

// byNode splits adds by master node, keeping their order within a node;
// one lookup per key.
func (r *Relay) byNode(ctx context.Context, adds []*redis.XAddArgs) ([]*nodeBatch, error) {
	cc, cluster := r.rdb.(*redis.ClusterClient)
	if !cluster {
		c, ok := r.rdb.(*redis.Client) // standalone, and Sentinel's failover client
		if !ok {
			return nil, fmt.Errorf("relay with wait: unsupported client %T", r.rdb)
		}
		return []*nodeBatch{{node: c, adds: adds}}, nil
	}
	var groups []*nodeBatch
	byKey := make(map[string]*nodeBatch)
	byNode := make(map[*redis.Client]*nodeBatch)
	for _, a := range adds {
		g := byKey[a.Stream]
		if g == nil {
			node, err := cc.MasterForKey(ctx, a.Stream)
			if err != nil {
				return nil, fmt.Errorf("find master for %s: %w", a.Stream, err)
			}
			if g = byNode[node]; g == nil {
				g = &nodeBatch{node: node}
				byNode[node] = g
				groups = append(groups, g)
			}
			byKey[a.Stream] = g
		}
		g.adds = append(g.adds, a)
	}
	return groups, nil
}

// sendNode pipelines one node's XADDs and WAIT on one connection and
// checks every answer.
func (r *Relay) sendNode(ctx context.Context, g *nodeBatch) error {
	pipe := g.node.Pipeline()
	cmds := make([]*redis.StringCmd, len(g.adds))
	for i, a := range g.adds {
		cmds[i] = pipe.XAdd(ctx, a)
	}
	wait := pipe.Do(ctx, "WAIT", r.wait.Replicas, r.wait.Timeout.Milliseconds()) // Pipeliner has no Wait method
	_, err := pipe.Exec(ctx)
	if r.wait.Health != nil {
		r.wait.Health.Observe(err)
	}
	for _, c := range cmds {
		if c.Err() != nil {
			return fmt.Errorf("xadd %s on %s: %w", c.Args()[1], g.node.Options().Addr, c.Err())
		}
	}
	acked, err := wait.Int64()
	if err != nil {
		return fmt.Errorf("wait on %s: %w", g.node.Options().Addr, err)
	}
	r.metrics.RelayWaitReplicas.Observe(float64(acked))
	if acked < int64(r.wait.Replicas) {
		return &WaitError{Node: g.node.Options().Addr, Got: acked, Want: int64(r.wait.Replicas)}
	}
	return nil
}
