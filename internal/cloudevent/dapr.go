package cloudevent

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Publish is one event published through a Dapr-compatible endpoint, before
// Dapr's wrapping.
type Publish struct {
	// Source is the publishing app's id (FERRY_APP_ID).
	Source string
	// Topic and PubsubName are copied into the envelope.
	Topic      string
	PubsubName string
	// ContentType is the request's Content-Type; empty means text/plain.
	// application/cloudevents+json makes Data an event to pass through.
	ContentType string
	// Data is the request body.
	Data []byte
	// TraceParent and TraceState are the W3C trace context of the publish.
	TraceParent string
	TraceState  string
	// Metadata holds the request's metadata.* query parameters without the
	// prefix: cloudevent.id, cloudevent.source, cloudevent.type,
	// cloudevent.subject, cloudevent.traceid, cloudevent.traceparent and
	// cloudevent.tracestate override the envelope (case-insensitively, as
	// Dapr's mapstructure decoding does); ttlInSeconds or ttl set expiration.
	Metadata map[string]string
}

// NewDaprEnvelope wraps a publish the way Dapr 1.18 does (NewCloudEvent,
// NewCloudEventsEnvelope, FromCloudEvent, ApplyMetadata):
//
//   - A body with Content-Type application/cloudevents+json must be a JSON
//     object; it is kept, and gets topic and pubsubname (overwritten),
//     traceid/traceparent when it has no traceid, tracestate when it has none,
//     time when it has none, and source "Dapr", type com.dapr.event.sent and
//     specversion 1.0 when missing. Dapr does not require an id here, and
//     neither does this function.
//   - Any other body becomes data: parsed JSON when the content type is
//     application/json (its text as a string when it does not parse), base64
//     in data_base64 when it is application/octet-stream, otherwise the body
//     as a string. id is a new UUID (v4, as Dapr), source the app id, type
//     com.dapr.event.sent, specversion 1.0, datacontenttype the content type
//     (text/plain when none), time now.
//   - A ttl in the metadata sets expiration = now + ttl, in both cases.
//
// The only errors are a pass-through body that is not a JSON object and an
// invalid ttl.
func NewDaprEnvelope(p Publish, now time.Time) (Event, error) {
	ttl, hasTTL, err := TTL(p.Metadata)
	if err != nil {
		return nil, err
	}
	var e Event
	if isContentType(p.ContentType, ContentType) {
		e, err = Decode(p.Data)
		if err != nil {
			return nil, fmt.Errorf("read cloudevent: %w", err)
		}
		fromCloudEvent(e, p.Topic, p.PubsubName, p.TraceParent, p.TraceState, now)
	} else {
		id, source, typ, subject := "", p.Source, "", ""
		traceID, traceState, traceParent := p.TraceParent, p.TraceState, ""
		for k, v := range p.Metadata {
			switch strings.ToLower(k) {
			case "cloudevent.id":
				id = v
			case "cloudevent.source":
				source = v
			case "cloudevent.type":
				typ = v
			case "cloudevent.subject":
				subject = v
			case "cloudevent.traceid":
				traceID = v
			case "cloudevent.tracestate":
				traceState = v
			case "cloudevent.traceparent":
				traceParent = v
			}
		}
		if traceParent != "" {
			traceID = traceParent
		}
		e = newEnvelope(id, source, typ, subject, p.Topic, p.PubsubName, p.ContentType, p.Data, traceID, traceState, now)
	}
	if hasTTL {
		e[FieldExpiration] = now.UTC().Add(ttl).Format(time.RFC3339)
	}
	return e, nil
}

// newEnvelope is components-contrib's NewCloudEventsEnvelope.
func newEnvelope(id, source, typ, subject, topic, pubsub, contentType string, data []byte, traceParent, traceState string, now time.Time) Event {
	if id == "" {
		id = uuid.NewString()
	}
	if source == "" {
		source = DaprDefaultSource
	}
	if typ == "" {
		typ = DaprEventType
	}
	if contentType == "" {
		contentType = DaprDefaultDataContentType
	}
	e := make(Event, 16) // sized for every attribute at once: no regrowth
	e[FieldID] = id
	e[FieldSpecVersion] = SpecVersion
	e[FieldDataContentType] = contentType
	e[FieldSource] = source
	e[FieldType] = typ
	e[FieldTopic] = topic
	e[FieldPubsubName] = pubsub
	e[FieldTime] = now.UTC().Format(time.RFC3339)
	setTrace(e, traceParent, traceState)
	switch {
	case isContentType(contentType, "application/json"):
		var v any
		if err := unmarshalPrecise(data, &v); err != nil {
			e[FieldData] = string(data)
		} else {
			e[FieldData] = v
		}
	case isContentType(contentType, "application/octet-stream"),
		isContentType(contentType, "application/cloudevents+protobuf"):
		e[FieldDataBase64] = base64.StdEncoding.EncodeToString(data)
	default:
		e[FieldData] = string(data)
	}
	if subject != "" {
		e[FieldSubject] = subject
	}
	return e
}

