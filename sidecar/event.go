package sidecar

import (
	"encoding/binary"
	"errors"
	"net/http"
	"strings"
	"time"
)

// Stream entry fields. Carried headers are stored as "h:<Canonical-Name>".
const (
	fieldID          = "id"   // message id: Idempotency-Key or a UUIDv7
	fieldSource      = "src"  // publisher's app id
	fieldPublishedAt = "pub"  // RFC 3339 (nanoseconds), UTC
	fieldContentType = "ct"   // Content-Type
	fieldBody        = "body" // the body, last
	headerPrefix     = "h:"
)

// Headers ferry adds to deliveries.
const (
	hdrMessageID   = "Ferry-Message-Id"
	hdrTopic       = "Ferry-Topic"
	hdrAttempt     = "Ferry-Attempt"
	hdrPublishedAt = "Ferry-Published-At"
	hdrReplay      = "Ferry-Replay"
	hdrIdempotency = "Idempotency-Key"
	hdrOrdering    = "Ordering-Key"
)

// carried reports whether a publish request header travels to subscribers.
func carried(name string) bool {
	switch name {
	case hdrIdempotency, hdrOrdering, "Traceparent", "Tracestate":
		return true
	}
	return strings.HasPrefix(name, "Ce-")
}

// event is one accepted publish as it is stored in an outbox record:
// the topic, the stream fields (name, value, …) without the publish time, and the body.
type event struct {
	Topic  string
	Fields []string
	Body   []byte
}

var errBadRecord = errors.New("malformed event record")

// appendEvent encodes e after buf: uvarint-prefixed topic, field count,
// fields, then the body to the end.
func appendEvent(buf []byte, e *event) []byte {
	buf = appendString(buf, e.Topic)
	buf = binary.AppendUvarint(buf, uint64(len(e.Fields)))
	for _, f := range e.Fields {
		buf = appendString(buf, f)
	}
	return append(buf, e.Body...)
}

func appendString(buf []byte, s string) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

// decodeEvent is the inverse of appendEvent; Body aliases data.
func decodeEvent(data []byte) (event, error) {
	var e event
	topic, rest, err := readString(data)
	if err != nil {
		return e, err
	}
	n, k := binary.Uvarint(rest)
	if k <= 0 || n > uint64(len(rest)) {
		return e, errBadRecord
	}
	rest = rest[k:]
	e.Topic = topic
	e.Fields = make([]string, 0, n)
	for range n {
		var f string
		if f, rest, err = readString(rest); err != nil {
			return e, err
		}
		e.Fields = append(e.Fields, f)
	}
	e.Body = rest
	return e, nil
}

func readString(b []byte) (string, []byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return "", nil, errBadRecord
	}
	return string(b[k : k+int(n)]), b[k+int(n):], nil
}

// streamValues are the XADD field/value pairs of an event published at t.
func streamValues(e *event, t time.Time) []any {
	vals := make([]any, 0, len(e.Fields)+4)
	for _, f := range e.Fields {
		vals = append(vals, f)
	}
	return append(vals, fieldPublishedAt, t.UTC().Format(time.RFC3339Nano), fieldBody, e.Body)
}

// message is one stream entry as the consumer sees it.
type message struct {
	StreamID    string // Redis stream entry id
	ID          string // ferry message id
	PublishedAt time.Time
	ContentType string
	Header      http.Header // carried headers
	OrderingKey string
	Body        string
	Fields      map[string]any // all fields, for dead letters
}

// parseMessage reads a stream entry written by the relay.
func parseMessage(streamID string, values map[string]any) *message {
	m := &message{StreamID: streamID, Header: http.Header{}, Fields: values}
	for k, v := range values {
		s, _ := v.(string)
		switch {
		case k == fieldID:
			m.ID = s
		case k == fieldPublishedAt:
			m.PublishedAt, _ = time.Parse(time.RFC3339Nano, s)
		case k == fieldContentType:
			m.ContentType = s
		case k == fieldBody:
			m.Body = s
		case strings.HasPrefix(k, headerPrefix):
			name := k[len(headerPrefix):]
			m.Header.Set(name, s)
			if name == hdrOrdering {
				m.OrderingKey = s
			}
		}
	}
	if m.ID == "" {
		m.ID = streamID // not written by ferry: the entry id is the best id there is
	}
	if m.ContentType == "" {
		m.ContentType = "application/octet-stream"
	}
	return m
}
