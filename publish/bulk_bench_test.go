package publish

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-sidecar/ferry/metrics"
	"github.com/ferry-sidecar/ferry/outbox"
)

// BenchmarkDaprBulkPublish runs Dapr bulk publishes of 100 × 1 KiB events
// in process with a real outbox; events/s is b.N × 100 over the time.
func BenchmarkDaprBulkPublish(b *testing.B) {
	ob, err := outbox.Open(outbox.Options{Dir: b.TempDir(), MaxBytes: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ob.Close() })
	h := New(Options{AppID: "bench", MaxBodyBytes: 8 << 20, MaxTopicLabels: 100}, ob, metrics.New(prometheus.NewRegistry(), "bench", nil), nil).Handler()
	type entry struct {
		EntryID     string `json:"entryId"`
		Event       string `json:"event"`
		ContentType string `json:"contentType"`
	}
	entries := make([]entry, 100)
	for i := range entries {
		entries[i] = entry{strconv.Itoa(i), strings.Repeat("x", 1024), "text/plain"}
	}
	body, _ := json.Marshal(entries)
	b.SetBytes(100 * 1024)
	b.ReportAllocs()
	b.SetParallelism(8) // concurrent bulk publishers share group commits
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := httptest.NewRequest(http.MethodPost, "/v1.0-alpha1/publish/bulk/pubsub/orders", io.NopCloser(bytes.NewReader(body)))
			w := &discardWriter{h: http.Header{}}
			h.ServeHTTP(w, r)
			if w.code != http.StatusNoContent {
				b.Fatalf("status %d", w.code)
			}
		}
	})
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
}
