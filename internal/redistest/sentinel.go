package redistest

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelOptions configure StartSentinel; the zero value is a plain set
// monitoring master "ferry", down after one second.
type SentinelOptions struct {
	// Auth protects the data nodes (primary and replicas); the Sentinels
	// authenticate to them with it (sentinel auth-user / auth-pass).
	Auth
	// SentinelPassword, when set, is the Sentinels' own requirepass
	// (go-redis: FailoverOptions.SentinelPassword, the URL's userinfo).
	SentinelPassword string
	// MasterName is the monitored name; "" means "ferry".
	MasterName string
	// DownAfter is sentinel down-after-milliseconds; zero means one second.
	DownAfter time.Duration
}

// Sentinel is a running Sentinel-managed set owned by a test: one primary
// and two replicas, watched by three Sentinels with quorum 2.
type Sentinel struct {
	// MasterName is the name the Sentinels monitor.
	MasterName string
	// Data are the three data nodes, the initial primary first; which one is
	// primary changes with failovers (ask Primary).
	Data []*Server
	// Sentinels are the three redis-server --sentinel processes.
	Sentinels []*Server
	// Client is a failover client (redis.NewFailoverClient) over the
	// Sentinels, closed when the test ends.
	Client *redis.Client

	opts SentinelOptions
	tls  *tls.Config
}

// StartSentinel runs a primary, two replicas (--replicaof) and three
// Sentinels with a generated sentinel.conf, and waits until every Sentinel
// knows the primary, both replicas and the two other Sentinels, and the
// replicas are in sync. Everything stops when the test ends.
func StartSentinel(t testing.TB, opts SentinelOptions) *Sentinel {
	t.Helper()
	if opts.MasterName == "" {
		opts.MasterName = "ferry"
	}
	if opts.DownAfter <= 0 {
		opts.DownAfter = time.Second
	}
	s := &Sentinel{MasterName: opts.MasterName, opts: opts, tls: opts.tlsConfig(t)}
	primary := startNode(t, opts.Auth)
	host, port, _ := net.SplitHostPort(primary.Addr)
	s.Data = []*Server{primary}
	for range 2 {
		s.Data = append(s.Data, startNode(t, opts.Auth, "--replicaof", host, port))
	}
	waitFor(t, 30*time.Second, "replicas in sync", func() error { return s.inSync(primary) })

	for range 3 {
		s.Sentinels = append(s.Sentinels, s.startSentinel(t, primary))
	}
	s.WaitHealthy(t)
	s.Client = redis.NewFailoverClient(s.FailoverOptions())
	t.Cleanup(func() { s.Client.Close() })
	return s
}

// startSentinel runs one Sentinel monitoring primary.
func (s *Sentinel) startSentinel(t testing.TB, primary *Server) *Server {
	t.Helper()
	host, port, _ := net.SplitHostPort(primary.Addr)
	name := s.MasterName
	conf := []string{
		fmt.Sprintf("sentinel monitor %s %s %s 2", name, host, port),
		fmt.Sprintf("sentinel down-after-milliseconds %s %d", name, s.opts.DownAfter.Milliseconds()),
		fmt.Sprintf("sentinel failover-timeout %s %d", name, 3*s.opts.DownAfter.Milliseconds()),
		fmt.Sprintf("sentinel parallel-syncs %s 2", name),
	}
	if s.opts.Password != "" {
		conf = append(conf, fmt.Sprintf("sentinel auth-pass %s %s", name, s.opts.Password))
		if s.opts.Username != "" {
			conf = append(conf, fmt.Sprintf("sentinel auth-user %s %s", name, s.opts.Username))
		}
	}
	if p := s.opts.SentinelPassword; p != "" {
		conf = append(conf, "requirepass "+p, "sentinel sentinel-pass "+p)
	}
	if s.opts.TLS != nil {
		conf = append(conf, "tls-replication yes") // Sentinels reach the data nodes over TLS
	}
	var n *Server
	if s.opts.TLS != nil {
		n = newTLSServer(t, s.opts.TLS, []string{"--sentinel"})
	} else {
		n = newServer(t, []string{"--sentinel"})
	}
	n.conf = filepath.Join(n.Dir, "sentinel.conf") // Sentinel rewrites it: its own copy
	if err := os.WriteFile(n.conf, []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
		t.Fatalf("write sentinel.conf: %v", err)
	}
	n.launch(t)
	return n
}

