package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/ferry-sidecar/ferry/breaker"
	"github.com/ferry-sidecar/ferry/dedupe"
	"github.com/ferry-sidecar/ferry/outbox"
	"github.com/ferry-sidecar/ferry/retry"
)

// UndrainedError is returned by Run when the shutdown budget ended with
// records still in the outbox; they are kept for the next start.
type UndrainedError struct{ Records int64 }

func (e *UndrainedError) Error() string {
	return fmt.Sprintf("%d outbox records not relayed before the shutdown budget ended; kept for the next start", e.Records)
}

// Sidecar is one ferry process: publish API, admin API, relay and one
// subscriber per subscription.
type Sidecar struct {
	cfg          Config
	log          *slog.Logger
	metrics      *Metrics
	gatherer     prometheus.Gatherer
	outbox       *outbox.Log
	appendRecord func(ctx context.Context, data []byte) error // outbox.Append; tests wrap it to inject disk errors
	outboxErr    func() error                                 // outbox.Err; tests replace it
	rdb          redis.UniversalClient
	redisHealth  *redisHealth
	dedupe       *dedupe.Store
	breakers     *breaker.Set
	retryPolicy  retry.Policy
	redisBackoff retry.Policy
	appClient    *http.Client
	appBase      string
	relay        *relay
	subs         []*subscriber

	published      publishedTopics
	publishLimiter *rate.Limiter
	shuttingDown   atomic.Bool
	ready          atomic.Bool
	now            func() time.Time
	refreshEvery   time.Duration // lag, status and retention refresh (5s; tests shorten it)
	trimRounds     atomic.Int64  // stream trim rounds done (all topics), for tests

	publishLn, adminLn net.Listener
}

// New builds a sidecar: it opens (and recovers) the outbox and makes the
// Redis client, but connects to nothing yet. reg receives ferry's metrics;
// gatherer serves /metrics.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer, gatherer prometheus.Gatherer) (*Sidecar, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log = log.With("app_id", cfg.AppID)
	var topics []string
	for _, sub := range cfg.Subs() {
		topics = append(topics, sub.Topic)
	}
	s := &Sidecar{
		cfg:          cfg,
		log:          log,
		metrics:      NewMetrics(reg, topics),
		gatherer:     gatherer,
		retryPolicy:  retry.Policy{Initial: cfg.RetryInitialInterval, Max: cfg.RetryMaxInterval, MaxAttempts: cfg.RetryMaxAttempts},
		redisBackoff: retry.Policy{Initial: 100 * time.Millisecond, Max: 5 * time.Second, MaxAttempts: 1 << 30},
		appClient:    newAppClient(cfg),
		appBase:      strings.TrimRight(cfg.AppURL, "/"),
		now:          time.Now,
		refreshEvery: 5 * time.Second,
	}
	if cfg.PublishRate > 0 {
		s.publishLimiter = rate.NewLimiter(rate.Limit(cfg.PublishRate), burst(cfg.PublishRate, cfg.PublishBurst))
	}
	s.breakers = breaker.New(breaker.Settings{
		FailureRatio: cfg.BreakerFailureRatio,
		MinRequests:  uint32(cfg.BreakerMinRequests),
		OpenTimeout:  cfg.BreakerOpenTimeout,
		OnStateChange: func(name string, from, to breaker.State) {
			s.metrics.BreakerState.WithLabelValues(name).Set(float64(to))
			s.log.Warn("breaker state", "topic", name, "from", from.String(), "to", to.String())
		},
	})
	rdb, err := newRedis(cfg)
	if err != nil {
		return nil, err
	}
	s.rdb = rdb
	s.redisHealth = newRedisHealth(s.metrics, log)
	rdb.AddHook(s.redisHealth)
	s.dedupe = dedupe.New(rdb, dedupe.Options{TTL: cfg.DedupeTTL, Lease: cfg.DedupeLease, Owner: cfg.Consumer})

	ob, err := outbox.Open(outbox.Options{Dir: cfg.OutboxDir, MaxBytes: cfg.OutboxMaxBytes, Logger: log.With("component", "outbox")})
	if err != nil {
		rdb.Close()
		return nil, fmt.Errorf("open outbox %s: %w", cfg.OutboxDir, err)
	}
	s.outbox = ob
	s.appendRecord = ob.Append
	s.outboxErr = ob.Err
	s.relay = newRelay(log.With("component", "relay"), ob, rdb, s.metrics, &s.published)
	for _, sub := range cfg.Subs() {
		s.subs = append(s.subs, newSubscriber(s, sub))
	}
	s.metrics.observeOutbox(ob)
	return s, nil
}

