package publish

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/ferry-sidecar/ferry/internal/cloudevent"
	"github.com/ferry-sidecar/ferry/internal/httpapi"
	"github.com/ferry-sidecar/ferry/stream"
	"github.com/ferry-sidecar/ferry/tracing"
)

// ceMediaPrefix starts both CloudEvents JSON content types.
const ceMediaPrefix = "application/cloudevents"

// isCloudEvents reports, without allocating, whether a publish carries a
// structured CloudEvent or a batch (application/cloudevents+json or
// application/cloudevents-batch+json); the plain path pays one lookup.
func isCloudEvents(h http.Header) bool {
	v := h["Content-Type"]
	if len(v) == 0 || len(v[0]) <= len(ceMediaPrefix) || !strings.EqualFold(v[0][:len(ceMediaPrefix)], ceMediaPrefix) {
		return false
	}
	return cloudevent.IsStructured(v[0]) || cloudevent.IsBatch(v[0])
}

// batchAccepted is the 202 body of a batch.
type batchAccepted struct {
	IDs   []string `json:"ids"`
	Topic string   `json:"topic"`
}

// acceptCloudEvents takes a structured CloudEvent (one record, its id the
// message id unless the Idempotency-Key key is given) or a batch (one
// record per event, all in one group commit or none). Events are stored as
// they came and delivered with Content-Type application/cloudevents+json.
func (a *API) acceptCloudEvents(w http.ResponseWriter, r *http.Request, topic, key string, sp tracing.Publish) int {
	body, code := a.readBody(w, r)
	if code != 0 {
		return code
	}
	if cloudevent.IsBatch(r.Header.Get("Content-Type")) {
		if key != "" {
			return refuse(w, http.StatusBadRequest, "invalid-idempotency-key", "Idempotency-Key does not apply to a batch: each event's id is its message id")
		}
		return a.acceptBatch(w, r, topic, body, sp)
	}
	e, err := cloudevent.Parse(body)
	if err != nil {
		return refuseEvent(w, err)
	}
	id := key
	if id == "" {
		id = e.ID()
		if !stream.ValidKey(id) {
			return refuse(w, http.StatusBadRequest, "invalid-cloudevent", `attribute "id": must be 1 to 255 visible ASCII characters to be a message id`)
		}
	}
	sp.SetMessageID(id)
	rec := a.record(topic, id, cloudevent.ContentType, time.Time{}, r.Header, sp.Traceparent(), body)
	if err := a.out.Append(r.Context(), rec); err != nil {
		return a.appendFailed(w, err)
	}
	httpapi.JSON(w, http.StatusAccepted, acceptedBody{ID: id, Topic: topic})
	return http.StatusAccepted
}

func (a *API) acceptBatch(w http.ResponseWriter, r *http.Request, topic string, body []byte, sp tracing.Publish) int {
	events, err := cloudevent.ParseBatch(body)
	if err != nil {
		return refuseEvent(w, err)
	}
	sp.SetBatch(len(events))
	ids := make([]string, len(events))
	recs := make([][]byte, len(events))
	for i, e := range events {
		ids[i] = e.ID()
		if !stream.ValidKey(ids[i]) {
			return refuse(w, http.StatusBadRequest, "invalid-cloudevent",
				fmt.Sprintf(`event %d: attribute "id": must be 1 to 255 visible ASCII characters to be a message id`, i))
		}
		data, err := e.Marshal()
		if err != nil {
			return refuse(w, http.StatusBadRequest, "invalid-cloudevent", fmt.Sprintf("event %d: %v", i, err))
		}
		recs[i] = a.record(topic, ids[i], cloudevent.ContentType, time.Time{}, r.Header, sp.Traceparent(), data)
	}
	if err := a.out.AppendBatch(r.Context(), recs); err != nil {
		return a.appendFailed(w, err)
	}
	httpapi.JSON(w, http.StatusAccepted, batchAccepted{IDs: ids, Topic: topic})
	return http.StatusAccepted
}

// refuseEvent answers a CloudEvent that does not validate, naming the
// attribute (and the index in a batch).
func refuseEvent(w http.ResponseWriter, err error) int {
	return refuse(w, http.StatusBadRequest, "invalid-cloudevent", err.Error())
}

// readBody reads the whole body within FERRY_MAX_BODY_BYTES; code is the
// answer already written when it could not.
func (a *API) readBody(w http.ResponseWriter, r *http.Request) ([]byte, int) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.opts.MaxBodyBytes))
	if err == nil {
		return body, 0
	}
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, refuse(w, http.StatusRequestEntityTooLarge, "body-too-large", fmt.Sprintf("body is over FERRY_MAX_BODY_BYTES (%d bytes)", a.opts.MaxBodyBytes))
	}
	return nil, refuse(w, http.StatusBadRequest, "unreadable-body", "read request body: "+err.Error())
}

// record encodes one event record as the plain path does: id, source,
// Content-Type, the expiry when set, the carried headers of h, the publish
// span's traceparent when tracing is on, the body.
func (a *API) record(topic, id, contentType string, expires time.Time, h http.Header, tp string, body []byte) []byte {
	fields := []string{stream.FieldID, id, stream.FieldSource, a.opts.AppID, stream.FieldContentType, contentType}
	if !expires.IsZero() {
		fields = append(fields, stream.FieldExpiresAt, expires.UTC().Format(time.RFC3339Nano))
	}
	for name, vals := range h {
		if stream.Carried(name) && len(vals) > 0 && name != stream.HeaderIdempotencyKey {
			fields = append(fields, stream.HeaderField+name, vals[0])
		}
	}
	if tp != "" {
		fields = append(fields, stream.FieldTraceparent, tp)
	}
	n := len(topic) + len(body) + 16
	for _, f := range fields {
		n += len(f) + 2
	}
	return stream.AppendEvent(make([]byte, 0, n), &stream.Event{Topic: topic, Fields: fields, Body: body})
}

// newID is a UUIDv7 message id.
func newID() (string, error) {
	u, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("generate message id: %w", err)
	}
	return u.String(), nil
}
