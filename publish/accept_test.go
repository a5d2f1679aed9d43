package publish

import (
	"bytes"
	"net/http/httptest"
	"testing"

	"github.com/ferry-sidecar/ferry/internal/httpapi"
)

// writeAccepted must answer byte for byte what httpapi.JSON answers for the
// same acceptedBody, headers included.
func TestWriteAcceptedMatchesWriteJSON(t *testing.T) {
	for _, id := range []string{
		"0190c6e2-8a3b-7cde-9f01-23456789abcd", "order-42", "~!#$%'()*+,-./:;=?@[]^_`{|}",
		`a"b`, `a\b`, "<x>", "a&b", "x",
	} {
		t.Run(id, func(t *testing.T) {
			want := httptest.NewRecorder()
			httpapi.JSON(want, 202, acceptedBody{ID: id, Topic: "orders.v1"})
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
