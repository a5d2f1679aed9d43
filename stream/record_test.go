package stream

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestEventRoundTrip(t *testing.T) {
	in := &Event{Topic: "orders", Fields: []string{FieldID, "m-1", HeaderField + HeaderOrderingKey, "k"}, Body: []byte("{\"n\":1}")}
	got, err := DecodeEvent(AppendEvent(nil, in))
	if err != nil {
		t.Fatal(err)
	}
	if got.Topic != in.Topic || !slices.Equal(got.Fields, in.Fields) || !bytes.Equal(got.Body, in.Body) {
		t.Fatalf("round trip: %+v, want %+v", got, in)
	}
	at := time.Date(2024, 5, 6, 7, 8, 9, 10, time.FixedZone("x", 3600))
	vals := got.Values(at)
	m := map[string]any{}
	for i := 0; i < len(vals); i += 2 {
		switch v := vals[i+1].(type) {
		case []byte:
			m[vals[i].(string)] = string(v)
		default:
			m[vals[i].(string)] = v
		}
	}
	msg := ParseMessage("1-0", m)
	if msg.ID != "m-1" || msg.OrderingKey != "k" || msg.Body != `{"n":1}` || !msg.PublishedAt.Equal(at) || msg.ContentType != "application/octet-stream" {
		t.Fatalf("parsed: %+v", msg)
	}
}

func TestParseForeignEntry(t *testing.T) {
	msg := ParseMessage("9-1", map[string]any{"x": "y"})
	if msg.ID != "9-1" || msg.ContentType != "application/octet-stream" {
		t.Fatalf("foreign entry: %+v", msg)
	}
}

func FuzzDecodeEvent(f *testing.F) {
	f.Add(AppendEvent(nil, &Event{Topic: "t", Fields: []string{"a", "b"}, Body: []byte("x")}))
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := DecodeEvent(data)
		if err != nil {
			return
		}
		if again := AppendEvent(nil, &e); !bytes.Equal(again, data) {
			// Uvarints have one minimal encoding; a non-minimal one decodes
			// but re-encodes shorter. Only then may the bytes differ.
			if len(again) >= len(data) {
				t.Fatalf("re-encoding differs: %x vs %x", again, data)
			}
		}
	})
}

func TestKeysShareTheTopicsHashTag(t *testing.T) {
	for _, k := range []string{Key("o.v1"), DeadLetterKey("o.v1", "app"), RedriveKey("o.v1", "app"), ReplayKey("o.v1", "app"), DedupeKey("o.v1", "app", "m")} {
		if !strings.HasPrefix(k, "ferry:{o.v1}:") {
			t.Errorf("%q does not carry the topic's hash tag", k)
		}
	}
}

func BenchmarkEventEncodeDecode(b *testing.B) {
	e := &Event{Topic: "orders", Fields: []string{FieldID, "0190c6e2-8a3b-7cde-9f01-23456789abcd", FieldSource, "orders-svc", FieldContentType, "application/json"}, Body: bytes.Repeat([]byte("x"), 1024)}
	buf := make([]byte, 0, 2048)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendEvent(buf[:0], e)
		if _, err := DecodeEvent(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func TestParseMessageExpiry(t *testing.T) {
	exp := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	m := ParseMessage("1-0", map[string]any{FieldID: "a", FieldExpiresAt: exp.Format(time.RFC3339Nano)})
	if !m.ExpiresAt.Equal(exp) || m.Expired(exp) || !m.Expired(exp.Add(time.Nanosecond)) {
		t.Fatalf("ExpiresAt %v", m.ExpiresAt)
	}
	if m := ParseMessage("1-0", map[string]any{FieldID: "a"}); m.Expired(time.Now().Add(1000 * time.Hour)) {
		t.Fatal("a message without exp expired")
	}
}