// Listen binds both APIs. Run calls it when it was not called before;
// calling it first lets a caller learn the addresses (tests use port 0).
func (s *Sidecar) Listen() error {
	if s.publishLn != nil {
		return nil
	}
	var err error
	if s.publishLn, err = net.Listen("tcp", s.cfg.ListenAddr); err != nil {
		return fmt.Errorf("listen on FERRY_LISTEN_ADDR %s: %w", s.cfg.ListenAddr, err)
	}
	if s.adminLn, err = net.Listen("tcp", s.cfg.AdminAddr); err != nil {
		s.publishLn.Close()
		s.publishLn = nil
		return fmt.Errorf("listen on FERRY_ADMIN_ADDR %s: %w", s.cfg.AdminAddr, err)
	}
	return nil
}

// PublishAddr and AdminAddr are the bound addresses, after Listen.
func (s *Sidecar) PublishAddr() string { return s.publishLn.Addr().String() }

// AdminAddr is the admin API's bound address, after Listen.
func (s *Sidecar) AdminAddr() string { return s.adminLn.Addr().String() }

func newServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// servers builds the publish and admin HTTP servers, both hardened by newServer.
func (s *Sidecar) servers() (publish, admin *http.Server) {
	return newServer(s.publishHandler(), s.log), newServer(s.adminHandler(), s.log)
}

// Run serves until ctx ends, then shuts down as DESIGN.md says: not ready,
// publish API closed, consumers stop and in-flight deliveries finish, the
// relay drains the outbox, the outbox closes. It returns *UndrainedError
// when records remain.
func (s *Sidecar) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		s.outbox.Close()
		s.rdb.Close()
		return err
	}
	s.logStart()
	publishSrv, adminSrv := s.servers()
	serveErr := make(chan error, 2)
	go func() { serveErr <- publishSrv.Serve(s.publishLn) }()
	go func() { serveErr <- adminSrv.Serve(s.adminLn) }()
	s.ready.Store(true)

	work, stopWork := context.WithCancel(context.Background())
	defer stopWork()
	relayCtx, stopRelay := context.WithCancel(context.Background())
	defer stopRelay()
	hard, stopHard := context.WithCancel(context.Background())
	defer stopHard()

	var wg sync.WaitGroup
	wg.Add(1)
	relayDone := make(chan struct{})
	go func() {
		defer wg.Done()
		defer close(relayDone)
		_ = s.relay.Run(relayCtx)
	}()
	subsDone := make(chan struct{})
	var subsWG sync.WaitGroup
	for _, sub := range s.subs {
		subsWG.Add(1)
		go func() {
			defer subsWG.Done()
			_ = sub.Run(work, hard)
		}()
	}
	go func() { subsWG.Wait(); close(subsDone) }()
	go s.checkRedis(work)
	outboxFailed := make(chan error, 1)
	go s.watchOutbox(work, outboxFailed)
	go s.retentionLoop(work)

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		runErr = fmt.Errorf("serve: %w", err)
	case err := <-outboxFailed:
		// Every publish answers 503 now; a restart reopens and repairs the
		// outbox, so exit loudly (after draining what is there) and let the
		// orchestrator restart ferry.
		s.log.Error("outbox failed: exiting so that it is reopened", "err", err)
		runErr = err
	}

	// Shutdown, within FERRY_SHUTDOWN_TIMEOUT.
	deadline := time.Now().Add(s.cfg.ShutdownBudget)
	budget, cancelBudget := context.WithDeadline(context.Background(), deadline)
	defer cancelBudget()
	s.shuttingDown.Store(true)
	s.log.Info("shutdown started", "budget", s.cfg.ShutdownBudget.String())
	_ = publishSrv.Shutdown(budget)
	stopWork() // consumers stop reading; in-flight deliveries finish until the budget ends
	select {
	case <-subsDone:
	case <-budget.Done():
		stopHard()
		<-subsDone
	}
	remaining := s.drain(budget)
	stopRelay()
	<-relayDone
	wg.Wait()
	_ = adminSrv.Shutdown(budget)
	if err := s.outbox.Close(); err != nil {
		s.log.Error("close outbox", "err", err)
	}
	s.rdb.Close()
	if remaining > 0 {
		s.log.Error("shutdown with records left in the outbox", "records", remaining)
		return errors.Join(runErr, &UndrainedError{Records: remaining})
	}
	s.log.Info("shutdown complete", "records", 0)
	return runErr
}

// drain waits until the relay has emptied the outbox or the budget ends,
// and returns the records left.
func (s *Sidecar) drain(ctx context.Context) int64 {
	for {
		pending := s.outbox.Stats().PendingRecords
		if pending == 0 {
			return 0
		}
		s.log.Info("draining outbox", "records", pending)
		select {
		case <-ctx.Done():
			return s.outbox.Stats().PendingRecords
		case <-s.relay.committed:
		case <-time.After(time.Second):
		}
	}
}

