package daprpub

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Dapr's error codes for the publish endpoints (pkg/messages/errorcodes).
const (
	CodeNotConfigured   = "ERR_PUBSUB_NOT_CONFIGURED"
	CodeNameEmpty       = "ERR_PUBSUB_EMPTY"
	CodeNotFound        = "ERR_PUBSUB_NOT_FOUND"
	CodeTopicEmpty      = "ERR_TOPIC_NAME_EMPTY"
	CodeRequestMetadata = "ERR_PUBSUB_REQUEST_METADATA"
	CodeCloudEventsSer  = "ERR_PUBSUB_CLOUD_EVENTS_SER"
	CodeEventsSer       = "ERR_PUBSUB_EVENTS_SER"
	CodeForbidden       = "ERR_PUBSUB_FORBIDDEN"
	CodePublishMessage  = "ERR_PUBSUB_PUBLISH_MESSAGE"
)

// Error is one Dapr error answer.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Code is Dapr's errorCode, ERR_….
	Code string
	// Message is the human-readable message, worded as Dapr words it.
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Body is the JSON answer body {"errorCode":…,"message":…}.
func (e *Error) Body() []byte {
	b, _ := json.Marshal(struct {
		ErrorCode string `json:"errorCode"`
		Message   string `json:"message"`
	}{e.Code, e.Message})
	return b
}

// Write answers with the error: its status, Content-Type application/json
// and its body. Headers already set on w (Retry-After) are kept.
func (e *Error) Write(w http.ResponseWriter) {
	body := e.Body()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(e.Status)
	_, _ = w.Write(body)
}

// NotFound is an unknown pubsubname.
func NotFound(pubsub string) *Error {
	return &Error{http.StatusNotFound, CodeNotFound, fmt.Sprintf("pubsub %s is not found", pubsub)}
}

// NameEmpty is an empty pubsubname in the path.
func NameEmpty() *Error {
	return &Error{http.StatusNotFound, CodeNameEmpty, "pubsub name is empty"}
}

// TopicEmpty is an empty topic in the path.
func TopicEmpty(pubsub string) *Error {
	return &Error{http.StatusNotFound, CodeTopicEmpty, "topic is empty in pubsub " + pubsub}
}

// RequestMetadata is a metadata.* query parameter that does not parse.
func RequestMetadata(err error) *Error {
	return &Error{http.StatusBadRequest, CodeRequestMetadata, fmt.Sprintf("failed deserializing metadata. Error: %s", err)}
}

// CloudEventCreation is a body that cannot be wrapped (an
// application/cloudevents+json body that is not a JSON object). Dapr answers
// 500 here although the request is at fault.
func CloudEventCreation() *Error {
	return &Error{http.StatusInternalServerError, CodeCloudEventsSer, "cannot create cloudevent"}
}

// MarshalEnvelope is an event that cannot be turned into bytes (bulk: it
// does not match its contentType).
func MarshalEnvelope(topic, pubsub string, err error) *Error {
	return &Error{http.StatusBadRequest, CodeEventsSer,
		fmt.Sprintf("error when marshalling cloud event envelope for topic %s pubsub %s: %s", topic, pubsub, err)}
}

// MarshalEvents is a bulk entry refused as a whole (entryId empty or
// duplicated, or no event).
func MarshalEvents(topic, pubsub string, err error) *Error {
	return &Error{http.StatusBadRequest, CodeEventsSer,
		fmt.Sprintf("error marshaling events to bytes for topic %s pubsub %s. error: %s", topic, pubsub, err)}
}

// UnmarshalEvents is a bulk body that is not a JSON array of entries.
func UnmarshalEvents(topic, pubsub string, err error) *Error {
	return &Error{http.StatusBadRequest, CodeEventsSer,
		fmt.Sprintf("error when unmarshaling the request for topic %s pubsub %s: %s", topic, pubsub, err)}
}

