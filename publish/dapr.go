package publish

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/ferry-sidecar/ferry/internal/cloudevent"
	"github.com/ferry-sidecar/ferry/internal/daprpub"
	"github.com/ferry-sidecar/ferry/internal/httpapi"
	"github.com/ferry-sidecar/ferry/stream"
	"github.com/ferry-sidecar/ferry/tracing"
)

// daprTokenHeader is the header Dapr's API token arrives in.
const daprTokenHeader = "dapr-api-token"

// handleDapr registers Dapr's HTTP pub/sub publish endpoints.
func (a *API) handleDapr(rt *httpapi.Router) {
	one := a.daprAuth(a.counted(a.daprPublish))
	bulk := a.daprAuth(a.counted(a.daprBulk))
	rt.Handle("POST /v1.0/publish/{pubsub}/{topic...}", one)
	rt.Handle("PUT /v1.0/publish/{pubsub}/{topic...}", one)
	rt.Handle("POST /v1.0-alpha1/publish/bulk/{pubsub}/{topic...}", bulk)
	rt.Handle("POST /v1.0/publish/bulk/{pubsub}/{topic...}", bulk)
}

// daprAuth checks FERRY_API_TOKEN, given as dapr-api-token or as
// Authorization: Bearer, in constant time.
func (a *API) daprAuth(h http.HandlerFunc) http.HandlerFunc {
	if a.opts.Token == "" {
		return h
	}
	want := []byte(a.opts.Token)
	return func(w http.ResponseWriter, r *http.Request) {
		if !httpapi.TokenMatches(r.Header.Get("Authorization"), want) &&
			subtle.ConstantTimeCompare([]byte(r.Header.Get(daprTokenHeader)), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="ferry"`)
			(&daprpub.Error{Status: http.StatusUnauthorized, Code: "ERR_UNAUTHORIZED", Message: "invalid api token"}).Write(w)
			return
		}
		h(w, r)
	}
}

// counted counts, times and traces a Dapr-endpoint request as the native
// one is.
func (a *API) counted(h func(http.ResponseWriter, *http.Request, string, string, tracing.Publish) int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := a.now()
		topic := r.PathValue("topic")
		valid := stream.ValidTopic(topic)
		var sp tracing.Publish
		if valid {
			_, sp = a.opts.Tracer.StartPublish(r.Context(), r.Header, topic)
		}
		code := h(w, r, r.PathValue("pubsub"), topic, sp)
		sp.End(code)
		label := "invalid"
		if valid {
			label = a.labels.Label(topic)
		}
		a.m.PublishRequests.WithLabelValues(label, strconv.Itoa(code)).Inc()
		a.m.PublishDuration.Observe(a.now().Sub(start).Seconds())
	}
}

// daprRefuse writes a Dapr error and returns its status.
func daprRefuse(w http.ResponseWriter, e *daprpub.Error) int {
	e.Write(w)
	return e.Status
}

// daprAdmit runs the checks every Dapr publish passes before its body is
// read: shutdown, the rate limit, the pubsub name, the topic and its scope.
func (a *API) daprAdmit(w http.ResponseWriter, pubsub, topic string) int {
	if a.closing.Load() {
		httpapi.RetryAfter(w, time.Second)
		return daprRefuse(w, daprpub.PublishMessage(http.StatusServiceUnavailable, topic, pubsub, errors.New("ferry is shutting down; retry")))
	}
	if a.limiter != nil {
		if res := a.limiter.Reserve(); res.Delay() > 0 {
			res.Cancel()
			a.m.Throttled.WithLabelValues("publish").Inc()
			httpapi.RetryAfter(w, res.Delay())
			return daprRefuse(w, daprpub.PublishMessage(http.StatusTooManyRequests, topic, pubsub, fmt.Errorf("over FERRY_PUBLISH_RATE (%g/s)", a.opts.Rate)))
		}
	}
	switch {
	case pubsub == "":
		return daprRefuse(w, daprpub.NameEmpty())
	case pubsub != a.pubsubName():
		return daprRefuse(w, daprpub.NotFound(pubsub))
	case topic == "":
		return daprRefuse(w, daprpub.TopicEmpty(pubsub))
	case !stream.ValidTopic(topic):
		return daprRefuse(w, &daprpub.Error{Status: http.StatusBadRequest, Code: daprpub.CodePublishMessage,
			Message: fmt.Sprintf("topic %q is not a valid ferry topic name: it must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", topic)})
	case !stream.TopicAllowed(a.opts.Topics, topic):
		return daprRefuse(w, daprpub.Forbidden(topic, a.opts.AppID))
	}
	return 0
}

func (a *API) pubsubName() string {
	if a.opts.PubsubName == "" {
		return "pubsub"
	}
	return a.opts.PubsubName
}

// daprPublish is POST /v1.0/publish/{pubsubname}/{topic}: 204 once durable.
func (a *API) daprPublish(w http.ResponseWriter, r *http.Request, pubsub, topic string, sp tracing.Publish) int {
	if code := a.daprAdmit(w, pubsub, topic); code != 0 {
		return code
	}
	body, code := a.readBody(w, r)
	if code != 0 {
		return code
	}
	md := daprpub.Metadata(r.URL.Query())
	rec, derr := a.daprRecord(r.Header, sp, topic, pubsub, r.Header.Get("Content-Type"), body, md)
	if derr != nil {
		return daprRefuse(w, derr)
	}
	if err := a.out.Append(r.Context(), rec); err != nil {
		return a.daprAppendFailed(w, err, topic, pubsub)
	}
	w.WriteHeader(http.StatusNoContent)
	return http.StatusNoContent
}

// daprBulk is POST /v1.0-alpha1/publish/bulk/{pubsubname}/{topic}: every
// entry in one group commit, or none.
func (a *API) daprBulk(w http.ResponseWriter, r *http.Request, pubsub, topic string, sp tracing.Publish) int {
	if code := a.daprAdmit(w, pubsub, topic); code != 0 {
		return code
	}
	body, code := a.readBody(w, r)
	if code != 0 {
		return code
	}
	entries, derr := daprpub.ParseBulk(body, topic, pubsub, daprpub.Metadata(r.URL.Query()))
	if derr != nil {
		return daprRefuse(w, derr)
	}
	sp.SetBatch(len(entries))
	recs := make([][]byte, len(entries))
	for i, e := range entries {
		rec, derr := a.daprRecord(r.Header, sp, topic, pubsub, e.ContentType, e.Event, e.Metadata)
		if derr != nil {
			derr.Message = fmt.Sprintf("entry %d (entryId %q): %s", i, e.EntryID, derr.Message)
			return daprRefuse(w, derr)
		}
		recs[i] = rec
	}
	if err := a.out.AppendBatch(r.Context(), recs); err != nil {
		status, detail := a.daprAppendStatus(w, err)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write(daprpub.BulkFailure(entries, errors.New(detail)))
		return status
	}
	w.WriteHeader(http.StatusNoContent)
	return http.StatusNoContent
}

// daprRecord wraps one Dapr publish as Dapr does (or keeps it raw with
// metadata rawPayload) and encodes its record: the message id is the
// CloudEvent's id, the expiry comes from ttlInSeconds.
func (a *API) daprRecord(h http.Header, sp tracing.Publish, topic, pubsub, contentType string, data []byte, md map[string]string) ([]byte, *daprpub.Error) {
	raw, err := daprpub.RawPayload(md)
	if err != nil {
		return nil, daprpub.RequestMetadata(err)
	}
	now := a.now()
	ttl, hasTTL, err := cloudevent.TTL(md)
	if err != nil {
		return nil, daprpub.RequestMetadata(err)
	}
	var expires time.Time
	if hasTTL {
		expires = now.Add(ttl)
	}
	if raw {
		id, err := newID()
		if err != nil {
			return nil, daprpub.PublishMessage(http.StatusInternalServerError, topic, pubsub, err)
		}
		if contentType == "" {
			contentType = "application/octet-stream"
		}
		return a.record(topic, id, contentType, expires, h, sp.Traceparent(), data), nil
	}
	e, err := cloudevent.NewDaprEnvelope(cloudevent.Publish{
		Source: a.opts.AppID, Topic: topic, PubsubName: pubsub, ContentType: contentType, Data: data,
		TraceParent: h.Get("Traceparent"), TraceState: h.Get("Tracestate"), Metadata: md,
	}, now)
	if err != nil {
		return nil, daprpub.CloudEventCreation()
	}
	id := e.ID()
	if _, has := e[cloudevent.FieldID]; !has { // a pass-through event without id: Dapr lets it be
		if id, err = newID(); err != nil {
			return nil, daprpub.PublishMessage(http.StatusInternalServerError, topic, pubsub, err)
		}
		e[cloudevent.FieldID] = id
	}
	if !stream.ValidKey(id) {
		return nil, &daprpub.Error{Status: http.StatusBadRequest, Code: daprpub.CodeEventsSer,
			Message: "cloudevent id must be 1 to 255 visible ASCII characters to be a message id"}
	}
	body, err := e.Marshal()
	if err != nil {
		return nil, daprpub.CloudEventCreation()
	}
	return a.record(topic, id, cloudevent.ContentType, expires, h, sp.Traceparent(), body), nil
}

// daprAppendFailed answers an outbox error with Dapr's body.
func (a *API) daprAppendFailed(w http.ResponseWriter, err error, topic, pubsub string) int {
	status, detail := a.daprAppendStatus(w, err)
	return daprRefuse(w, daprpub.PublishMessage(status, topic, pubsub, errors.New(detail)))
}

// daprAppendStatus is the status of an outbox error on a Dapr endpoint:
// the native one when the outbox refuses (503 with Retry-After: full, out
// of disk, shutting down) or the request is at fault (400, 413), else
// Dapr's 500.
func (a *API) daprAppendStatus(w http.ResponseWriter, err error) (int, string) {
	status, _, detail := a.appendError(err)
	switch status {
	case http.StatusServiceUnavailable:
		httpapi.RetryAfter(w, time.Second)
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
	default:
		status = http.StatusInternalServerError
	}
	return status, detail
}