// fromCloudEvent is components-contrib's FromCloudEvent on a decoded event.
func fromCloudEvent(e Event, topic, pubsub, traceParent, traceState string, now time.Time) {
	if _, ok := e[FieldTime]; !ok {
		e[FieldTime] = now.UTC().Format(time.RFC3339)
	}
	if _, ok := e[FieldTraceID]; !ok && traceParent != "" {
		e[FieldTraceID] = traceParent
		e[FieldTraceParent] = traceParent
	}
	if _, ok := e[FieldTraceState]; !ok && traceState != "" {
		e[FieldTraceState] = traceState
	}
	e[FieldTopic] = topic
	e[FieldPubsubName] = pubsub
	if e[FieldSource] == nil {
		e[FieldSource] = DaprDefaultSource
	}
	if e[FieldType] == nil {
		e[FieldType] = DaprEventType
	}
	if e[FieldSpecVersion] == nil {
		e[FieldSpecVersion] = SpecVersion
	}
}

func setTrace(e Event, traceParent, traceState string) {
	if traceParent != "" {
		e[FieldTraceID] = traceParent
		e[FieldTraceParent] = traceParent
	}
	if traceState != "" {
		e[FieldTraceState] = traceState
	}
}

// ErrTTL is wrapped by every error of [TTL].
var ErrTTL = errors.New("invalid ttl")

// TTL reads the message time-to-live from publish metadata the way
// components-contrib's TryGetTTL does: the key ttl or ttlInSeconds (any
// case); a Go duration ("90s"), else whole seconds above 0. A negative
// duration is 0 (expires at once). ok is false when neither key is set or
// the value is empty.
func TTL(metadata map[string]string) (ttl time.Duration, ok bool, err error) {
	var val, inSeconds string
	hasTTLKey := false
	for k, v := range metadata {
		switch strings.ToLower(k) {
		case "ttl": // Dapr looks this key up first
			val, hasTTLKey = v, true
		case "ttlinseconds":
			inSeconds = v
		}
	}
	if !hasTTLKey {
		val = inSeconds
	}
	if val == "" {
		return 0, false, nil
	}
	if d, derr := time.ParseDuration(val); derr == nil {
		return max(d, 0), true, nil
	}
	n, perr := strconv.ParseInt(val, 10, 64)
	if perr != nil {
		return 0, false, fmt.Errorf("%w: %q is neither a duration nor whole seconds", ErrTTL, val)
	}
	if n <= 0 {
		return 0, false, fmt.Errorf("%w: %d seconds is not above 0", ErrTTL, n)
	}
	if n > math.MaxInt64/int64(time.Second) {
		return math.MaxInt64, true, nil
	}
	return time.Duration(n) * time.Second, true, nil
}

// Expired reports whether the event's expiration attribute (RFC 3339) is
// before now. A missing or unreadable expiration never expires, as in
// components-contrib's HasExpired.
func (e Event) Expired(now time.Time) bool {
	s, ok := e[FieldExpiration].(string)
	if !ok || s == "" {
		return false
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return false
	}
	return t.Before(now)
}

// Message is a stored message about to be delivered to a Dapr-style
// subscriber.
type Message struct {
	// ID is ferry's message id.
	ID string
	// Source is the publishing app's id, when known.
	Source string
	// Topic and PubsubName are set on the delivered event.
	Topic      string
	PubsubName string
	// ContentType is the stored Content-Type.
	ContentType string
	// Header holds the carried headers: Ce-* (binary-mode CloudEvents),
	// traceparent and tracestate.
	Header http.Header
	// Body is the stored body.
	Body []byte
	// PublishedAt is when ferry accepted the publish.
	PublishedAt time.Time
}

