package sidecar

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/ferry-sidecar/ferry/outbox"
)

// publishResponse is the 202 body.
type publishResponse struct {
	ID    string `json:"id"`
	Topic string `json:"topic"`
}

// recordPool recycles the buffers that publish encodes records into.
var recordPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// publishHandler serves the publish API on FERRY_LISTEN_ADDR.
func (s *Sidecar) publishHandler() http.Handler {
	rt := newRouter()
	rt.handle("POST /v1/publish/{topic}", bearer(s.cfg.APIToken, s.publish))
	return rt
}

// publish accepts one event: validate, append to the outbox, wait for the
// fsync, answer 202.
func (s *Sidecar) publish(w http.ResponseWriter, r *http.Request) {
	start := s.now()
	topic := r.PathValue("topic")
	code := s.accept(w, r, topic)
	if !ValidTopic(topic) {
		topic = "invalid" // keep the label bounded
	}
	s.metrics.PublishRequests.WithLabelValues(topic, strconv.Itoa(code)).Inc()
	s.metrics.PublishDuration.Observe(s.now().Sub(start).Seconds())
}

func (s *Sidecar) accept(w http.ResponseWriter, r *http.Request, topic string) int {
	fail := func(status int, kind, detail string) int {
		writeProblem(w, status, kind, detail)
		return status
	}
	if s.shuttingDown.Load() {
		setRetryAfter(w, time.Second)
		return fail(http.StatusServiceUnavailable, "shutting-down", "ferry is shutting down; publish to another replica or retry")
	}
	if s.publishLimiter != nil {
		if res := s.publishLimiter.Reserve(); res.Delay() > 0 {
			res.Cancel()
			s.metrics.Throttled.WithLabelValues("publish").Inc()
			setRetryAfter(w, res.Delay())
			return fail(http.StatusTooManyRequests, "rate-limited", fmt.Sprintf("over FERRY_PUBLISH_RATE (%g/s)", s.cfg.PublishRate))
		}
	}
	if !ValidTopic(topic) {
		return fail(http.StatusBadRequest, "invalid-topic", "topic must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
	}
	id := r.Header.Get(hdrIdempotency)
	if _, present := r.Header[hdrIdempotency]; present && !ValidKey(id) {
		return fail(http.StatusBadRequest, "invalid-idempotency-key", "Idempotency-Key must be 1 to 255 visible ASCII characters")
	}
	if v, present := r.Header[hdrOrdering]; present && (len(v) != 1 || !ValidKey(v[0])) {
		return fail(http.StatusBadRequest, "invalid-ordering-key", "Ordering-Key must be 1 to 255 visible ASCII characters")
	}
	if id == "" {
		u, err := uuid.NewV7()
		if err != nil {
			return fail(http.StatusInternalServerError, "internal", "generate message id")
		}
		id = u.String()
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		ct = "application/octet-stream"
	}
	fields := []string{fieldID, id, fieldSource, s.cfg.AppID, fieldContentType, ct}
	for name, vals := range r.Header {
		if carried(name) && len(vals) > 0 {
			fields = append(fields, headerPrefix+name, vals[0])
		}
	}

	buf := recordPool.Get().(*bytes.Buffer)
	defer recordPool.Put(buf)
	buf.Reset()
	buf.Write(appendEvent(buf.AvailableBuffer(), &event{Topic: topic, Fields: fields}))
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return fail(http.StatusRequestEntityTooLarge, "body-too-large", fmt.Sprintf("body is over FERRY_MAX_BODY_BYTES (%d bytes)", s.cfg.MaxBodyBytes))
		}
		return fail(http.StatusBadRequest, "unreadable-body", "read request body: "+err.Error())
	}
	if err := s.appendRecord(r.Context(), buf.Bytes()); err != nil {
		return s.appendFailed(w, err)
	}
	buf.Reset() // the record is durable; reuse its buffer for the answer
	writeAccepted(w, buf, id, topic)
	return http.StatusAccepted
}

// writeAccepted writes the 202 with the bytes writeJSON would write for
// publishResponse, without encoding/json's reflection and encoder on every
// publish. The topic is valid and id is visible ASCII, so only the
// characters encoding/json escapes ("\<>&) need it: such an id takes
// writeJSON.
func writeAccepted(w http.ResponseWriter, buf *bytes.Buffer, id, topic string) {
	if strings.ContainsAny(id, `"\<>&`) {
		writeJSON(w, http.StatusAccepted, publishResponse{ID: id, Topic: topic})
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
func (s *Sidecar) appendFailed(w http.ResponseWriter, err error) int {
	status, kind, detail := http.StatusServiceUnavailable, "outbox-unavailable", "the outbox cannot take the event"
	switch {
	case errors.Is(err, outbox.ErrFull):
		kind, detail = "outbox-full", fmt.Sprintf("the outbox holds FERRY_OUTBOX_MAX_BYTES (%d) of events not yet relayed to Redis", s.cfg.OutboxMaxBytes)
	case errors.Is(err, syscall.ENOSPC):
		kind, detail = "disk-full", "no space left on the outbox volume (ENOSPC)"
	case errors.Is(err, syscall.EROFS):
		kind, detail = "disk-read-only", "the outbox volume is read-only (EROFS)"
	case errors.Is(err, outbox.ErrClosed):
		kind, detail = "shutting-down", "ferry is shutting down"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		status, kind, detail = http.StatusBadRequest, "cancelled", "the request was cancelled before the event was durable; it was not accepted"
	default:
		s.log.Error("outbox append", "err", err)
	}
	if status == http.StatusServiceUnavailable {
		setRetryAfter(w, time.Second)
	}
	writeProblem(w, status, kind, detail)
	return status
}
