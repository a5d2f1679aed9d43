package redistest

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClusterOptions configure StartCluster; the zero value is a plain cluster
// with a one-second node timeout.
type ClusterOptions struct {
	Auth
	// NodeTimeout is cluster-node-timeout: how long a master must be
	// unreachable before its replica is promoted. Zero means one second.
	NodeTimeout time.Duration
}

// Cluster is a running six-node Redis Cluster (three masters with one
// replica each) owned by a test.
type Cluster struct {
	// Nodes are the six servers, in creation order; which are masters
	// changes with failovers (ask Masters, MasterFor, ReplicaOf).
	Nodes []*Server
	// Client is a ClusterClient seeded with every node, closed when the test ends.
	Client *redis.ClusterClient

	opts ClusterOptions
	tls  *tls.Config       // for clients; nil for plain TCP
	ids  map[string]string // addr → node id (stable across restarts: nodes.conf)
}

// StartCluster runs six redis-servers with cluster-enabled and AOF on, joins
// them with `redis-cli --cluster create … --cluster-replicas 1`, and waits
// until every node reports cluster_state:ok and every replica is in sync.
// Everything stops when the test ends.
func StartCluster(t testing.TB, opts ClusterOptions) *Cluster {
	t.Helper()
	if opts.NodeTimeout <= 0 {
		opts.NodeTimeout = time.Second
	}
	c := &Cluster{opts: opts, tls: opts.tlsConfig(t), ids: make(map[string]string)}
	for range 6 {
		// An explicit bus port: the default, port+10000, may be taken or out of range.
		args := []string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(FreePort(t)),
			"--cluster-node-timeout", strconv.FormatInt(opts.NodeTimeout.Milliseconds(), 10),
			"--appendonly", "yes",
		}
		if opts.TLS != nil {
			args = append(args, "--tls-cluster", "yes")
		}
		c.Nodes = append(c.Nodes, startNode(t, opts.Auth, args...))
	}
	args := []string{"--cluster", "create"}
	for _, n := range c.Nodes {
		args = append(args, n.Addr)
	}
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := redisCLI(t, opts.Auth, args...); err != nil {
		t.Fatalf("create cluster: %v\n%s", err, out)
	}
	for _, n := range c.Nodes {
		c.ids[n.Addr] = c.do(t, n, "CLUSTER", "MYID").(string)
	}
	c.WaitHealthy(t)
	c.Client = redis.NewClusterClient(c.ClientOptions())
	t.Cleanup(func() { c.Client.Close() })
	return c
}

// ClientOptions are go-redis options for a ClusterClient seeded with every
// node, with the cluster's credentials and TLS configuration, reloading the
// slot map every second. (go-redis reloads it on MOVED, ASK and READONLY, and
// otherwise only every ClusterStateReloadInterval, 60 s by default: after a
// master is killed, commands for its slots fail with "connection refused"
// until then.)
func (c *Cluster) ClientOptions() *redis.ClusterOptions {
	return &redis.ClusterOptions{
		Addrs:                      c.Addrs(),
		ClusterStateReloadInterval: time.Second,
		Username:                   c.opts.Username,
		Password:                   c.opts.Password,
		TLSConfig:                  c.tls.Clone(),
	}
}

// Addrs returns the host:port of every node, in creation order.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr
	}
	return addrs
}