// ForDelivery builds the structured CloudEvent (Content-Type
// application/cloudevents+json) that a Dapr-style subscription receives:
//
//   - rawPayload: components-contrib's FromRawPayload: the body in
//     data_base64, datacontenttype application/octet-stream, source "Dapr",
//     type com.dapr.event.sent, topic, pubsubname, and the carried trace
//     headers; its id is the message id.
//   - a structured CloudEvent body (application/cloudevents+json, as every
//     publish through the Dapr endpoint is stored): passed through with
//     topic and pubsubname set, trace and defaults added as Dapr does.
//   - a binary-mode CloudEvent (Ce-Id, Ce-Source, Ce-Type, Ce-Specversion
//     headers): made structured, the body as data per its content type.
//   - any other body: wrapped as a Dapr publish would have been, with the
//     message id as id and the publish time as time.
//
// The error is a structured body that is not a JSON object: it cannot be
// delivered (Dapr fails such a message too).
func ForDelivery(m Message, rawPayload bool) (Event, error) {
	traceParent := m.Header.Get(FieldTraceParent)
	traceState := m.Header.Get(FieldTraceState)
	switch {
	case rawPayload:
		e := Event{
			FieldID:              m.ID,
			FieldSpecVersion:     SpecVersion,
			FieldDataContentType: "application/octet-stream",
			FieldSource:          DaprDefaultSource,
			FieldType:            DaprEventType,
			FieldTopic:           m.Topic,
			FieldPubsubName:      m.PubsubName,
			FieldDataBase64:      base64.StdEncoding.EncodeToString(m.Body),
		}
		setTrace(e, traceParent, traceState)
		return e, nil
	case isContentType(m.ContentType, ContentType):
		e, err := Decode(m.Body)
		if err != nil {
			return nil, fmt.Errorf("read cloudevent: %w", err)
		}
		fromCloudEvent(e, m.Topic, m.PubsubName, traceParent, traceState, m.PublishedAt)
		return e, nil
	case m.Header.Get("Ce-Id") != "" && m.Header.Get("Ce-Specversion") != "":
		e := Event{}
		for k, vs := range m.Header {
			name, ok := strings.CutPrefix(strings.ToLower(k), "ce-")
			if !ok || len(vs) == 0 || name == "" {
				continue
			}
			e[name] = vs[0]
		}
		ct := m.ContentType
		if ct != "" {
			e[FieldDataContentType] = ct
		}
		switch {
		case len(m.Body) == 0:
		case isContentType(ct, "application/json") || strings.HasSuffix(mediaType(ct), "+json"):
			var v any
			if unmarshalPrecise(m.Body, &v) == nil {
				e[FieldData] = v
			} else {
				e[FieldDataBase64] = base64.StdEncoding.EncodeToString(m.Body)
			}
		case isStringContentType(ct):
			e[FieldData] = string(m.Body)
		default:
			e[FieldDataBase64] = base64.StdEncoding.EncodeToString(m.Body)
		}
		fromCloudEvent(e, m.Topic, m.PubsubName, traceParent, traceState, m.PublishedAt)
		return e, nil
	default:
		return newEnvelope(m.ID, m.Source, "", "", m.Topic, m.PubsubName, m.ContentType, m.Body, traceParent, traceState, m.PublishedAt), nil
	}
}

// IsStructured reports whether a Content-Type is application/cloudevents+json
// (parameters ignored, any case).
func IsStructured(contentType string) bool { return isContentType(contentType, ContentType) }

// IsBatch reports whether a Content-Type is application/cloudevents-batch+json.
func IsBatch(contentType string) bool { return isContentType(contentType, BatchContentType) }

// isContentType is components-contrib's contenttype.isContentType: equal,
// or equal up to the first ';', ignoring case.
func isContentType(contentType, expected string) bool {
	return mediaType(contentType) == expected
}

func mediaType(contentType string) string {
	lower := strings.ToLower(contentType)
	if i := strings.IndexByte(lower, ';'); i >= 0 {
		return lower[:i]
	}
	return lower
}

// isStringContentType is components-contrib's IsStringContentType.
func isStringContentType(contentType string) bool {
	return strings.HasPrefix(strings.ToLower(contentType), "text/") || isContentType(contentType, "application/xml")
}
