package metrics

import (
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/ferry-sidecar/ferry/outbox"
)

// latencyBuckets span sub-millisecond publishes to deliveries of tens of seconds.
var latencyBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// Metrics holds every ferry_* family of DESIGN.md. Label values are bounded:
// topics come from configuration or validated requests, never a message id.
type Metrics struct {
	PublishRequests   *prometheus.CounterVec
	PublishDuration   prometheus.Histogram
	OutboxPending     prometheus.GaugeFunc // these five read the outbox's own Stats at scrape time
	OutboxBytes       prometheus.GaugeFunc
	OutboxOldestAge   prometheus.GaugeFunc
	OutboxCorruptions prometheus.CounterFunc
	OutboxSyncs       prometheus.CounterFunc
	RelayRecords      *prometheus.CounterVec
	RedisUp           prometheus.Gauge
	DeliveryAttempts  *prometheus.CounterVec
	DeliveryDuration  *prometheus.HistogramVec
	EndToEnd          *prometheus.HistogramVec
	DeadLetters       *prometheus.CounterVec
	DedupeHits        *prometheus.CounterVec
	BreakerState      *prometheus.GaugeVec
	Throttled         *prometheus.CounterVec
	ConsumerLag       *prometheus.GaugeVec
	RetentionLagging  *prometheus.GaugeVec
	BuildInfo         *prometheus.GaugeVec
	OutboxDiskFull    prometheus.GaugeFunc
	OutboxMaxBytes    prometheus.Gauge
	AppHealthy        prometheus.Gauge
	RelayWaitReplicas prometheus.Histogram
	SettlePending     *prometheus.GaugeVec

	outbox atomic.Pointer[outbox.Log] // nil until observeOutbox: the outbox families read 0
}

// ObserveOutbox makes the outbox families report l's Stats.
func (m *Metrics) ObserveOutbox(l *outbox.Log) { m.outbox.Store(l) }

// outboxStat reads one figure of the observed outbox (0 before there is one).
func (m *Metrics) outboxStat(f func(outbox.Stats) float64) func() float64 {
	return func() float64 {
		l := m.outbox.Load()
		if l == nil {
			return 0
		}
		return f(l.Stats())
	}
}

// OldestAge is how long the oldest pending record has waited; 0 when none.
func OldestAge(st outbox.Stats) float64 {
	if st.Oldest.IsZero() {
		return 0
	}
	return max(0, time.Since(st.Oldest).Seconds())
}

// DeadLetterReasons are the values of ferry_deadletters_total's reason label.
var DeadLetterReasons = []string{"poison", "exhausted", "expired", "dropped"}

// DeliveryResults are the values of ferry_delivery_attempts_total's result label.
var DeliveryResults = []string{"success", "retry", "timeout", "error", "unreachable", "poison"}