// FailoverOptions are go-redis options for a failover client over the
// three Sentinels, with the set's credentials and TLS configuration.
func (s *Sentinel) FailoverOptions() *redis.FailoverOptions {
	addrs := make([]string, len(s.Sentinels))
	for i, n := range s.Sentinels {
		addrs[i] = n.Addr
	}
	return &redis.FailoverOptions{
		MasterName:       s.MasterName,
		SentinelAddrs:    addrs,
		SentinelPassword: s.opts.SentinelPassword,
		Username:         s.opts.Username,
		Password:         s.opts.Password,
		TLSConfig:        s.tls.Clone(),
	}
}

// URL returns the set's URL in go-redis ParseFailoverURL form:
// redis://[:sentinel-password@]s1?addr=s2&addr=s3&master_name=NAME, with
// &username=…&password=… for the data nodes when they have a password
// (rediss:// with TLS; the CA is the caller's to add).
func (s *Sentinel) URL() string {
	u := url.URL{Scheme: s.opts.scheme(), Host: s.Sentinels[0].Addr}
	if s.opts.SentinelPassword != "" {
		u.User = url.UserPassword("", s.opts.SentinelPassword)
	}
	q := url.Values{}
	for _, n := range s.Sentinels[1:] {
		q.Add("addr", n.Addr)
	}
	q.Set("master_name", s.MasterName)
	if s.opts.Password != "" {
		q.Set("password", s.opts.Password)
		if s.opts.Username != "" {
			q.Set("username", s.opts.Username)
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// NodeClient returns a plain client for one data node or Sentinel,
// closed when the test ends.
func (s *Sentinel) NodeClient(t testing.TB, n *Server) *redis.Client {
	t.Helper()
	cl := s.client(n)
	t.Cleanup(func() { cl.Close() })
	return cl
}

// client returns a client for a data node or a Sentinel, for the caller to close.
func (s *Sentinel) client(n *Server) *redis.Client {
	for _, sn := range s.Sentinels {
		if sn == n {
			return redis.NewClient(&redis.Options{
				Addr: n.Addr, Password: s.opts.SentinelPassword, TLSConfig: s.tls,
				MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: 5 * time.Second,
			})
		}
	}
	return s.opts.nodeClient(n.Addr, s.tls)
}

// try runs one command on a data node or a Sentinel.
func (s *Sentinel) try(n *Server, args ...any) (any, error) {
	cl := s.client(n)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return cl.Do(ctx, args...).Result()
}

// data returns the data node listening on addr, or nil.
func (s *Sentinel) data(addr string) *Server {
	for _, n := range s.Data {
		if n.Addr == addr {
			return n
		}
	}
	return nil
}

// reportedPrimary returns the primary's address as one Sentinel reports it.
func (s *Sentinel) reportedPrimary(sn *Server) (string, error) {
	v, err := s.try(sn, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", s.MasterName)
	if err != nil {
		return "", err
	}
	hp, _ := v.([]any)
	if len(hp) != 2 {
		return "", fmt.Errorf("GET-MASTER-ADDR-BY-NAME = %v", v)
	}
	return net.JoinHostPort(fmt.Sprint(hp[0]), fmt.Sprint(hp[1])), nil
}

// Primary returns the data node that every running Sentinel reports as
// the primary (waiting, at most 30 s, for them to agree).
func (s *Sentinel) Primary(t testing.TB) *Server {
	t.Helper()
	var p *Server
	waitFor(t, 30*time.Second, "Sentinels agree on the primary", func() error {
		var err error
		p, err = s.agreedPrimary()
		return err
	})
	return p
}

func (s *Sentinel) agreedPrimary() (*Server, error) {
	addr := ""
	for _, sn := range s.Sentinels {
		if !sn.running() {
			continue
		}
		a, err := s.reportedPrimary(sn)
		if err != nil {
			return nil, fmt.Errorf("Sentinel %s: %w", sn.Addr, err)
		}
		if addr != "" && a != addr {
			return nil, fmt.Errorf("Sentinels report %s and %s", addr, a)
		}
		addr = a
	}
	p := s.data(addr)
	if p == nil {
		return nil, fmt.Errorf("Sentinels report unknown primary %q", addr)
	}
	return p, nil
}

// Kill stops a data node or a Sentinel with SIGKILL.
func (s *Sentinel) Kill(t testing.TB, n *Server) {
	t.Helper()
	n.Stop(t)
}

// Restart starts a killed node again. A data node other than the current
// primary (a killed primary comes back empty, as a master) is made a replica
// of the current primary at once (see demote). It does not wait for the
// sync: call WaitHealthy.
func (s *Sentinel) Restart(t testing.TB, n *Server) {
	t.Helper()
	n.Restart(t)
	if s.data(n.Addr) != nil {
		s.demote(t, s.Primary(t))
	}
}

// KillPrimary kills the primary with SIGKILL, waits until the Sentinels have
// promoted a replica and the set is healthy again, and returns both nodes.
func (s *Sentinel) KillPrimary(t testing.TB) (killed, promoted *Server) {
	t.Helper()
	killed = s.Primary(t)
	s.Kill(t, killed)
	return killed, s.waitNewPrimary(t, killed)
}

// Failover asks a Sentinel for a failover (SENTINEL FAILOVER, no agreement
// needed, the primary stays up), waits until a replica is primary, demotes
// the old primary at once (see demote) and waits until the set is healthy;
// it returns the old and new primaries.
func (s *Sentinel) Failover(t testing.TB) (old, promoted *Server) {
	t.Helper()
	old = s.Primary(t)
	var sn *Server
	for _, n := range s.Sentinels {
		if n.running() {
			sn = n
			break
		}
	}
	// INPROG or NOGOODSLAVE while a previous failover settles: ask again.
	waitFor(t, 30*time.Second, "SENTINEL FAILOVER accepted", func() error {
		_, err := s.try(sn, "SENTINEL", "FAILOVER", s.MasterName)
		return err
	})
	return old, s.waitNewPrimary(t, old)
}

// waitNewPrimary waits until the Sentinels agree on a primary other than
// old that says it is master, and the set is healthy.
func (s *Sentinel) waitNewPrimary(t testing.TB, old *Server) *Server {
	t.Helper()
	var p *Server
	waitFor(t, 60*time.Second, "a new primary in place of "+old.Addr, func() error {
		var err error
		if p, err = s.agreedPrimary(); err != nil {
			return err
		}
		if p == old {
			return fmt.Errorf("Sentinels still report %s", old.Addr)
		}
		return s.isMaster(p)
	})
	s.demote(t, p)
	s.WaitHealthy(t)
	return p
}

// demote makes every running data node other than primary a replica of it
// with REPLICAOF, as the Sentinels would do 8 to 18 s later (they act on a
// node that still claims to be master only after two of their 10-second
// INFO rounds): until then an old primary that is still up keeps accepting
// writes that the promotion has already orphaned.
func (s *Sentinel) demote(t testing.TB, primary *Server) {
	t.Helper()
	host, port, _ := net.SplitHostPort(primary.Addr)
	for _, n := range s.Data {
		if n == primary || !n.running() || s.isMaster(n) != nil {
			continue
		}
		if _, err := s.try(n, "REPLICAOF", host, port); err != nil {
			t.Fatalf("REPLICAOF %s on %s: %v", primary.Addr, n.Addr, err)
		}
	}
}

func (s *Sentinel) isMaster(n *Server) error {
	v, err := s.try(n, "ROLE")
	if err != nil {
		return err
	}
	if r, _ := v.([]any); len(r) == 0 || r[0] != "master" {
		return fmt.Errorf("%s: ROLE %v", n.Addr, v)
	}
	return nil
}

// inSync reports whether every other running data node is a replica of
// primary with its link up and no sync in progress.
func (s *Sentinel) inSync(primary *Server) error {
	for _, n := range s.Data {
		if n == primary || !n.running() {
			continue
		}
		v, err := s.try(n, "INFO", "replication")
		if err != nil {
			return fmt.Errorf("INFO replication on %s: %w", n.Addr, err)
		}
		info, _ := v.(string)
		host, port, _ := net.SplitHostPort(primary.Addr)
		if infoField(info, "role") != "slave" || infoField(info, "master_host") != host ||
			infoField(info, "master_port") != port || infoField(info, "master_link_status") != "up" ||
			infoField(info, "master_sync_in_progress") != "0" {
			return fmt.Errorf("%s: role:%s master %s:%s link:%s syncing:%s", n.Addr, infoField(info, "role"),
				infoField(info, "master_host"), infoField(info, "master_port"),
				infoField(info, "master_link_status"), infoField(info, "master_sync_in_progress"))
		}
	}
	return nil
}

// WaitHealthy waits (at most 60 s) until the running Sentinels agree on a
// primary that says it is master, every other running data node replicates
// from it in sync, and every running Sentinel counts the running replicas
// and the other running Sentinels with none of them down.
func (s *Sentinel) WaitHealthy(t testing.TB) {
	t.Helper()
	waitFor(t, 60*time.Second, "Sentinel set healthy", s.healthy)
}

func (s *Sentinel) healthy() error {
	p, err := s.agreedPrimary()
	if err != nil {
		return err
	}
	if err := s.isMaster(p); err != nil {
		return err
	}
	if err := s.inSync(p); err != nil {
		return err
	}
	replicas, sentinels := -1, -1 // the primary and this Sentinel are not counted
	for _, n := range s.Data {
		if n.running() {
			replicas++
		}
	}
	for _, n := range s.Sentinels {
		if n.running() {
			sentinels++
		}
	}
	for _, sn := range s.Sentinels {
		if !sn.running() {
			continue
		}
		v, err := s.try(sn, "SENTINEL", "MASTER", s.MasterName)
		if err != nil {
			return fmt.Errorf("SENTINEL MASTER on %s: %w", sn.Addr, err)
		}
		m := fields(v)
		if m["flags"] != "master" {
			return fmt.Errorf("Sentinel %s: master flags %q", sn.Addr, m["flags"])
		}
		if m["num-other-sentinels"] != strconv.Itoa(sentinels) {
			return fmt.Errorf("Sentinel %s knows %s other Sentinels, want %d", sn.Addr, m["num-other-sentinels"], sentinels)
		}
		v, err = s.try(sn, "SENTINEL", "REPLICAS", s.MasterName)
		if err != nil {
			return fmt.Errorf("SENTINEL REPLICAS on %s: %w", sn.Addr, err)
		}
		// Only flags: a Sentinel refreshes a replica's master-link-status
		// from its INFO every 10 s, too slowly to wait for (inSync above
		// asked the replicas themselves).
		up := 0
		list, _ := v.([]any)
		for _, r := range list {
			if f := fields(r); f["flags"] == "slave" {
				up++
			}
		}
		if up != replicas {
			return fmt.Errorf("Sentinel %s sees %d replicas up, want %d", sn.Addr, up, replicas)
		}
	}
	return nil
}

// fields turns a Sentinel reply (a flat list of names and values, or a
// RESP3 map) into a map.
func fields(v any) map[string]string {
	m := make(map[string]string)
	switch x := v.(type) {
	case []any:
		for i := 0; i+1 < len(x); i += 2 {
			m[fmt.Sprint(x[i])] = fmt.Sprint(x[i+1])
		}
	case map[any]any:
		for k, v := range x {
			m[fmt.Sprint(k)] = fmt.Sprint(v)
		}
	}
	return m
}