// Forbidden is a topic outside FERRY_PUBLISH_TOPICS.
func Forbidden(topic, appID string) *Error {
	return &Error{http.StatusForbidden, CodeForbidden, fmt.Sprintf("topic %s is not allowed for app id %s", topic, appID)}
}

// PublishMessage is a publish that could not be stored. status is the
// status ferry answers with: Dapr uses 500; ferry keeps 503 (with
// Retry-After) when the outbox is full, out of disk or shutting down.
func PublishMessage(status int, topic, pubsub string, err error) *Error {
	return &Error{status, CodePublishMessage,
		fmt.Sprintf("error when publishing to topic %s in pubsub %s: %s", topic, pubsub, err)}
}

// metadataPrefix marks the query parameters Dapr reads as metadata.
const metadataPrefix = "metadata."

// Metadata returns the metadata.* query parameters without the prefix, the
// first value of each, as Dapr's getMetadataFromRequest does.
func Metadata(q url.Values) map[string]string {
	m := make(map[string]string, len(q))
	for k, v := range q {
		if name, ok := strings.CutPrefix(k, metadataPrefix); ok && len(v) > 0 {
			m[name] = v[0]
		}
	}
	return m
}

// RawPayload reads metadata rawPayload (exact key, as components-contrib's
// IsRawPayload): strconv.ParseBool; empty or missing is false.
func RawPayload(metadata map[string]string) (bool, error) {
	v := metadata["rawPayload"]
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("rawPayload value must be a valid boolean: actual is '%s'", v)
	}
	return b, nil
}

// BulkEntry is one validated entry of a bulk publish.
type BulkEntry struct {
	// EntryID is the caller's id of the entry, unique in the request.
	EntryID string
	// Event is the entry's event as bytes, converted as Dapr's
	// ConvertEventToBytes does for its ContentType.
	Event []byte
	// ContentType is the entry's contentType.
	ContentType string
	// Metadata is the entry's metadata over the request's (entry keys win).
	Metadata map[string]string
}

type bulkEntryJSON struct {
	EntryID     string            `json:"entryId"`
	Event       json.RawMessage   `json:"event"`
	ContentType string            `json:"contentType"`
	Metadata    map[string]string `json:"metadata"`
}

var errContentTypeMismatch = errors.New("mismatch between contentType and event")

// ParseBulk reads a bulk publish body, [{"entryId","event","contentType",
// "metadata"}], and checks every entry in order, as Dapr's onBulkPublish
// does: the event must match its contentType (application/octet-stream: a
// base64 string, decoded; text/* and application/xml: a string;
// application/json and application/cloudevents+json: any JSON, kept as its
// text), then entryId must be non-empty and unique. The event is required.
// reqMetadata (the request's metadata.* parameters) is merged under each
// entry's metadata. The error names the entry by index and entryId.
func ParseBulk(body []byte, topic, pubsub string, reqMetadata map[string]string) ([]BulkEntry, *Error) {
	var raw []bulkEntryJSON
	// One Unmarshal: it refuses trailing data itself, and scans the body
	// once less than a Decoder (bulk bodies are large).
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, UnmarshalEvents(topic, pubsub, errors.New("empty body"))
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, UnmarshalEvents(topic, pubsub, err)
	}
	if raw == nil {
		return nil, UnmarshalEvents(topic, pubsub, errors.New("body is null, not an array"))
	}
	entries := make([]BulkEntry, len(raw))
	seen := make(map[string]struct{}, len(raw))
	for i, r := range raw {
		name := fmt.Sprintf("entry %d (entryId %q)", i, r.EntryID)
		if len(r.Event) == 0 || string(r.Event) == "null" {
			return nil, MarshalEvents(topic, pubsub, fmt.Errorf("%s: event is required", name))
		}
		b, err := eventBytes(r.Event, r.ContentType)
		if err != nil {
			return nil, MarshalEnvelope(topic, pubsub, fmt.Errorf("%s: %w", name, err))
		}
		if _, dup := seen[r.EntryID]; dup || r.EntryID == "" {
			return nil, MarshalEvents(topic, pubsub, fmt.Errorf("%s: entryId is duplicated or not present for entry", name))
		}
		seen[r.EntryID] = struct{}{}
		md := make(map[string]string, len(r.Metadata)+len(reqMetadata))
		for k, v := range reqMetadata {
			md[k] = v
		}
		for k, v := range r.Metadata {
			md[k] = v
		}
		entries[i] = BulkEntry{EntryID: r.EntryID, Event: b, ContentType: r.ContentType, Metadata: md}
	}
	return entries, nil
}

