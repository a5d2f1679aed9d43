package delivery

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/ferry-sidecar/ferry/breaker"
	"github.com/ferry-sidecar/ferry/dedupe"
	"github.com/ferry-sidecar/ferry/group"
	"github.com/ferry-sidecar/ferry/internal/redisconn"
	"github.com/ferry-sidecar/ferry/internal/waitq"
	"github.com/ferry-sidecar/ferry/metrics"
	"github.com/ferry-sidecar/ferry/retry"
	"github.com/ferry-sidecar/ferry/tracing"
)

const (
	readBlock     = time.Second // XREADGROUP BLOCK: also bounds how long a stop takes to be seen
	minWindow     = 256         // messages a subscription tracks at once (in flight, waiting, queued by key)
	claimBatch    = 100
	waitNoAttempt = 500 * time.Millisecond // retry delay for waits that use no attempt (Redis down, busy claim)
)

// Options describe one subscription. Every field is required unless it
// says what its zero value means.
type Options struct {
	Topic       string
	Route       string // path on the app, starting with /
	AppID       string // the consumer group
	Consumer    string // this replica (HOSTNAME)
	AppURL      string // base URL of the app
	AppToken    string // sent as Authorization: Bearer; empty: none
	Concurrency int    // deliveries in flight
	Rate        float64
	Burst       int           // token bucket size when Rate > 0
	Timeout     time.Duration // per HTTP attempt
	ClaimIdle   time.Duration // other consumers' entries idle this long are taken over
	DedupeLease time.Duration // a claim made at read time serves while under half of it
	FromLatest  bool          // a new group starts at the end of the stream
	// RefreshEvery is how often lag, status and retention are refreshed; 0: 5s.
	RefreshEvery time.Duration
	// Format shapes deliveries and reads answers; nil: the stored body to
	// Route, answers as DESIGN.md's table says (format.go).
	Format Format
	// DeadLetterTopic, when set, also publishes every dead letter to this
	// topic through Deps.Outbox (Dapr's deadLetterTopic); empty: none.
	DeadLetterTopic string
}

// RedisHealth says whether Redis answers, and how often it went away.
type RedisHealth interface {
	Up() bool
	Outages() uint64
}

// AppHealth says whether the app is there (apphealth.Prober). Delivery
// reports what it sees (Unreachable) and pauses while the app is not.
type AppHealth interface {
	Healthy() bool
	Unreachable()
	WaitHealthy(ctx context.Context) error
}

// Trimmer trims the topic stream, reporting whether group holds it back.
type Trimmer interface {
	Trim(ctx context.Context, topic, group string) (groupBlocked bool, err error)
}

// Deps are the shared parts a Subscriber uses.
type Deps struct {
	Redis    redis.UniversalClient
	Dedupe   *dedupe.Store
	Breakers *breaker.Set
	Retry    retry.Policy
	Client   *http.Client // NewClient
	Metrics  *metrics.Metrics
	Health   RedisHealth
	Trimmer  Trimmer   // nil: no trimming
	App      AppHealth // nil: the app is taken to be always there
	Log      *slog.Logger
	Tracer   *tracing.Tracer // nil: off
	Outbox   Appender        // publishes to Options.DeadLetterTopic; nil when none is set
}

// Appender makes a record durable in the outbox (publish.Appender).
type Appender interface {
	Append(ctx context.Context, data []byte) error
}

// Subscriber consumes one topic for this app: its consumer group, its
// bulkhead of workers, its breaker and rate limiter.
type Subscriber struct {
	opts        Options
	deps        Deps
	log         *slog.Logger
	rdb         redis.UniversalClient
	m           *metrics.Metrics
	stream      string
	redrive     string
	url         string
	format      Format
	limiter     *rate.Limiter
	window      int
	sched       *waitq.Queue[waiting] // deliveries waiting for a retry
	ready       chan *delivery
	freed       chan struct{}
	settling    chan settleReq   // deliveries the app took, dead letters and duplicates, for the settler
	settleSlots chan struct{}    // one per delivery sent or answered and not yet completed: at most 2 × Concurrency
	acking      chan []settleReq // completed batches, for the acker

	mu      sync.Mutex
	tracked map[string]*delivery   // by delivery.key
	byKey   map[string][]*delivery // Ordering-Key ⇒ its queue; the head is the one being delivered
	// holding: message ids this replica has claimed in the dedupe store and
	// not yet completed or released. The dedupe owner is the replica, so
	// a second copy of an id (a re-publish, a relay re-send) read by this
	// replica would claim it again; it waits here instead.
	holding map[string]struct{}
	// parked: deliveries that found the app unreachable (or not ready),
	// waiting for it without spending attempts; Resume releases them.
	parked []*delivery

	g                *group.Group
	retentionBlocked bool // only refresh touches it
}

// Status is what /v1/status reports of a subscription's group.
type Status = group.Status

