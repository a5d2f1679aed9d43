package cloudevent

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Content types and constants of the CloudEvents JSON format and of Dapr.
const (
	// ContentType is a structured CloudEvent in JSON.
	ContentType = "application/cloudevents+json"
	// BatchContentType is a JSON array of structured CloudEvents.
	BatchContentType = "application/cloudevents-batch+json"
	// SpecVersion is the only CloudEvents version ferry accepts.
	SpecVersion = "1.0"
	// DaprEventType is the type Dapr gives the events it wraps.
	DaprEventType = "com.dapr.event.sent"
	// DaprDefaultSource is the source Dapr gives a wrapped event without one.
	DaprDefaultSource = "Dapr"
	// DaprDefaultDataContentType is the datacontenttype Dapr assumes when a
	// publish has no Content-Type.
	DaprDefaultDataContentType = "text/plain"
)

// Attribute and field names of the JSON format, and the extensions Dapr adds.
const (
	FieldID              = "id"
	FieldSource          = "source"
	FieldType            = "type"
	FieldSpecVersion     = "specversion"
	FieldDataContentType = "datacontenttype"
	FieldSubject         = "subject"
	FieldTime            = "time"
	FieldData            = "data"
	FieldDataBase64      = "data_base64"
	FieldTopic           = "topic"
	FieldPubsubName      = "pubsubname"
	FieldTraceParent     = "traceparent"
	FieldTraceID         = "traceid"
	FieldTraceState      = "tracestate"
	FieldExpiration      = "expiration"
)

// Event is one structured CloudEvent: the members of its JSON object.
// Numbers are json.Number, so re-encoding keeps their exact text.
type Event map[string]any

// ID returns the id attribute, or "" when it is missing or not a string.
func (e Event) ID() string { return e.str(FieldID) }

// Source returns the source attribute, or "".
func (e Event) Source() string { return e.str(FieldSource) }

// Type returns the type attribute, or "".
func (e Event) Type() string { return e.str(FieldType) }

// DataContentType returns the datacontenttype attribute, or "".
func (e Event) DataContentType() string { return e.str(FieldDataContentType) }

func (e Event) str(k string) string {
	s, _ := e[k].(string)
	return s
}

// Marshal encodes the event as one JSON object: keys sorted, no HTML
// escaping, byte for byte what encoding/json's Encoder with
// SetEscapeHTML(false) writes (without its newline). Strings that need no
// escaping, nearly all attribute values and text data, are copied as they
// are instead of going through reflection.
func (e Event) Marshal() ([]byte, error) {
	keys := make([]string, 0, len(e))
	n := 2
	for k, v := range e {
		keys = append(keys, k)
		n += len(k) + 4
		if s, ok := v.(string); ok {
			n += len(s) + 2
		}
	}
	slices.Sort(keys)
	b := make([]byte, 0, n+64)
	b = append(b, '{')
	var err error
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		if b, err = appendJSON(b, k); err != nil {
			return nil, err
		}
		b = append(b, ':')
		if b, err = appendJSON(b, e[k]); err != nil {
			return nil, err
		}
	}
	return append(b, '}'), nil
}

// appendJSON appends v as encoding/json (HTML escaping off) would.
func appendJSON(b []byte, v any) ([]byte, error) {
	if s, ok := v.(string); ok && plainJSONString(s) {
		b = append(b, '"')
		b = append(b, s...)
		return append(b, '"'), nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encode cloudevent: %w", err)
	}
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...), nil
}

// plainJSONString reports whether encoding/json writes s unchanged between
// quotes: valid UTF-8 with no '"', '\\', control character, U+2028 or U+2029.
func plainJSONString(s string) bool {
	nonASCII := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			nonASCII = true
			continue
		}
		if c < 0x20 || c == '"' || c == '\\' {
			return false
		}
	}
	if !nonASCII {
		return true
	}
	return utf8.ValidString(s) && !strings.Contains(s, "\u2028") && !strings.Contains(s, "\u2029")
}

// FieldError says which attribute of which event is wrong.
type FieldError struct {
	// Index is the event's position in a batch, or -1 for a single event.
	Index int
	// Field is the attribute name; empty when the event as a whole is wrong
	// (not a JSON object).
	Field string
	// Reason says what is wrong, in lower case.
	Reason string
}