// watchOutbox reports once on failed when the outbox can no longer write
// (outbox.ErrFailed); it checks every second.
func (s *Sidecar) watchOutbox(ctx context.Context, failed chan<- error) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.outboxErr(); err != nil {
				failed <- err
				return
			}
		}
	}
}

// checkRedis pings Redis until it answers once, then checks its
// maxmemory-policy: an evicting policy can drop dedupe keys and pending state.
func (s *Sidecar) checkRedis(ctx context.Context) {
	for attempt := 1; ctx.Err() == nil; attempt++ {
		if err := s.rdb.Ping(ctx).Err(); err == nil {
			break
		}
		if !sleepCtx(ctx, s.redisBackoff.Delay(min(attempt, 20), 0)) {
			return
		}
	}
	policy, ok, err := dedupe.CheckEvictionPolicy(ctx, s.rdb)
	switch {
	case err != nil:
		if redis.HasErrorPrefix(err, "NOPERM") {
			// An ACL without CONFIG GET is the recommended least privilege (docs/security.md).
			s.log.Info("redis maxmemory-policy not readable (CONFIG GET not allowed for this user); make sure it is noeviction")
			break
		}
		s.log.Info("redis maxmemory-policy not readable (CONFIG not allowed); make sure it is noeviction", "err", redactErr(err))
	case !ok:
		s.log.Warn("redis maxmemory-policy evicts keys: dedupe state and pending entries can be lost; set maxmemory-policy noeviction", "maxmemory-policy", policy)
	}
}

// logStart logs the effective configuration without secrets.
func (s *Sidecar) logStart() {
	c := s.cfg
	s.log.Info("ferry starting",
		"version", Version,
		"listen_addr", s.PublishAddr(), "admin_addr", s.AdminAddr(),
		"redis_url", redactURL(c.RedisURL), "app_url", redactURL(c.AppURL),
		"subscriptions", c.Subscriptions, "consumer", c.Consumer,
		"outbox_dir", c.OutboxDir, "outbox_max_bytes", c.OutboxMaxBytes, "max_body_bytes", c.MaxBodyBytes,
		"delivery_timeout", c.DeliveryTimeout.String(), "delivery_concurrency", c.DeliveryConcurrency,
		"delivery_rate", c.DeliveryRate, "publish_rate", c.PublishRate,
		"retry_max_attempts", c.RetryMaxAttempts, "retry_initial_interval", c.RetryInitialInterval.String(), "retry_max_interval", c.RetryMaxInterval.String(),
		"breaker_failure_ratio", c.BreakerFailureRatio, "breaker_min_requests", c.BreakerMinRequests, "breaker_open_timeout", c.BreakerOpenTimeout.String(),
		"dedupe_ttl", c.DedupeTTL.String(), "dedupe_lease", c.DedupeLease.String(), "claim_idle", c.ClaimIdle.String(),
		"subscribe_from", c.SubscribeFrom, "stream_max_len", c.StreamMaxLen, "stream_max_age", c.StreamMaxAge.String(),
		"api_token_set", c.APIToken != "", "app_token_set", c.AppToken != "",
		"shutdown_timeout", c.ShutdownBudget.String())
	if c.APIToken == "" && !isLoopback(s.PublishAddr()) {
		s.log.Warn("FERRY_LISTEN_ADDR is not loopback and FERRY_API_TOKEN is empty: anyone who reaches this port can publish; set FERRY_API_TOKEN or listen on 127.0.0.1",
			"listen_addr", s.PublishAddr())
	}
	if c.APIToken == "" && !isLoopback(s.AdminAddr()) {
		s.log.Warn("FERRY_ADMIN_ADDR is not loopback and FERRY_API_TOKEN is empty: anyone who reaches this port can read status and dead letters, replay and redrive; set FERRY_API_TOKEN or a NetworkPolicy",
			"admin_addr", s.AdminAddr())
	}
	if c.DedupeLease <= c.DeliveryTimeout {
		s.log.Warn("FERRY_DEDUPE_LEASE is not above FERRY_DELIVERY_TIMEOUT: a slow delivery can outlive its claim and another replica may deliver the same message at the same time",
			"dedupe_lease", c.DedupeLease.String(), "delivery_timeout", c.DeliveryTimeout.String())
	}
	if u, err := url.Parse(c.RedisURL); err == nil && u.Query().Get("skip_verify") == "true" {
		s.log.Warn("FERRY_REDIS_URL has skip_verify=true: the Redis server certificate is not verified; remove it and use FERRY_REDIS_CA_FILE")
	}
}

// redactURL drops the password (and user) from a URL (Redis or app).
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable)"
	}
	if u.User != nil {
		u.User = url.User("redacted")
	}
	return u.String()
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