// New returns a subscriber; Run starts it.
func New(o Options, d Deps) *Subscriber {
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if o.RefreshEvery <= 0 {
		o.RefreshEvery = 5 * time.Second
	}
	s := &Subscriber{
		opts:    o,
		deps:    d,
		log:     d.Log.With("topic", o.Topic),
		rdb:     d.Redis,
		m:       d.Metrics,
		g:       group.New(d.Redis, o.Topic, o.AppID),
		url:     strings.TrimRight(o.AppURL, "/") + o.Route,
		window:  max(minWindow, 16*o.Concurrency),
		freed:   make(chan struct{}, 1),
		tracked: map[string]*delivery{},
		byKey:   map[string][]*delivery{},
		holding: map[string]struct{}{},
	}
	s.ready = make(chan *delivery, s.window)
	s.settling = make(chan settleReq, s.window)
	s.settleSlots = make(chan struct{}, max(1, 2*o.Concurrency))
	s.acking = make(chan []settleReq, 4)
	s.sched = waitq.New[waiting]()
	s.format = o.Format
	if s.format == nil {
		s.format = plainFormat{url: s.url}
	}
	if o.Rate > 0 {
		s.limiter = rate.NewLimiter(rate.Limit(o.Rate), max(1, o.Burst))
	}
	s.stream, s.redrive = s.g.StreamKey, s.g.RedriveKey
	return s
}

// Topic is the subscribed topic.
func (s *Subscriber) Topic() string { return s.opts.Topic }

// Route is the app's path for this topic.
func (s *Subscriber) Route() string { return s.opts.Route }

// Resume makes every delivery parked for the app's absence ready again at
// once (their attempt counted again in Redis first), instead of after a
// backoff: the app is back.
func (s *Subscriber) Resume() {
	s.mu.Lock()
	parked := s.parked
	s.parked = nil
	s.mu.Unlock()
	for _, d := range parked {
		s.later(d, 0, true)
	}
}

// appHealthy reports whether the app is there (always, without AppHealth).
func (s *Subscriber) appHealthy() bool { return s.deps.App == nil || s.deps.App.Healthy() }

// Status returns the group's figures as last refreshed.
func (s *Subscriber) Status() Status { return s.g.Status() }

// Run reads and delivers until ctx ends, then lets in-flight deliveries
// finish until hard ends; what is not acked stays pending in Redis. Every
// goroutine it starts has ended when it returns.
func (s *Subscriber) Run(ctx, hard context.Context) error {
	var wg sync.WaitGroup
	var workers sync.WaitGroup
	for range s.opts.Concurrency {
		workers.Add(1)
		go func() {
			defer workers.Done()
			s.work(ctx, hard)
		}()
	}
	wg.Add(4)
	go func() {
		defer wg.Done()
		s.settler(hard)
	}()
	go func() {
		defer wg.Done()
		s.acker(hard)
	}()
	go func() {
		defer wg.Done()
		_ = s.sched.Run(ctx, s.retryDue)
	}()
	go func() {
		defer wg.Done()
		s.refreshLoop(ctx)
	}()
	s.read(ctx)
	workers.Wait()
	close(s.settling) // the workers and the reader were its only senders
	wg.Wait()
	s.endTraces()
	return nil
}

// work delivers ready messages until ctx ends.
func (s *Subscriber) work(ctx, hard context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case d := <-s.ready:
			if ctx.Err() != nil {
				return // stopping: d stays pending in Redis
			}
			s.act(hard, d, s.attempt(hard, d))
		}
	}
}

// refreshLoop updates the lag gauge, the status and retention every RefreshEvery.
func (s *Subscriber) refreshLoop(ctx context.Context) {
	t := time.NewTicker(s.opts.RefreshEvery)
	defer t.Stop()
	for {
		s.refresh(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Subscriber) refresh(ctx context.Context) {
	if s.RefreshStatus(ctx) != nil {
		return
	}
	s.loadReplayMark(ctx)
	if s.deps.Trimmer == nil {
		return
	}
	blocked, err := s.deps.Trimmer.Trim(ctx, s.opts.Topic, s.opts.AppID)
	if err != nil {
		s.log.Debug("trim stream", "err", redisconn.RedactErr(err))
		return
	}
	if blocked != s.retentionBlocked {
		s.retentionBlocked = blocked
		if blocked {
			s.log.Warn("consumer group lags past stream retention: trimming is held back for it", "app_id", s.opts.AppID)
		} else {
			s.log.Info("consumer group back within stream retention", "app_id", s.opts.AppID)
		}
	}
	v := 0.0
	if blocked {
		v = 1
	}
	s.m.RetentionLagging.WithLabelValues(s.opts.Topic).Set(v)
}

// RefreshStatus reads the group's pending count, lag and last delivered id
// into the status and the lag gauge.
func (s *Subscriber) RefreshStatus(ctx context.Context) error {
	st, err := s.g.Refresh(ctx)
	if err != nil {
		return err
	}
	s.m.ConsumerLag.WithLabelValues(s.opts.Topic).Set(float64(st.Lag))
	return nil
}
