package admin

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ferry-sidecar/ferry/breaker"
	"github.com/ferry-sidecar/ferry/delivery"
	"github.com/ferry-sidecar/ferry/internal/httpapi"
	"github.com/ferry-sidecar/ferry/internal/redisconn"
	"github.com/ferry-sidecar/ferry/metrics"
	"github.com/ferry-sidecar/ferry/outbox"
	"github.com/ferry-sidecar/ferry/stream"
)

// Subscription is what the admin API needs of one subscription
// (*delivery.Subscriber).
type Subscription interface {
	Topic() string
	Route() string
	RefreshStatus(ctx context.Context) error
	Status() delivery.Status
	DeadLetters(ctx context.Context, limit int64) ([]delivery.DeadLetter, error)
	Redrive(ctx context.Context) (int, error)
	Replay(ctx context.Context, start string) error
}

// Parts are the parts the admin API reports on.
type Parts struct {
	Outbox   interface{ Stats() outbox.Stats }
	Redis    interface{ Up() bool }
	Breakers interface {
		State(name string) breaker.State
	}
	AppHealth     interface{ Healthy() bool } // nil: no app health probe
	Subscriptions []Subscription
	Gatherer      prometheus.Gatherer
}

// Options configure the API.
type Options struct {
	AppID          string
	Token          string // FERRY_ADMIN_TOKEN; empty: /v1/* for loopback callers only
	OutboxMaxBytes int64
}

// API is the admin API.
type API struct {
	opts         Options
	parts        Parts
	log          *slog.Logger
	ready        atomic.Bool
	shuttingDown atomic.Bool
}

// New returns the admin API; it answers /readyz 503 until SetReady.
func New(opts Options, parts Parts, log *slog.Logger) *API {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &API{opts: opts, parts: parts, log: log}
}

// SetReady marks the outbox recovered and both APIs listening.
func (a *API) SetReady() { a.ready.Store(true) }

// SetShuttingDown turns /readyz to 503 for good.
func (a *API) SetShuttingDown() { a.shuttingDown.Store(true) }

// Ready reports whether /readyz answers 200.
func (a *API) Ready() bool { return a.ready.Load() && !a.shuttingDown.Load() }

