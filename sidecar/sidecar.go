package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/admin"
	"github.com/ferry-sidecar/ferry/apphealth"
	"github.com/ferry-sidecar/ferry/breaker"
	"github.com/ferry-sidecar/ferry/config"
	"github.com/ferry-sidecar/ferry/dedupe"
	"github.com/ferry-sidecar/ferry/delivery"
	"github.com/ferry-sidecar/ferry/internal/redisconn"
	"github.com/ferry-sidecar/ferry/metrics"
	"github.com/ferry-sidecar/ferry/outbox"
	"github.com/ferry-sidecar/ferry/publish"
	"github.com/ferry-sidecar/ferry/relay"
	"github.com/ferry-sidecar/ferry/retention"
	"github.com/ferry-sidecar/ferry/retry"
	"github.com/ferry-sidecar/ferry/tracing"
)

// Version is ferry's version, set at build time with
// -ldflags "-X github.com/ferry-sidecar/ferry/sidecar.Version=…".
var Version = "dev"

// UndrainedError is returned by Run when the shutdown budget ended with
// records still in the outbox; they are kept for the next start.
type UndrainedError struct{ Records int64 }

func (e *UndrainedError) Error() string {
	return fmt.Sprintf("%d outbox records not relayed before the shutdown budget ended; kept for the next start", e.Records)
}

// durableLog is what the sidecar needs of the outbox (tests wrap it).
type durableLog interface {
	publish.Appender
	relay.Log
	Stats() outbox.Stats
	Err() error
	Close() error
}

// Sidecar is one ferry process: publish API, admin API, relay, retention
// and one subscriber per subscription.
type Sidecar struct {
	cfg      config.Config
	log      *slog.Logger
	metrics  *metrics.Metrics
	gatherer prometheus.Gatherer
	outbox   durableLog
	rdb      redis.UniversalClient
	health   *redisconn.Health
	breakers *breaker.Set
	app      *apphealth.Prober
	trimmer  *retention.Trimmer
	topics   retention.Topics // published to; trimmed where no subscriber runs here
	specs    []subscription   // what subs are made from
	subs     []*delivery.Subscriber
	client   *http.Client // deliveries to the app; its idle connections close at shutdown
	publish  *publish.API
	admin    *admin.API
	relay    *relay.Relay
	tracer   *tracing.Tracer // off (no exporter) without an OTLP endpoint

	refreshEvery       time.Duration // lag, status and retention refresh (5s; tests shorten it)
	publishLn, adminLn net.Listener
}

// New builds a sidecar: it opens (and recovers) the outbox and makes the
// Redis client, but connects to nothing yet. reg receives ferry's metrics;
// gatherer serves /metrics.
func New(cfg config.Config, log *slog.Logger, reg prometheus.Registerer, gatherer prometheus.Gatherer) (*Sidecar, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log = log.With("app_id", cfg.AppID)
	specs, err := loadSubscriptions(context.Background(), cfg, log)
	if err != nil {
		return nil, err
	}
	s := &Sidecar{cfg: cfg, log: log, gatherer: gatherer, refreshEvery: 5 * time.Second, specs: specs,
		metrics: metrics.New(reg, Version, topicsOf(specs))}
	s.metrics.OutboxMaxBytes.Set(float64(cfg.OutboxMaxBytes))
	rdb, err := redisconn.New(redisconn.Options{
		URL: cfg.RedisURL, Mode: cfg.RedisMode, Password: cfg.RedisPassword,
		CAFile: cfg.RedisCAFile, CertFile: cfg.RedisCertFile, KeyFile: cfg.RedisKeyFile, PoolSize: 32,
		WaitTimeout: cfg.RedisWaitTimeout,
	})
	if err != nil {
		return nil, redisConfigError(err)
	}
	s.rdb = rdb
	s.health = redisconn.NewHealth(log, func(up bool) { s.metrics.RedisUp.Set(boolFloat(up)) })
	rdb.AddHook(s.health)
	s.breakers = breaker.New(breaker.Settings{
		FailureRatio:        cfg.BreakerFailureRatio,
		MinRequests:         uint32(cfg.BreakerMinRequests),
		ConsecutiveFailures: uint32(cfg.BreakerConsecutiveFailures),
		OpenTimeout:         cfg.BreakerOpenTimeout,
		OnStateChange: func(name string, from, to breaker.State) {
			s.metrics.BreakerState.WithLabelValues(name).Set(float64(to))
			s.log.Warn("breaker state", "topic", name, "from", from.String(), "to", to.String())
		},
	})
	s.app, err = apphealth.New(apphealth.Config{
		URL: cfg.AppURL, Path: cfg.AppHealthPath, Interval: cfg.AppHealthInterval, Threshold: cfg.AppHealthThreshold,
		OnChange: s.appChanged, Logger: log.With("component", "apphealth"),
	})
	if err != nil {
		rdb.Close()
		return nil, &config.VarError{Var: config.Prefix + "APP_HEALTH_PATH", Err: err}
	}
	s.metrics.AppHealthy.Set(s.app.Value())
	s.trimmer = retention.New(rdb, retention.Options{MaxLen: cfg.StreamMaxLen, MaxAge: cfg.StreamMaxAge})
	ob, err := outbox.Open(outbox.Options{Dir: cfg.OutboxDir, MaxBytes: cfg.OutboxMaxBytes, Logger: log.With("component", "outbox")})
	if err != nil {
		rdb.Close()
		return nil, fmt.Errorf("open outbox %s: %w", cfg.OutboxDir, err)
	}
	s.metrics.ObserveOutbox(ob)
	if s.tracer, err = newTracer(cfg, log); err != nil {
		ob.Close()
		rdb.Close()
		return nil, err
	}
	s.buildParts(ob)
	return s, nil
}