// New registers ferry's metrics on reg and initialises every label value
// known from the start, so that each family is exported at once. version
// is ferry's build version, for ferry_build_info.
// It is long because it is the one table of every family, kept in one
// place so that the names can be checked against DESIGN.md at a glance.
func New(reg prometheus.Registerer, version string, subscriptions []string) *Metrics {
	f := promauto.With(reg)
	sub := []string{"subscription"}
	m := &Metrics{}
	*m = Metrics{
		PublishRequests: f.NewCounterVec(prometheus.CounterOpts{Name: "ferry_publish_requests_total",
			Help: "Publish API requests by topic and HTTP status code."}, []string{"topic", "code"}),
		PublishDuration: f.NewHistogram(prometheus.HistogramOpts{Name: "ferry_publish_duration_seconds",
			Help: "Publish API time from request to answer, including the outbox fsync.", Buckets: latencyBuckets}),
		OutboxPending: f.NewGaugeFunc(prometheus.GaugeOpts{Name: "ferry_outbox_pending_records",
			Help: "Records in the outbox not yet relayed to Redis."},
			m.outboxStat(func(st outbox.Stats) float64 { return float64(st.PendingRecords) })),
		OutboxBytes: f.NewGaugeFunc(prometheus.GaugeOpts{Name: "ferry_outbox_bytes",
			Help: "Framed bytes in the outbox not yet relayed to Redis (compare with FERRY_OUTBOX_MAX_BYTES)."},
			m.outboxStat(func(st outbox.Stats) float64 { return float64(st.PendingBytes) })),
		OutboxOldestAge: f.NewGaugeFunc(prometheus.GaugeOpts{Name: "ferry_outbox_oldest_age_seconds",
			Help: "Age of the oldest outbox record not yet relayed; 0 when empty."},
			m.outboxStat(OldestAge)),
		OutboxCorruptions: f.NewCounterFunc(prometheus.CounterOpts{Name: "ferry_outbox_corruptions_total",
			Help: "Outbox segments found corrupt at start and moved aside (renamed *.corrupt)."},
			m.outboxStat(func(st outbox.Stats) float64 { return float64(st.Corruptions) })),
		OutboxSyncs: f.NewCounterFunc(prometheus.CounterOpts{Name: "ferry_outbox_syncs_total",
			Help: "Outbox fsyncs for appends (group commits); accepted publishes / this = events per fsync."},
			m.outboxStat(func(st outbox.Stats) float64 { return float64(st.Syncs) })),
		RelayRecords: f.NewCounterVec(prometheus.CounterOpts{Name: "ferry_relay_records_total",
			Help: "Outbox records sent to Redis by the relay, by result (ok, error)."}, []string{"result"}),
		RedisUp: f.NewGauge(prometheus.GaugeOpts{Name: "ferry_redis_up",
			Help: "1 when the last Redis command succeeded, 0 when it failed."}),
		DeliveryAttempts: f.NewCounterVec(prometheus.CounterOpts{Name: "ferry_delivery_attempts_total",
			Help: "HTTP delivery attempts to the app by subscription and result (success, retry, timeout, error, unreachable, poison)."}, []string{"subscription", "result"}),
		DeliveryDuration: f.NewHistogramVec(prometheus.HistogramOpts{Name: "ferry_delivery_duration_seconds",
			Help: "Duration of one HTTP delivery attempt to the app.", Buckets: latencyBuckets}, sub),
		EndToEnd: f.NewHistogramVec(prometheus.HistogramOpts{Name: "ferry_end_to_end_seconds",
			Help: "Time from publish accepted to the app answering 2xx.", Buckets: latencyBuckets}, sub),
		DeadLetters: f.NewCounterVec(prometheus.CounterOpts{Name: "ferry_deadletters_total",
			Help: "Messages dead-lettered by subscription and reason (poison, exhausted, expired, dropped)."}, []string{"subscription", "reason"}),
		DedupeHits: f.NewCounterVec(prometheus.CounterOpts{Name: "ferry_dedupe_hits_total",
			Help: "Messages acked without delivery because their id was already delivered."}, sub),
		BreakerState: f.NewGaugeVec(prometheus.GaugeOpts{Name: "ferry_breaker_state",
			Help: "Circuit breaker state per subscription: 0 closed, 1 half-open, 2 open."}, sub),
		Throttled: f.NewCounterVec(prometheus.CounterOpts{Name: "ferry_ratelimit_throttled_total",
			Help: "Rate-limited operations: publish (answered 429), delivery (had to wait)."}, []string{"kind"}),
		ConsumerLag: f.NewGaugeVec(prometheus.GaugeOpts{Name: "ferry_consumer_lag",
			Help: "Entries not yet acked by this app's consumer group (XINFO lag + pending), refreshed every 5s."}, sub),
		RetentionLagging: f.NewGaugeVec(prometheus.GaugeOpts{Name: "ferry_retention_blocked",
			Help: "1 when this group's undelivered entries hold the stream above FERRY_STREAM_MAX_LEN/MAX_AGE."}, sub),
		BuildInfo: f.NewGaugeVec(prometheus.GaugeOpts{Name: "ferry_build_info",
			Help: "Always 1; labels carry the ferry version and Go version."}, []string{"version", "goversion"}),
		OutboxDiskFull: f.NewGaugeFunc(prometheus.GaugeOpts{Name: "ferry_outbox_disk_full",
			Help: "1 while publishes are refused for lack of disk space on the outbox volume (ENOSPC, or free space under the reserve the relay and checkpoint need)."},
			m.outboxStat(func(st outbox.Stats) float64 {
				if st.DiskFull {
					return 1
				}
				return 0
			})),
		OutboxMaxBytes: f.NewGauge(prometheus.GaugeOpts{Name: "ferry_outbox_max_bytes",
			Help: "FERRY_OUTBOX_MAX_BYTES: the outbox limit, for ratios in alerts."}),
		AppHealthy: f.NewGauge(prometheus.GaugeOpts{Name: "ferry_app_healthy",
			Help: "1 while the app's health probe passes (or, without a probe, the app is reachable)."}),
		RelayWaitReplicas: f.NewHistogram(prometheus.HistogramOpts{Name: "ferry_relay_wait_replicas",
			Help: "Replicas WAIT reported per relayed batch (with FERRY_REDIS_WAIT_REPLICAS).", Buckets: []float64{0, 1, 2, 3, 4, 5}}),
		SettlePending: f.NewGaugeVec(prometheus.GaugeOpts{Name: "ferry_delivery_settle_pending",
			Help: "Deliveries the app answered 2xx whose completion is not yet written to Redis: a crash now redelivers them."}, sub),
	}
	m.BuildInfo.WithLabelValues(version, runtime.Version()).Set(1)
	m.AppHealthy.Set(1)
	m.RelayRecords.WithLabelValues("ok")
	m.RelayRecords.WithLabelValues("error")
	m.Throttled.WithLabelValues("publish")
	m.Throttled.WithLabelValues("delivery")
	for _, s := range subscriptions {
		for _, r := range DeliveryResults {
			m.DeliveryAttempts.WithLabelValues(s, r)
		}
		m.DeliveryDuration.WithLabelValues(s)
		m.EndToEnd.WithLabelValues(s)
		for _, r := range DeadLetterReasons {
			m.DeadLetters.WithLabelValues(s, r)
		}
		m.DedupeHits.WithLabelValues(s)
		m.BreakerState.WithLabelValues(s).Set(0)
		m.ConsumerLag.WithLabelValues(s)
		m.RetentionLagging.WithLabelValues(s)
		m.SettlePending.WithLabelValues(s)
	}
	return m
}