// URL returns the seed URL in go-redis ParseClusterURL form,
// redis://[user:password@]h1:p1?addr=h2:p2&addr=h3:p3 (rediss:// with TLS;
// the CA is the caller's to add), naming the first three nodes.
func (c *Cluster) URL() string {
	u := url.URL{Scheme: c.opts.scheme(), User: c.opts.userinfo(), Host: c.Nodes[0].Addr}
	q := url.Values{}
	for _, n := range c.Nodes[1:3] {
		q.Add("addr", n.Addr)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// NodeClient returns a client for one node (no redirects followed), closed
// when the test ends.
func (c *Cluster) NodeClient(t testing.TB, n *Server) *redis.Client {
	t.Helper()
	cl := c.opts.nodeClient(n.Addr, c.tls)
	t.Cleanup(func() { cl.Close() })
	return cl
}

// ID returns the cluster node id of n.
func (c *Cluster) ID(n *Server) string { return c.ids[n.Addr] }

// node returns the server listening on addr ("host:port", a trailing
// "@busport" or ",hostname" ignored), or nil.
func (c *Cluster) node(addr string) *Server {
	addr, _, _ = strings.Cut(addr, "@")
	addr, _, _ = strings.Cut(addr, ",")
	for _, n := range c.Nodes {
		if n.Addr == addr {
			return n
		}
	}
	return nil
}

// do runs one command on one node and fails the test on error.
func (c *Cluster) do(t testing.TB, n *Server, args ...any) any {
	t.Helper()
	v, err := c.try(n, args...)
	if err != nil {
		t.Fatalf("%v on %s: %v", args, n.Addr, err)
	}
	return v
}

// try runs one command on one node.
func (c *Cluster) try(n *Server, args ...any) (any, error) {
	cl := c.opts.nodeClient(n.Addr, c.tls)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return cl.Do(ctx, args...).Result()
}

// clusterNode is one line of CLUSTER NODES.
type clusterNode struct {
	id, addr, masterID string
	master, failed     bool
	slots              [][2]int
}

// view returns n's CLUSTER NODES, parsed.
func (c *Cluster) view(n *Server) ([]clusterNode, error) {
	v, err := c.try(n, "CLUSTER", "NODES")
	if err != nil {
		return nil, err
	}
	s, _ := v.(string)
	var nodes []clusterNode
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			return nil, fmt.Errorf("parse CLUSTER NODES line %q", line)
		}
		addr, _, _ := strings.Cut(f[1], "@")
		cn := clusterNode{id: f[0], addr: addr, masterID: f[3]}
		for _, flag := range strings.Split(f[2], ",") {
			switch flag {
			case "master":
				cn.master = true
			case "fail", "fail?", "noaddr", "handshake":
				cn.failed = true
			}
		}
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") { // a slot being imported or migrated
				continue
			}
			lo, hi, ok := strings.Cut(r, "-")
			if !ok {
				hi = lo
			}
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("parse slot range %q", r)
			}
			cn.slots = append(cn.slots, [2]int{a, b})
		}
		nodes = append(nodes, cn)
	}
	return nodes, nil
}

// aView returns the CLUSTER NODES of the first running node that answers.
func (c *Cluster) aView(t testing.TB) []clusterNode {
	t.Helper()
	var last error
	for _, n := range c.Nodes {
		if !n.running() {
			continue
		}
		v, err := c.view(n)
		if err == nil {
			return v
		}
		last = err
	}
	t.Fatalf("no running cluster node answers CLUSTER NODES: %v", last)
	return nil
}

// SlotOwner returns the master that serves slot, as a running node sees it.
func (c *Cluster) SlotOwner(t testing.TB, slot int) *Server {
	t.Helper()
	for _, cn := range c.aView(t) {
		for _, r := range cn.slots {
			if r[0] <= slot && slot <= r[1] {
				if n := c.node(cn.addr); n != nil {
					return n
				}
			}
		}
	}
	t.Fatalf("no node serves slot %d", slot)
	return nil
}

// MasterFor returns the master that serves key's slot.
func (c *Cluster) MasterFor(t testing.TB, key string) *Server {
	t.Helper()
	return c.SlotOwner(t, Slot(key))
}

// Masters returns the masters that serve slots, in creation order.
func (c *Cluster) Masters(t testing.TB) []*Server {
	t.Helper()
	var ms []*Server
	for _, cn := range c.aView(t) {
		if cn.master && len(cn.slots) > 0 {
			ms = append(ms, c.node(cn.addr))
		}
	}
	slices.SortFunc(ms, func(a, b *Server) int { return slices.Index(c.Nodes, a) - slices.Index(c.Nodes, b) })
	return ms
}

// ReplicaOf returns a running replica of master, or nil when it has none.
func (c *Cluster) ReplicaOf(t testing.TB, master *Server) *Server {
	t.Helper()
	for _, cn := range c.aView(t) {
		if !cn.master && cn.masterID == c.ID(master) && !cn.failed {
			if n := c.node(cn.addr); n != nil && n.running() {
				return n
			}
		}
	}
	return nil
}

// Kill stops a node with SIGKILL (no chance to flush or hand over).
func (c *Cluster) Kill(t testing.TB, n *Server) {
	t.Helper()
	n.Stop(t)
}

// Restart starts a killed node again with its data and nodes.conf; it
// rejoins the cluster (a killed master comes back as a replica of the node
// promoted in its place). It does not wait for health: call WaitHealthy.
func (c *Cluster) Restart(t testing.TB, n *Server) {
	t.Helper()
	n.Restart(t)
}