// newTracer builds the tracer from the OTEL_* variables; an invalid one is
// a configuration error (exit 2).
func newTracer(cfg config.Config, log *slog.Logger) (*tracing.Tracer, error) {
	tr, err := tracing.New(context.Background(), tracing.Settings{
		ServiceName: cfg.AppID, ServiceVersion: Version, InstanceID: cfg.Consumer, Logger: log.With("component", "tracing"),
	})
	var verr *tracing.VarError
	if errors.As(err, &verr) {
		return nil, &config.VarError{Var: verr.Var, Err: verr.Err}
	}
	return tr, err
}

// buildParts makes the parts that use the outbox.
func (s *Sidecar) buildParts(ob durableLog) {
	cfg := s.cfg
	s.outbox = ob
	s.publish = publish.New(publish.Options{
		AppID: cfg.AppID, Token: cfg.APIToken, MaxBodyBytes: cfg.MaxBodyBytes, OutboxMaxBytes: cfg.OutboxMaxBytes,
		Rate: cfg.PublishRate, Burst: config.Burst(cfg.PublishRate, cfg.PublishBurst),
		Topics: cfg.PublishTopics, MaxTopicLabels: cfg.MetricsMaxTopics, Tracer: s.tracer, PubsubName: cfg.PubsubName,
	}, ob, s.metrics, s.log)
	s.relay = relay.New(ob, s.rdb, s.metrics, &s.topics, s.tracer, s.log.With("component", "relay"),
		relay.Wait{Replicas: cfg.RedisWaitReplicas, Timeout: cfg.RedisWaitTimeout, Health: s.health})
	s.client = delivery.NewClient(cfg.DeliveryConcurrency * max(1, len(s.specs)))
	s.subs = s.subscribers()
	parts := admin.Parts{Outbox: ob, Redis: s.health, Breakers: s.breakers, AppHealth: s.app, Gatherer: s.gatherer}
	for _, sub := range s.subs {
		parts.Subscriptions = append(parts.Subscriptions, sub)
	}
	s.admin = admin.New(admin.Options{AppID: cfg.AppID, Token: cfg.AdminToken, OutboxMaxBytes: cfg.OutboxMaxBytes}, parts, s.log)
}

// subscribers makes one delivery.Subscriber per subscription, sharing the
// dedupe store, the breakers and the HTTP client.
func (s *Sidecar) subscribers() []*delivery.Subscriber {
	cfg := s.cfg
	deps := delivery.Deps{
		Redis:    s.rdb,
		Dedupe:   dedupe.New(s.rdb, dedupe.Options{TTL: cfg.DedupeTTL, Lease: cfg.DedupeLease, Owner: cfg.Consumer}),
		Breakers: s.breakers,
		Retry:    retry.Policy{Initial: cfg.RetryInitialInterval, Max: cfg.RetryMaxInterval, MaxAttempts: cfg.RetryMaxAttempts},
		Client:   s.client,
		Metrics:  s.metrics,
		Health:   s.health,
		Trimmer:  s.trimmer,
		App:      s.app,
		Log:      s.log,
		Tracer:   s.tracer,
		Outbox:   s.outbox,
	}
	var subs []*delivery.Subscriber
	for _, sub := range s.specs {
		subs = append(subs, delivery.New(delivery.Options{
			Topic: sub.topic, Route: sub.route, Format: sub.format, DeadLetterTopic: sub.deadLetterTopic,
			AppID: cfg.AppID, Consumer: cfg.Consumer,
			AppURL: cfg.AppURL, AppToken: cfg.AppToken, Concurrency: cfg.DeliveryConcurrency,
			Rate: cfg.DeliveryRate, Burst: config.Burst(cfg.DeliveryRate, cfg.DeliveryBurst),
			Timeout: cfg.DeliveryTimeout, ClaimIdle: cfg.ClaimIdle, DedupeLease: cfg.DedupeLease,
			FromLatest: cfg.SubscribeFrom == "latest", RefreshEvery: s.refreshEvery,
		}, deps))
	}
	return subs
}

// appChanged follows the app's health: the gauge, and on its return the
// breakers let deliveries through at once (closed when a health path said
// so, half-open when only a TCP connect did: one delivery then decides)
// and every delivery parked for the app's absence is retried at once.
func (s *Sidecar) appChanged(healthy bool) {
	s.metrics.AppHealthy.Set(boolFloat(healthy))
	if !healthy {
		return
	}
	for _, sub := range s.subs {
		if s.cfg.AppHealthPath != "" {
			s.breakers.Reset(sub.Topic())
		} else {
			s.breakers.Trial(sub.Topic())
		}
		sub.Resume()
	}
}

// redisConfigError names the FERRY_ variable behind a redisconn option error.
func redisConfigError(err error) error {
	var oe *redisconn.OptionError
	if !errors.As(err, &oe) {
		return err
	}
	name := map[string]string{"URL": "REDIS_URL", "Mode": "REDIS_MODE", "CAFile": "REDIS_CA_FILE", "CertFile": "REDIS_CERT_FILE"}[oe.Option]
	if name == "" {
		name = "REDIS_URL"
	}
	return &config.VarError{Var: config.Prefix + name, Err: oe.Err}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
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

// PublishAddr is the publish API's bound address, after Listen.
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
	return newServer(s.publish.Handler(), s.log), newServer(s.admin.Handler(), s.log)
}