// eventBytes is Dapr's ConvertEventToBytes on the event's JSON text.
func eventBytes(event json.RawMessage, contentType string) ([]byte, error) {
	mt := strings.ToLower(contentType)
	if i := strings.IndexByte(mt, ';'); i >= 0 {
		mt = mt[:i]
	}
	switch {
	case mt == "application/octet-stream":
		s, ok := plainString(event)
		if !ok {
			var str string
			if json.Unmarshal(event, &str) != nil {
				return nil, fmt.Errorf("%w: application/octet-stream needs a base64 string", errContentTypeMismatch)
			}
			s = []byte(str)
		}
		b, err := base64.StdEncoding.AppendDecode(nil, s)
		if err != nil {
			return nil, fmt.Errorf("unable to decode base64 application/octet-stream data: %w", err)
		}
		return b, nil
	case strings.HasPrefix(strings.ToLower(contentType), "text/") || mt == "application/xml":
		if b, ok := plainString(event); ok {
			return b, nil
		}
		var s string
		if json.Unmarshal(event, &s) != nil {
			return nil, fmt.Errorf("%w: %s needs a string", errContentTypeMismatch, contentType)
		}
		return []byte(s), nil
	case mt == "application/json" || mt == "application/cloudevents+json":
		var b bytes.Buffer
		if err := json.Compact(&b, event); err != nil {
			return nil, fmt.Errorf("%w: %w", errContentTypeMismatch, err)
		}
		return b.Bytes(), nil
	default:
		return nil, fmt.Errorf("%w: contentType %q is not application/json, application/cloudevents+json, application/octet-stream, application/xml or text/*", errContentTypeMismatch, contentType)
	}
}

// BulkFailedEntry is one entry of a failed bulk publish.
type BulkFailedEntry struct {
	EntryID string `json:"entryId"`
	Error   string `json:"error,omitempty"`
}

// BulkResponse is Dapr's answer body for a failed bulk publish.
type BulkResponse struct {
	FailedEntries []BulkFailedEntry `json:"failedEntries"`
	ErrorCode     string            `json:"errorCode,omitempty"`
}

// BulkFailure is the answer body when a bulk publish failed as a whole, as
// ferry's all-or-nothing append does: every entry is listed with the cause,
// errorCode ERR_PUBSUB_PUBLISH_MESSAGE. Dapr answers it with status 500
// (ferry: 503 with Retry-After when the outbox refuses).
func BulkFailure(entries []BulkEntry, cause error) []byte {
	r := BulkResponse{FailedEntries: make([]BulkFailedEntry, len(entries)), ErrorCode: CodePublishMessage}
	for i, e := range entries {
		r.FailedEntries[i] = BulkFailedEntry{EntryID: e.EntryID, Error: cause.Error()}
	}
	b, _ := json.Marshal(r)
	return b
}

// plainString returns the contents of a JSON string without escapes (the
// common case: no backslash, valid UTF-8), which are its bytes as they
// stand; ok is false for anything else, which json.Unmarshal then decodes.
func plainString(v json.RawMessage) ([]byte, bool) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return nil, false
	}
	in := v[1 : len(v)-1]
	nonASCII := false
	for _, c := range in {
		if c >= utf8.RuneSelf {
			nonASCII = true
		} else if c < 0x20 || c == '"' || c == '\\' {
			return nil, false
		}
	}
	if nonASCII && !utf8.Valid(in) {
		return nil, false
	}
	return in, true
}