// KillMasterFor kills the master serving key's slot, waits until its replica
// has been promoted and the cluster is healthy, and returns both nodes.
func (c *Cluster) KillMasterFor(t testing.TB, key string) (killed, promoted *Server) {
	t.Helper()
	killed = c.MasterFor(t, key)
	if c.ReplicaOf(t, killed) == nil {
		t.Fatalf("master %s of %q has no running replica to promote", killed.Addr, key)
	}
	c.Kill(t, killed)
	c.WaitHealthy(t)
	promoted = c.MasterFor(t, key)
	if promoted == killed {
		t.Fatalf("slot of %q still served by the killed %s", key, killed.Addr)
	}
	return killed, promoted
}

// Failover promotes a replica with CLUSTER FAILOVER (coordinated with its
// live master: no acknowledged write lost) and waits until it is master and
// the cluster is healthy.
func (c *Cluster) Failover(t testing.TB, replica *Server) {
	t.Helper()
	c.do(t, replica, "CLUSTER", "FAILOVER")
	waitFor(t, 30*time.Second, "replica "+replica.Addr+" promoted", func() error {
		role, err := c.try(replica, "ROLE")
		if err != nil {
			return err
		}
		if r, _ := role.([]any); len(r) == 0 || r[0] != "master" {
			return fmt.Errorf("ROLE %v", role)
		}
		return nil
	})
	c.WaitHealthy(t)
}

// Reshard moves n slots from one master to another with `redis-cli
// --cluster reshard` (redis-cli picks which of from's slots) and waits until
// the cluster is healthy.
func (c *Cluster) Reshard(t testing.TB, from, to *Server, n int) {
	t.Helper()
	out, err := redisCLI(t, c.opts.Auth, "--cluster", "reshard", to.Addr,
		"--cluster-from", c.ID(from), "--cluster-to", c.ID(to),
		"--cluster-slots", strconv.Itoa(n), "--cluster-yes")
	if err != nil {
		t.Fatalf("reshard %d slots %s → %s: %v\n%s", n, from.Addr, to.Addr, err, out)
	}
	c.WaitHealthy(t)
}

// MoveSlot moves one slot, with its keys, to master to, the way redis-cli
// does it (see SlotMove), and waits until every node agrees.
func (c *Cluster) MoveSlot(t testing.TB, slot int, to *Server) {
	t.Helper()
	if m := c.StartSlotMove(t, slot, to); m != nil {
		m.Finish(t)
	}
}

// SlotMove is one slot half-way to another master: between StartSlotMove
// and Finish the source answers ASK for keys it no longer has (so for keys
// already migrated, and for new keys), TRYAGAIN for a multi-key command whose
// keys are split, and MOVED after Finish.
type SlotMove struct {
	c        *Cluster
	slot     int
	from, to *Server
}

// StartSlotMove marks slot IMPORTING on to and MIGRATING on its current
// master, moving no key yet; nil when to already serves it.
func (c *Cluster) StartSlotMove(t testing.TB, slot int, to *Server) *SlotMove {
	t.Helper()
	from := c.SlotOwner(t, slot)
	if from == to {
		return nil
	}
	c.do(t, to, "CLUSTER", "SETSLOT", slot, "IMPORTING", c.ID(from))
	c.do(t, from, "CLUSTER", "SETSLOT", slot, "MIGRATING", c.ID(to))
	return &SlotMove{c: c, slot: slot, from: from, to: to}
}

// Migrate moves up to n of the slot's keys (MIGRATE … KEYS) and returns how
// many it moved; 0 once the source holds none.
func (m *SlotMove) Migrate(t testing.TB, n int) int {
	t.Helper()
	c := m.c
	v := c.do(t, m.from, "CLUSTER", "GETKEYSINSLOT", m.slot, n)
	keys, _ := v.([]any)
	if len(keys) == 0 {
		return 0
	}
	host, port, _ := strings.Cut(m.to.Addr, ":")
	args := []any{"MIGRATE", host, port, "", 0, 10000}
	switch {
	case c.opts.Password == "":
	case c.opts.Username == "":
		args = append(args, "AUTH", c.opts.Password)
	default:
		args = append(args, "AUTH2", c.opts.Username, c.opts.Password)
	}
	args = append(append(args, "KEYS"), keys...)
	c.do(t, m.from, args...)
	return len(keys)
}

