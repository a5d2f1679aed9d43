package publish

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferry-sidecar/ferry/metrics"
	"github.com/ferry-sidecar/ferry/outbox"
)

func newTestAPI(t *testing.T, opts Options) (*API, *outbox.Log) {
	t.Helper()
	ob, err := outbox.Open(outbox.Options{Dir: t.TempDir(), MaxBytes: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ob.Close() })
	reg := prometheus.NewRegistry()
	opts.AppID, opts.MaxBodyBytes = "orders-svc", 1<<20
	if opts.MaxTopicLabels == 0 {
		opts.MaxTopicLabels = 100
	}
	return New(opts, ob, metrics.New(reg, "test", nil), nil), ob
}

func post(h http.Handler, topic string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/publish/"+topic, strings.NewReader("x")))
	return rec
}

// A publish outside FERRY_PUBLISH_TOPICS is refused with 403 and nothing
// is written; a topic that matches a name or a glob is accepted.
func TestTopicScopes(t *testing.T) {
	api, ob := newTestAPI(t, Options{Topics: []string{"orders", "invoices.*"}})
	h := api.Handler()
	for topic, want := range map[string]int{"orders": 202, "invoices.created": 202, "invoices": 403, "orders2": 403, "audit": 403} {
		before := ob.Stats().Appends
		rec := post(h, topic)
		if rec.Code != want {
			t.Errorf("%s: %d %s, want %d", topic, rec.Code, rec.Body, want)
		}
		wrote := ob.Stats().Appends - before
		if want == 403 {
			if wrote != 0 || !strings.Contains(rec.Body.String(), "urn:ferry:problem:topic-not-allowed") || rec.Header().Get("Content-Type") != "application/problem+json" {
				t.Errorf("%s: wrote %d records, body %s", topic, wrote, rec.Body)
			}
		} else if wrote != 1 {
			t.Errorf("%s: wrote %d records, want 1", topic, wrote)
		}
	}
}

// A careless app publishing to 2,000 distinct topics makes at most
// FERRY_METRICS_MAX_TOPICS topic label values, then "other".
func TestTopicLabelIsBounded(t *testing.T) {
	api, _ := newTestAPI(t, Options{MaxTopicLabels: 100})
	h := api.Handler()
	for i := range 2000 {
		if rec := post(h, "order-"+strconv.Itoa(i)); rec.Code != 202 {
			t.Fatalf("publish %d: %d", i, rec.Code)
		}
	}
	series := testutil.CollectAndCount(api.m.PublishRequests)
	if series != 101 {
		t.Errorf("%d ferry_publish_requests_total series after 2000 topics, want 100 + other", series)
	}
	if got := testutil.ToFloat64(api.m.PublishRequests.WithLabelValues(metrics.OtherTopic, "202")); got != 1900 {
		t.Errorf("other: %v, want 1900", got)
	}
}