// Handler serves the admin API.
func (a *API) Handler() http.Handler {
	rt := httpapi.NewRouter()
	guard := a.guard
	rt.Handle("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		httpapi.JSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	rt.Handle("GET /readyz", a.readyz)
	rt.Handle("GET /metrics", promhttp.HandlerFor(a.parts.Gatherer, promhttp.HandlerOpts{EnableOpenMetrics: true}).ServeHTTP)
	rt.Handle("GET /v1/status", guard(a.status))
	rt.Handle("GET /v1/deadletters/{topic}", guard(a.listDeadLetters))
	rt.Handle("POST /v1/deadletters/{topic}/redrive", guard(a.redrive))
	rt.Handle("POST /v1/subscriptions/{topic}/replay", guard(a.replay))
	return rt
}

// guard protects a /v1/* endpoint: the bearer token when one is set,
// otherwise loopback callers only.
func (a *API) guard(h http.HandlerFunc) http.HandlerFunc {
	if a.opts.Token != "" {
		return httpapi.Bearer(a.opts.Token, h)
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if !fromLoopback(r) {
			httpapi.Problem(w, http.StatusForbidden, "remote-admin-needs-token",
				"without FERRY_ADMIN_TOKEN the admin API answers loopback callers only (the pod's own containers); set FERRY_ADMIN_TOKEN to allow remote calls")
			return
		}
		h(w, r)
	}
}

// fromLoopback reports whether r came from a loopback address.
func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

type readiness struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

// readyz is 200 from the moment the outbox is recovered and the APIs
// listen until shutdown begins. Redis being down does not make ferry unready.
func (a *API) readyz(w http.ResponseWriter, r *http.Request) {
	body := readiness{Status: "ready", Checks: map[string]string{"outbox": "ok", "redis": "down"}}
	if a.parts.Redis.Up() {
		body.Checks["redis"] = "up"
	}
	// "full" while the volume is (disk-full) or once there is no room left
	// for a typical event: under 1/16 of the limit, at most 64 KiB.
	max := a.opts.OutboxMaxBytes
	if st := a.parts.Outbox.Stats(); st.DiskFull || max-st.PendingBytes < min(64<<10, max/16) {
		body.Checks["outbox"] = "full"
	}
	code := http.StatusOK
	switch {
	case a.shuttingDown.Load():
		body.Status, code = "shutting_down", http.StatusServiceUnavailable
	case !a.ready.Load():
		body.Status, code = "starting", http.StatusServiceUnavailable
	}
	httpapi.JSON(w, code, body)
}

// Status is the body of GET /v1/status.
type Status struct {
	AppID         string               `json:"app_id"`
	Redis         RedisStatus          `json:"redis"`
	Outbox        OutboxStatus         `json:"outbox"`
	App           *AppStatus           `json:"app,omitempty"`
	Subscriptions []SubscriptionStatus `json:"subscriptions"`
}

// RedisStatus says whether the last Redis command succeeded.
type RedisStatus struct {
	Up bool `json:"up"`
}

// OutboxStatus describes the records not yet relayed.
type OutboxStatus struct {
	PendingRecords   int64   `json:"pending_records"`
	Bytes            int64   `json:"bytes"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
}

// AppStatus says whether the app's health probe passes.
type AppStatus struct {
	Healthy bool `json:"healthy"`
}

// SubscriptionStatus describes one subscription's consumer group.
type SubscriptionStatus struct {
	Topic         string `json:"topic"`
	Route         string `json:"route"`
	Breaker       string `json:"breaker"`
	Pending       int64  `json:"pending"`
	Lag           int64  `json:"lag"`
	LastDelivered string `json:"last_delivered_id"`
}

func (a *API) status(w http.ResponseWriter, r *http.Request) {
	// Fresh figures when Redis answers quickly; the last ones (at most a refresh old) otherwise.
	ctx, cancel := context.WithTimeout(r.Context(), 500*time.Millisecond)
	defer cancel()
	for _, sub := range a.parts.Subscriptions {
		_ = sub.RefreshStatus(ctx)
	}
	httpapi.JSON(w, http.StatusOK, a.Status())
}

// Status reports the sidecar's state as GET /v1/status shows it.
func (a *API) Status() Status {
	st := a.parts.Outbox.Stats()
	out := Status{
		AppID:         a.opts.AppID,
		Redis:         RedisStatus{Up: a.parts.Redis.Up()},
		Outbox:        OutboxStatus{PendingRecords: st.PendingRecords, Bytes: st.PendingBytes, OldestAgeSeconds: metrics.OldestAge(st)},
		Subscriptions: []SubscriptionStatus{},
	}
	if a.parts.AppHealth != nil {
		out.App = &AppStatus{Healthy: a.parts.AppHealth.Healthy()}
	}
	for _, sub := range a.parts.Subscriptions {
		ss := sub.Status()
		out.Subscriptions = append(out.Subscriptions, SubscriptionStatus{
			Topic: sub.Topic(), Route: sub.Route(), Breaker: a.parts.Breakers.State(sub.Topic()).String(),
			Pending: ss.Pending, Lag: ss.Lag, LastDelivered: ss.LastDelivered,
		})
	}
	return out
}

// subscription finds the subscription of the {topic} path value, or answers 404.
func (a *API) subscription(w http.ResponseWriter, r *http.Request) Subscription {
	topic := r.PathValue("topic")
	for _, sub := range a.parts.Subscriptions {
		if sub.Topic() == topic {
			return sub
		}
	}
	httpapi.Problem(w, http.StatusNotFound, "unknown-topic", fmt.Sprintf("this app (%s) does not subscribe to topic %q", a.opts.AppID, topic))
	return nil
}

func (a *API) listDeadLetters(w http.ResponseWriter, r *http.Request) {
	sub := a.subscription(w, r)
	if sub == nil {
		return
	}
	limit := int64(100)
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 || n > 1000 {
			httpapi.Problem(w, http.StatusBadRequest, "invalid-limit", "limit must be a whole number from 1 to 1000")
			return
		}
		limit = n
	}
	dls, err := sub.DeadLetters(r.Context(), limit)
	if err != nil {
		a.redisProblem(w, err)
		return
	}
	httpapi.JSON(w, http.StatusOK, map[string][]delivery.DeadLetter{"deadletters": dls})
}

func (a *API) redrive(w http.ResponseWriter, r *http.Request) {
	sub := a.subscription(w, r)
	if sub == nil {
		return
	}
	n, err := sub.Redrive(r.Context())
	if err != nil {
		a.redisProblem(w, err)
		return
	}
	a.log.Info("dead letters redriven", "topic", sub.Topic(), "app_id", a.opts.AppID, "count", n)
	httpapi.JSON(w, http.StatusOK, map[string]int{"redriven": n})
}

type replayRequest struct {
	From string `json:"from"`
}

func (a *API) replay(w http.ResponseWriter, r *http.Request) {
	sub := a.subscription(w, r)
	if sub == nil {
		return
	}
	var req replayRequest
	if err := httpapi.DecodeStrict(http.MaxBytesReader(w, r.Body, 4<<10), &req); err != nil {
		httpapi.Problem(w, http.StatusBadRequest, "invalid-body", err.Error())
		return
	}
	start, err := stream.ParseFrom(req.From)
	if err != nil {
		httpapi.Problem(w, http.StatusBadRequest, "invalid-from", err.Error())
		return
	}
	if err := sub.Replay(r.Context(), start); err != nil {
		a.redisProblem(w, err)
		return
	}
	a.log.Info("replay", "topic", sub.Topic(), "app_id", a.opts.AppID, "from", start)
	httpapi.JSON(w, http.StatusOK, map[string]string{"replayed_from": start})
}

// redisProblem answers 503 for an admin call that needed Redis.
func (a *API) redisProblem(w http.ResponseWriter, err error) {
	a.log.Warn("admin redis call", "err", redisconn.RedactErr(err))
	httpapi.RetryAfter(w, 0)
	httpapi.Problem(w, http.StatusServiceUnavailable, "redis-unavailable", "Redis did not answer; try again")
}