// Finish migrates the remaining keys, assigns the slot to the target on
// every master (CLUSTER SETSLOT … NODE) and waits until every node agrees.
func (m *SlotMove) Finish(t testing.TB) {
	t.Helper()
	c := m.c
	for i := 0; m.Migrate(t, 100) > 0; i++ {
		if i > 100_000 {
			t.Fatalf("slot %d: keys keep coming back to %s", m.slot, m.from.Addr)
		}
	}
	c.do(t, m.to, "CLUSTER", "SETSLOT", m.slot, "NODE", c.ID(m.to))
	c.do(t, m.from, "CLUSTER", "SETSLOT", m.slot, "NODE", c.ID(m.to))
	for _, n := range c.Masters(t) {
		if n != m.to && n != m.from && n.running() {
			c.do(t, n, "CLUSTER", "SETSLOT", m.slot, "NODE", c.ID(m.to))
		}
	}
	waitFor(t, 30*time.Second, fmt.Sprintf("every node sees slot %d on %s", m.slot, m.to.Addr), func() error {
		for _, n := range c.Nodes {
			if !n.running() {
				continue
			}
			v, err := c.view(n)
			if err != nil {
				return err
			}
			if owner := ownerIn(v, m.slot); owner != m.to.Addr {
				return fmt.Errorf("%s sees slot %d on %q", n.Addr, m.slot, owner)
			}
		}
		return nil
	})
}

// ownerIn returns the address of the node serving slot in a view, or "".
func ownerIn(v []clusterNode, slot int) string {
	for _, cn := range v {
		for _, r := range cn.slots {
			if r[0] <= slot && slot <= r[1] {
				return cn.addr
			}
		}
	}
	return ""
}

// WaitHealthy waits (at most 60 s) until every running node reports
// cluster_state:ok with all 16384 slots ok, all running nodes agree on who
// serves each slot, no slot is served by a failed or stopped node, no node
// flags a running node as failed or holds an outdated role for it, and every
// running replica's link to its master is up and not syncing.
func (c *Cluster) WaitHealthy(t testing.TB) {
	t.Helper()
	waitFor(t, 60*time.Second, "cluster healthy", c.healthy)
}

// healthy reports why the cluster is not yet usable (nil when it is): one
// list of conditions, read top to bottom, on purpose.
func (c *Cluster) healthy() error {
	master := make(map[string]bool) // running node → its own ROLE says master
	for _, n := range c.Nodes {
		if !n.running() {
			continue
		}
		v, err := c.try(n, "ROLE")
		if err != nil {
			return fmt.Errorf("ROLE on %s: %w", n.Addr, err)
		}
		r, _ := v.([]any)
		master[n.Addr] = len(r) > 0 && r[0] == "master"
	}
	var first []clusterNode
	for _, n := range c.Nodes {
		if !n.running() {
			continue
		}
		v, err := c.try(n, "CLUSTER", "INFO")
		if err != nil {
			return fmt.Errorf("CLUSTER INFO on %s: %w", n.Addr, err)
		}
		info, _ := v.(string)
		if infoField(info, "cluster_state") != "ok" || infoField(info, "cluster_slots_ok") != "16384" {
			return fmt.Errorf("%s: cluster_state:%s cluster_slots_ok:%s", n.Addr,
				infoField(info, "cluster_state"), infoField(info, "cluster_slots_ok"))
		}
		view, err := c.view(n)
		if err != nil {
			return err
		}
		for _, cn := range view {
			s := c.node(cn.addr)
			if s != nil && s.running() && cn.failed {
				return fmt.Errorf("%s still flags running %s as failed", n.Addr, cn.addr)
			}
			if m, ok := master[cn.addr]; ok && m != cn.master {
				return fmt.Errorf("%s has not yet seen %s change role", n.Addr, cn.addr)
			}
			if len(cn.slots) == 0 {
				continue
			}
			if cn.failed || s == nil || !s.running() {
				return fmt.Errorf("%s sees slots on failed or stopped %s", n.Addr, cn.addr)
			}
		}
		if first == nil {
			first = view
		} else {
			for slot := 0; slot < 16384; slot += 97 { // a sample of slots, ends included below
				if a, b := ownerIn(first, slot), ownerIn(view, slot); a != b {
					return fmt.Errorf("nodes disagree on slot %d: %s vs %s", slot, a, b)
				}
			}
			if a, b := ownerIn(first, 16383), ownerIn(view, 16383); a != b {
				return fmt.Errorf("nodes disagree on slot 16383: %s vs %s", a, b)
			}
		}
		v, err = c.try(n, "INFO", "replication")
		if err != nil {
			return fmt.Errorf("INFO replication on %s: %w", n.Addr, err)
		}
		repl, _ := v.(string)
		if infoField(repl, "role") == "slave" &&
			(infoField(repl, "master_link_status") != "up" || infoField(repl, "master_sync_in_progress") != "0") {
			return fmt.Errorf("replica %s: master_link_status:%s master_sync_in_progress:%s", n.Addr,
				infoField(repl, "master_link_status"), infoField(repl, "master_sync_in_progress"))
		}
	}
	return nil
}
