package sidecar

import (
	"bytes"
	"net/http/httptest"
	"testing"
)

// writeAccepted must answer byte for byte what writeJSON answers for the
// same publishResponse, headers included.
func TestWriteAcceptedMatchesWriteJSON(t *testing.T) {
	for _, id := range []string{
		"0190c6e2-8a3b-7cde-9f01-23456789abcd", "order-42", "~!#$%'()*+,-./:;=?@[]^_`{|}",
		`a"b`, `a\b`, "<x>", "a&b", "x",
	} {
		t.Run(id, func(t *testing.T) {
			want := httptest.NewRecorder()
			writeJSON(want, 202, publishResponse{ID: id, Topic: "orders.v1"})
			got := httptest.NewRecorder()
			buf := bytes.NewBufferString("left over")
			buf.Reset()
			writeAccepted(got, buf, id, "orders.v1")
			if got.Code != want.Code || got.Body.String() != want.Body.String() {
				t.Fatalf("writeAccepted: %d %q, writeJSON: %d %q", got.Code, got.Body, want.Code, want.Body)
			}
			for _, h := range []string{"Content-Type", "Cache-Control"} {
				if got.Header().Get(h) != want.Header().Get(h) {
					t.Fatalf("%s: %q, writeJSON: %q", h, got.Header().Get(h), want.Header().Get(h))
				}
			}
		})
	}
}

// ValidTopic is a hand-written loop; it must agree with topicPattern, which
// config errors quote, on every string of up to two bytes and at the
// length limit.
func TestValidTopicMatchesPattern(t *testing.T) {
	check := func(s string) {
		if got, want := ValidTopic(s), topicPattern.MatchString(s); got != want {
			t.Fatalf("ValidTopic(%q) = %v, topicPattern says %v", s, got, want)
		}
	}
	check("")
	for a := range 256 {
		check(string([]byte{byte(a)}))
		for b := range 256 {
			check(string([]byte{byte(a), byte(b)}))
		}
	}
	for n := 120; n <= 130; n++ {
		check(string(bytes.Repeat([]byte("a"), n)))
		check("x" + string(bytes.Repeat([]byte("-"), n)))
	}
}
