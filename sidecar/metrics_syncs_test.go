package sidecar

import (
	"testing"
	"time"

	"github.com/ferry-sidecar/ferry/internal/redistest"
)

// ferry_outbox_syncs_total follows the outbox's group commits, so that
// accepted publishes / syncs is the number of events per fsync.
func TestOutboxSyncsMetricFollowsGroupCommits(t *testing.T) {
	srv := redistest.StartServer(t)
	n := startNode(t, baseEnv(t, "orders-svc", srv.URL()))
	if got := n.metric("ferry_outbox_syncs_total", nil); got != 0 {
		t.Fatalf("ferry_outbox_syncs_total before any publish = %v, want 0", got)
	}
	for range 3 {
		mustPublish(t, n, "orders", "{}", nil)
	}
	want := float64(n.sc.outbox.Stats().Syncs)
	if want < 1 || want > 3 {
		t.Fatalf("outbox Stats().Syncs = %v after 3 sequential publishes, want 1 to 3", want)
	}
	waitFor(t, 3*time.Second, "ferry_outbox_syncs_total to reach Stats().Syncs", func() bool {
		return n.metric("ferry_outbox_syncs_total", nil) >= want
	})
	if got := n.metric("ferry_outbox_syncs_total", nil); got != want {
		t.Fatalf("ferry_outbox_syncs_total = %v, want outbox Stats().Syncs = %v", got, want)
	}
}
