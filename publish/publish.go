package publish

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"golang.org/x/time/rate"

	"github.com/ferry-sidecar/ferry/internal/httpapi"
	"github.com/ferry-sidecar/ferry/metrics"
	"github.com/ferry-sidecar/ferry/outbox"
	"github.com/ferry-sidecar/ferry/stream"
	"github.com/ferry-sidecar/ferry/tracing"
)

// Appender makes a record durable; the outbox implements it.
type Appender interface {
	Append(ctx context.Context, data []byte) error
}

// Options configure the API. Zero values: no token, no rate limit, any topic.
type Options struct {
	AppID          string   // source of the events
	Token          string   // FERRY_API_TOKEN; empty: open
	MaxBodyBytes   int64    // larger bodies ⇒ 413
	OutboxMaxBytes int64    // quoted in the outbox-full answer
	Rate           float64  // publishes/s for the whole API; 0: off
	Burst          int      // token bucket size (config.Burst); at least 1
	Topics         []string // FERRY_PUBLISH_TOPICS patterns; empty: any
	MaxTopicLabels int      // FERRY_METRICS_MAX_TOPICS: distinct topic labels before "other"
	// Tracer makes a publish span per request with a valid topic; nil: off.
	Tracer *tracing.Tracer
}

// API is the publish API. Its zero value is not usable; use New.
type API struct {
	opts    Options
	out     Appender
	m       *metrics.Metrics
	labels  *metrics.TopicLabels
	log     *slog.Logger
	limiter *rate.Limiter
	closing atomic.Bool
	now     func() time.Time
}

// New returns the API over out.
func New(opts Options, out Appender, m *metrics.Metrics, log *slog.Logger) *API {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &API{opts: opts, out: out, m: m, log: log, now: time.Now,
		labels: metrics.NewTopicLabels(opts.Topics, max(1, opts.MaxTopicLabels))}
	if opts.Rate > 0 {
		a.limiter = rate.NewLimiter(rate.Limit(opts.Rate), max(1, opts.Burst))
	}
	return a
}

// Close makes every later request answer 503 shutting-down (with
// Retry-After) while the listener stays open for the drain.
func (a *API) Close() { a.closing.Store(true) }

// Handler serves the publish API.
func (a *API) Handler() http.Handler {
	rt := httpapi.NewRouter()
	rt.Handle("POST /v1/publish/{topic}", httpapi.Bearer(a.opts.Token, a.publish))
	return rt
}

// acceptedBody is the 202 body.
type acceptedBody struct {
	ID    string `json:"id"`
	Topic string `json:"topic"`
}

// recordPool recycles the buffers that publish encodes records into.
var recordPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// publish accepts one event: validate, append to the outbox, wait for the
// fsync, answer 202.
func (a *API) publish(w http.ResponseWriter, r *http.Request) {
	start := a.now()
	topic := r.PathValue("topic")
	valid := stream.ValidTopic(topic)
	var sp tracing.Publish // zero: no span (tracing off, or a topic not to name)
	if valid {
		_, sp = a.opts.Tracer.StartPublish(r.Context(), r.Header, topic)
	}
	code := a.accept(w, r, topic, sp)
	sp.End(code)
	label := "invalid" // keep the label bounded
	if valid {
		label = a.labels.Label(topic)
	}
	a.m.PublishRequests.WithLabelValues(label, strconv.Itoa(code)).Inc()
	a.m.PublishDuration.Observe(a.now().Sub(start).Seconds())
}

// refuse answers a problem and returns its status.
func refuse(w http.ResponseWriter, status int, kind, detail string) int {
	httpapi.Problem(w, status, kind, detail)
	return status
}