func (e *FieldError) Error() string {
	var b bytes.Buffer
	if e.Index >= 0 {
		fmt.Fprintf(&b, "event %d: ", e.Index)
	}
	if e.Field != "" {
		fmt.Fprintf(&b, "attribute %q: ", e.Field)
	}
	b.WriteString(e.Reason)
	return b.String()
}

// Decode reads one JSON object, as Dapr reads a body published with
// Content-Type application/cloudevents+json: nothing is required of its
// members. Trailing data after the object is an error.
func Decode(body []byte) (Event, error) {
	return decodeAt(body, -1)
}

func decodeAt(body []byte, index int) (Event, error) {
	var e Event
	if err := unmarshalPrecise(body, &e); err != nil {
		return nil, &FieldError{Index: index, Reason: "not a JSON object: " + jsonReason(err)}
	}
	if e == nil {
		return nil, &FieldError{Index: index, Reason: "not a JSON object: null"}
	}
	return e, nil
}

// Parse reads and validates one structured CloudEvent.
func Parse(body []byte) (Event, error) {
	e, err := Decode(body)
	if err != nil {
		return nil, err
	}
	if err := validateAt(e, -1); err != nil {
		return nil, err
	}
	return e, nil
}

// ParseBatch reads and validates a batch: a JSON array of structured
// CloudEvents. An empty array is a valid, empty batch. The first bad event's
// error names its index.
func ParseBatch(body []byte) ([]Event, error) {
	var raw []json.RawMessage
	if err := unmarshalPrecise(body, &raw); err != nil {
		return nil, &FieldError{Index: -1, Reason: "not a JSON array: " + jsonReason(err)}
	}
	if raw == nil {
		return nil, &FieldError{Index: -1, Reason: "not a JSON array: null"}
	}
	events := make([]Event, len(raw))
	for i, r := range raw {
		e, err := decodeAt(r, i)
		if err != nil {
			return nil, err
		}
		if err := validateAt(e, i); err != nil {
			return nil, err
		}
		events[i] = e
	}
	return events, nil
}

// Validate checks the required attributes (id, source, type: non-empty
// strings; specversion: "1.0") and the optional ones ferry relies on
// (datacontenttype and subject: strings; time: RFC 3339; data_base64: base64,
// never together with data).
func Validate(e Event) error { return validateAt(e, -1) }

func validateAt(e Event, index int) error {
	fail := func(field, reason string) error {
		return &FieldError{Index: index, Field: field, Reason: reason}
	}
	for _, f := range [...]string{FieldID, FieldSource, FieldType} {
		v, ok := e[f]
		if !ok || v == nil {
			return fail(f, "required")
		}
		s, isStr := v.(string)
		if !isStr {
			return fail(f, "must be a string")
		}
		if s == "" {
			return fail(f, "must not be empty")
		}
	}
	switch v := e[FieldSpecVersion].(type) {
	case nil:
		return fail(FieldSpecVersion, "required")
	case string:
		if v != SpecVersion {
			return fail(FieldSpecVersion, fmt.Sprintf("must be %q, got %q", SpecVersion, v))
		}
	default:
		return fail(FieldSpecVersion, "must be the string \"1.0\"")
	}
	for _, f := range [...]string{FieldDataContentType, FieldSubject} {
		if v, ok := e[f]; ok && v != nil {
			if _, isStr := v.(string); !isStr {
				return fail(f, "must be a string")
			}
		}
	}
	if v, ok := e[FieldTime]; ok && v != nil {
		s, isStr := v.(string)
		if !isStr {
			return fail(FieldTime, "must be an RFC 3339 string")
		}
		if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			return fail(FieldTime, fmt.Sprintf("not RFC 3339: %q", s))
		}
	}
	if v, ok := e[FieldDataBase64]; ok && v != nil {
		if _, hasData := e[FieldData]; hasData {
			return fail(FieldDataBase64, "must not be set together with data")
		}
		s, isStr := v.(string)
		if !isStr {
			return fail(FieldDataBase64, "must be a base64 string")
		}
		if _, err := base64.StdEncoding.DecodeString(s); err != nil {
			return fail(FieldDataBase64, "not base64: "+err.Error())
		}
	}
	return nil
}

// unmarshalPrecise decodes one JSON value with json.Number for numbers and
// refuses anything after it.
func unmarshalPrecise(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("empty body")
		}
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("data after the JSON value")
	}
	return nil
}

// jsonReason turns an encoding/json error into a short reason without Go
// type names.
func jsonReason(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return "got a JSON " + te.Value
	}
	return err.Error()
}
