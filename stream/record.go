package stream

import (
	"encoding/binary"
	"errors"
	"net/http"
	"strings"
	"time"
)

// Event is one accepted publish as it is stored in an outbox record: the
// topic, the stream fields (name, value, …) without the publish time, and
// the body.
type Event struct {
	Topic  string
	Fields []string
	Body   []byte
}

// ErrBadRecord is returned by DecodeEvent for bytes AppendEvent did not write.
var ErrBadRecord = errors.New("malformed event record")

// AppendEvent encodes e after buf: uvarint-prefixed topic, field count,
// fields, then the body to the end.
func AppendEvent(buf []byte, e *Event) []byte {
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

// DecodeEvent is the inverse of AppendEvent; Body aliases data.
func DecodeEvent(data []byte) (Event, error) {
	var e Event
	topic, rest, err := readString(data)
	if err != nil {
		return e, err
	}
	n, k := binary.Uvarint(rest)
	if k <= 0 || n > uint64(len(rest)) {
		return e, ErrBadRecord
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
		return "", nil, ErrBadRecord
	}
	return string(b[k : k+int(n)]), b[k+int(n):], nil
}

// Values are the XADD field/value pairs of e, published at t.
func (e *Event) Values(t time.Time) []any {
	vals := make([]any, 0, len(e.Fields)+4)
	for _, f := range e.Fields {
		vals = append(vals, f)
	}
	return append(vals, FieldPublishedAt, t.UTC().Format(time.RFC3339Nano), FieldBody, e.Body)
}

// Expired reports whether m has an expiry time and now is past it.
func (m *Message) Expired(now time.Time) bool {
	return !m.ExpiresAt.IsZero() && now.After(m.ExpiresAt)
}

// Message is one stream entry as a consumer sees it.
type Message struct {
	StreamID    string // Redis stream entry id
	ID          string // ferry message id
	PublishedAt time.Time
	ExpiresAt   time.Time // zero: never expires
	ContentType string
	Header      http.Header // carried headers
	OrderingKey string
	Body        string
	Fields      map[string]any // all fields, for dead letters
}

// ParseMessage reads a stream entry written by the relay. An entry ferry did
// not write gets its stream id as message id and application/octet-stream.
func ParseMessage(streamID string, values map[string]any) *Message {
	m := &Message{StreamID: streamID, Header: http.Header{}, Fields: values}
	for k, v := range values {
		s, _ := v.(string)
		switch {
		case k == FieldID:
			m.ID = s
		case k == FieldPublishedAt:
			m.PublishedAt, _ = time.Parse(time.RFC3339Nano, s)
		case k == FieldExpiresAt:
			m.ExpiresAt, _ = time.Parse(time.RFC3339Nano, s)
		case k == FieldContentType:
			m.ContentType = s
		case k == FieldBody:
			m.Body = s
		case strings.HasPrefix(k, HeaderField):
			name := k[len(HeaderField):]
			m.Header.Set(name, s)
			if name == HeaderOrderingKey {
				m.OrderingKey = s
			}
		}
	}
	if m.ID == "" {
		m.ID = streamID
	}
	if m.ContentType == "" {
		m.ContentType = "application/octet-stream"
	}
	return m
}