func (a *API) accept(w http.ResponseWriter, r *http.Request, topic string, sp tracing.Publish) int {
	if a.closing.Load() {
		httpapi.RetryAfter(w, time.Second)
		return refuse(w, http.StatusServiceUnavailable, "shutting-down", "ferry is shutting down; publish to another replica or retry")
	}
	if a.limiter != nil {
		if res := a.limiter.Reserve(); res.Delay() > 0 {
			res.Cancel()
			a.m.Throttled.WithLabelValues("publish").Inc()
			httpapi.RetryAfter(w, res.Delay())
			return refuse(w, http.StatusTooManyRequests, "rate-limited", fmt.Sprintf("over FERRY_PUBLISH_RATE (%g/s)", a.opts.Rate))
		}
	}
	if !stream.ValidTopic(topic) {
		return refuse(w, http.StatusBadRequest, "invalid-topic", "topic must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
	}
	if !stream.TopicAllowed(a.opts.Topics, topic) {
		return refuse(w, http.StatusForbidden, "topic-not-allowed", fmt.Sprintf("topic %q is outside FERRY_PUBLISH_TOPICS", topic))
	}
	id := r.Header.Get(stream.HeaderIdempotencyKey)
	if _, present := r.Header[stream.HeaderIdempotencyKey]; present && !stream.ValidKey(id) {
		return refuse(w, http.StatusBadRequest, "invalid-idempotency-key", "Idempotency-Key must be 1 to 255 visible ASCII characters")
	}
	if v, present := r.Header[stream.HeaderOrderingKey]; present && (len(v) != 1 || !stream.ValidKey(v[0])) {
		return refuse(w, http.StatusBadRequest, "invalid-ordering-key", "Ordering-Key must be 1 to 255 visible ASCII characters")
	}
	if id == "" {
		u, err := uuid.NewV7()
		if err != nil {
			return refuse(w, http.StatusInternalServerError, "internal", "generate message id")
		}
		id = u.String()
	}
	sp.SetMessageID(id)
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		ct = "application/octet-stream"
	}
	fields := []string{stream.FieldID, id, stream.FieldSource, a.opts.AppID, stream.FieldContentType, ct}
	for name, vals := range r.Header {
		if stream.Carried(name) && len(vals) > 0 {
			fields = append(fields, stream.HeaderField+name, vals[0])
		}
	}
	if tp := sp.Traceparent(); tp != "" {
		fields = append(fields, stream.FieldTraceparent, tp)
	}

	buf := recordPool.Get().(*bytes.Buffer)
	defer recordPool.Put(buf)
	buf.Reset()
	buf.Write(stream.AppendEvent(buf.AvailableBuffer(), &stream.Event{Topic: topic, Fields: fields}))
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, a.opts.MaxBodyBytes)); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return refuse(w, http.StatusRequestEntityTooLarge, "body-too-large", fmt.Sprintf("body is over FERRY_MAX_BODY_BYTES (%d bytes)", a.opts.MaxBodyBytes))
		}
		return refuse(w, http.StatusBadRequest, "unreadable-body", "read request body: "+err.Error())
	}
	if err := a.out.Append(r.Context(), buf.Bytes()); err != nil {
		return a.appendFailed(w, err)
	}
	buf.Reset() // the record is durable; reuse its buffer for the answer
	writeAccepted(w, buf, id, topic)
	return http.StatusAccepted
}

// writeAccepted writes the 202 with the bytes httpapi.JSON would write for
// acceptedBody, without encoding/json's reflection on every publish. The
// topic is valid and id is visible ASCII, so only the characters
// encoding/json escapes ("\<>&) need it: such an id takes httpapi.JSON.
func writeAccepted(w http.ResponseWriter, buf *bytes.Buffer, id, topic string) {
	if strings.ContainsAny(id, `"\<>&`) {
		httpapi.JSON(w, http.StatusAccepted, acceptedBody{ID: id, Topic: topic})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusAccepted)
	buf.WriteString(`{"id":"`)
	buf.WriteString(id)
	buf.WriteString(`","topic":"`)
	buf.WriteString(topic)
	buf.WriteString("\"}\n")
	_, _ = w.Write(buf.Bytes())
}

// appendFailed answers an outbox error: never a 202, always a reason.
func (a *API) appendFailed(w http.ResponseWriter, err error) int {
	status, kind, detail := http.StatusServiceUnavailable, "outbox-unavailable", "the outbox cannot take the event"
	switch {
	case errors.Is(err, outbox.ErrFull):
		kind, detail = "outbox-full", fmt.Sprintf("the outbox holds FERRY_OUTBOX_MAX_BYTES (%d) of events not yet relayed to Redis", a.opts.OutboxMaxBytes)
	case errors.Is(err, syscall.ENOSPC):
		kind, detail = "disk-full", "no space left on the outbox volume (ENOSPC)"
	case errors.Is(err, syscall.EROFS):
		kind, detail = "disk-read-only", "the outbox volume is read-only (EROFS)"
	case errors.Is(err, outbox.ErrClosed):
		kind, detail = "shutting-down", "ferry is shutting down"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		status, kind, detail = http.StatusBadRequest, "cancelled", "the request was cancelled before the event was durable; it was not accepted"
	default:
		a.log.Error("outbox append", "err", err)
	}
	if status == http.StatusServiceUnavailable {
		httpapi.RetryAfter(w, time.Second)
	}
	return refuse(w, status, kind, detail)
}
