package main

import (
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- { // unsorted on purpose
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for q, want := range map[float64][]time.Duration{
		0:    {time.Millisecond},
		0.5:  {50 * time.Millisecond, 51 * time.Millisecond},
		0.99: {99 * time.Millisecond, 100 * time.Millisecond},
		1:    {100 * time.Millisecond},
	} {
		got := percentile(d, q)
		if got != want[0] && (len(want) < 2 || got != want[1]) {
			t.Errorf("percentile(1..100 ms, %v) = %s, want %v", q, got, want)
		}
	}
	if d[0] != 100*time.Millisecond {
		t.Error("percentile sorted its argument in place")
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("p50 of nothing = %s, want 0", got)
	}
	if got := percentile([]time.Duration{7}, 0.99); got != 7 {
		t.Errorf("p99 of one value = %s, want it", got)
	}
}

func TestPacing(t *testing.T) {
	start := time.Unix(1000, 0)
	if got := scheduleAt(start, 2000, 0); !got.Equal(start) {
		t.Errorf("event 0 at %v, want the start", got)
	}
	if got := scheduleAt(start, 2000, 1); got.Sub(start) != 500*time.Microsecond {
		t.Errorf("event 1 at 2,000/s is due %s after the start, want 500µs", got.Sub(start))
	}
	// No drift: event 2,000,000 at 8,000/s is due exactly 250 s in.
	if got := scheduleAt(start, 8000, 2_000_000).Sub(start); got != 250*time.Second {
		t.Errorf("event 2,000,000 at 8,000/s due after %s, want 250s", got)
	}
	if got := pacedCount(2000, 20*time.Second); got != 40_000 {
		t.Errorf("2,000/s for 20s = %d events, want 40,000", got)
	}
	if got := pacedCount(8000, 1500*time.Millisecond); got != 12_000 {
		t.Errorf("8,000/s for 1.5s = %d events, want 12,000", got)
	}
}

func TestBodyRoundTrip(t *testing.T) {
	b := eventBody(64, 123456789*time.Nanosecond, 4242, 7)
	if len(b) != 64 {
		t.Fatalf("body of %d bytes, want 64", len(b))
	}
	sent, seq, phase, ok := parseBody(b)
	if !ok || sent != 123456789 || seq != 4242 || phase != 7 {
		t.Errorf("parseBody = %v %v %v %v", sent, seq, phase, ok)
	}
	if _, _, _, ok := parseBody(b[:bodyHeaderLen-1]); ok {
		t.Error("a short body parsed")
	}
	if _, _, _, ok := parseBody([]byte(strings.Repeat("x", 64))); ok {
		t.Error("padding parsed as a bench event")
	}
}

func TestSinkCountsOnceAndIgnoresOtherPhases(t *testing.T) {
	c := clock{epoch: time.Now()}
	s := newSink(c, 2, 130, 0, true)
	s.receive(eventBody(64, 1, 129, 2), "")
	s.receive(eventBody(64, 1, 129, 2), "") // duplicate
	s.receive(eventBody(64, 1, 5, 1), "")   // another phase
	s.receive(eventBody(64, 1, 130, 2), "") // out of range
	s.receive(eventBody(64, 2, 0, 2), c.epoch.Add(time.Millisecond).Format(time.RFC3339Nano))
	if u, d := s.unique.Load(), s.dups.Load(); u != 2 || d != 1 {
		t.Errorf("unique %d, duplicates %d; want 2, 1", u, d)
	}
	if got := s.tr.published[0]; got != int64(time.Millisecond) {
		t.Errorf("published at %d ns since the epoch, want 1ms", got)
	}
	if s.tr.published[129] != 0 || s.tr.delivered[129] == 0 || s.tr.sent[129] != 1 {
		t.Errorf("event 129: %d %d %d", s.tr.published[129], s.tr.delivered[129], s.tr.sent[129])
	}
}

func TestBreakdown(t *testing.T) {
	tr := newTrace(3)
	for i := range 3 {
		base := int64(i * 1000)
		tr.sent[i], tr.published[i], tr.accepted[i], tr.relayed[i], tr.delivered[i] = base+1, base+11, base+111, base+211, base+711
	}
	tr.published[2] = 0 // unknown: left out of its stages only
	want := map[string]time.Duration{
		"send → 202 (publish latency)":                    110,
		"send → accept (request in, handler)":             10,
		"accept → 202 (group commit, fsync, answer)":      100,
		"accept → readable in Redis (fsync, relay, XADD)": 200,
		"send → readable in Redis":                        210,
		"readable → delivered (read, claim, POST)":        500,
		"send → delivered (end to end)":                   710,
	}
	got := breakdown(tr)
	if len(got) != len(want) {
		t.Fatalf("%d stages, want %d: %+v", len(got), len(want), got)
	}
	for _, st := range got {
		if st.P50 != want[st.Name] {
			t.Errorf("%s: p50 %s, want %s", st.Name, st.P50, want[st.Name])
		}
		if n := 3; strings.Contains(st.Name, "accept") && !strings.Contains(st.Name, "202 (publish") {
			n = 2
			if st.N != n {
				t.Errorf("%s over %d events, want %d", st.Name, st.N, n)
			}
		}
	}
	// Ceiling C has no accept time: its stages without one remain.
	c := newTrace(1)
	c.sent[0], c.accepted[0], c.relayed[0], c.delivered[0] = 1, 2, 3, 4
	if got := breakdown(c); len(got) != 4 {
		t.Errorf("ceiling C: %d stages, want 4: %+v", len(got), got)
	}
	if b := between([]int64{1, 0, 5}, []int64{3, 9, 0}); b[0] != 2 || b[1] != 2 {
		t.Errorf("between = %v, want 2ns for both (one event with both ends)", b)
	}
}

func TestSummarizeLag(t *testing.T) {
	r := keepUpResult{Samples: []lagSample{
		{At: 1 * time.Second, GroupLag: 10, Backlog: 50},
		{At: 2 * time.Second, GroupLag: 400, Backlog: 900},
		{At: 3 * time.Second, GroupLag: 30, Backlog: 80}, // the stop
		{At: 3500 * time.Millisecond, GroupLag: 0, Backlog: 5},
		{At: 4200 * time.Millisecond, GroupLag: 0, Backlog: 0},
		{At: 4300 * time.Millisecond, GroupLag: 0, Backlog: 0},
	}}
	summarizeLag(&r, 3*time.Second)
	if r.MaxGroupLag != 400 || r.MaxBacklog != 900 {
		t.Errorf("max %d / %d, want 400 / 900", r.MaxGroupLag, r.MaxBacklog)
	}
	if r.AtStop.GroupLag != 30 || r.AtStop.Backlog != 80 {
		t.Errorf("at the stop %+v, want 30 / 80", r.AtStop)
	}
	if r.Drain != 1200*time.Millisecond {
		t.Errorf("drained in %s, want 1.2s", r.Drain)
	}
	never := keepUpResult{Samples: []lagSample{{At: time.Second, Backlog: 3}, {At: 2 * time.Second, Backlog: 1}}}
	summarizeLag(&never, time.Second)
	if never.Drain != -1 {
		t.Errorf("a lag never back to 0 drained in %s, want -1", never.Drain)
	}
	if got := lagTimeline(r.Samples, 3); got != " 1.0s:50 3.0s:80 4.2s:0 4.3s:0" {
		t.Errorf("timeline %q", got)
	}
}

func TestFormatting(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567.4: "1,234,567"} {
		if got := group(in); got != want {
			t.Errorf("group(%v) = %q, want %q", in, got, want)
		}
	}
	if got := pct(0.604); got != "60%" {
		t.Errorf("pct(0.604) = %q", got)
	}
	if got, want := ratio(3, 2), "1.5×"; got != want {
		t.Errorf("ratio(3, 2) = %q, want %q", got, want)
	}
	if got := ratio(1, 0); got != "?" {
		t.Errorf("ratio(1, 0) = %q, want ?", got)
	}
	if got := us(55400 * time.Nanosecond); got != "55 µs" {
		t.Errorf("us = %q", got)
	}
	if got := (procRow{CPU: 0.55, Events: 10_000}).CPUPerEvent(); got != 55*time.Microsecond {
		t.Errorf("CPU per event = %s, want 55µs", got)
	}
	if got := (procRow{CPU: 1}).CPUPerEvent(); got != 0 {
		t.Errorf("CPU per event of no events = %s, want 0", got)
	}
	for in, want := range map[string][]float64{"": nil, "2000": {2000}, " 2000, 8000 ,": {2000, 8000}} {
		got, err := parseRates(in)
		if err != nil || len(got) != len(want) || len(want) > 0 && got[len(got)-1] != want[len(want)-1] {
			t.Errorf("parseRates(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"x", "0", "-5", "Inf"} {
		if _, err := parseRates(bad); err == nil {
			t.Errorf("parseRates(%q) took it", bad)
		}
	}
}

// The table's columns line up whatever the width of the cells (µs and ×
// are several bytes each), and the bulk row says when bulk was not measured.
func TestTableLayout(t *testing.T) {
	res := &results{opts: defaultOptions(), Machine: "machine: test",
		A: rateRow{Rate: 80000, P50: time.Millisecond, P99: 2 * time.Millisecond, N: 1},
		B: rateRow{Rate: 200000, N: 1}, CPublish: rateRow{Rate: 40000, N: 1}, Publish: rateRow{Rate: 24000, N: 1},
		E2E: rateRow{Rate: 9000, N: 1}, CE2E: rateRow{Rate: 10000, N: 1},
		FerryCPU: [2]time.Duration{52 * time.Microsecond, 39 * time.Microsecond}, CCPU: [2]time.Duration{40 * time.Microsecond, 30 * time.Microsecond},
		Procs: []procRow{{Name: "ferry publish: sidecar", PeakRSS: 21 << 20, CPU: 0.55, Events: 10_000}},
		Latency: []latencyRow{
			{System: systemC, Rate: 2000, E2E: [2]time.Duration{time.Millisecond, 3 * time.Millisecond}, Stages: []stage{{Name: stageDefs[6].name, P50: time.Millisecond}}},
			{System: "ferry", Rate: 2000, E2E: [2]time.Duration{2 * time.Millisecond, 5 * time.Millisecond}, Stages: []stage{{Name: stageDefs[1].name, P50: 100 * time.Microsecond}, {Name: stageDefs[6].name, P50: 2 * time.Millisecond}}},
		},
		KeepUp: &keepUpResult{Duration: time.Minute, PublishRate: 12000, Drain: 1500 * time.Millisecond, Samples: []lagSample{{At: time.Second, Backlog: 7}}},
	}
	var b strings.Builder
	res.WriteTable(&b)
	out := b.String()
	for _, want := range []string{" 30% of A, 60% of C |", " 90% of C |", " 1.3× / 1.3× C |", " 52 µs / 39 µs |",
		" not measured |", " 2.0× |", "back to 0 1.5 s after the stop", "21.0 MiB", "55 µs"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	// Every line of one table has the same width in runes.
	var width int
	for line := range strings.Lines(out) {
		line = strings.TrimSuffix(line, "\n")
		if !strings.HasPrefix(line, "|") {
			width = 0
			continue
		}
		if n := len([]rune(line)); width == 0 {
			width = n
		} else if n != width {
			t.Errorf("ragged table line (%d runes, want %d): %s", n, width, line)
		}
	}
	// The stage table puts the end-to-end stage last and leaves C's missing stage empty.
	rows := stageRows(res.Latency)
	if len(rows) != 3 || rows[1][0] != stageDefs[1].name || rows[1][1] != "" || rows[2][0] != stageDefs[6].name {
		t.Errorf("stage rows %q", rows)
	}
	res.Bulk = rateRow{Rate: 120000, N: 10}
	b.Reset()
	res.WriteTable(&b)
	if !strings.Contains(b.String(), " 5.0× single |") {
		t.Errorf("bulk at 120,000/s against 24,000/s single is not 5.0×:\n%s", b.String())
	}
}

func TestHistogramQuantile(t *testing.T) {
	before := metrics{
		`ferry_publish_duration_seconds_bucket{le="0.001"} 10`,
		`ferry_publish_duration_seconds_bucket{le="0.002"} 10`,
		`ferry_publish_duration_seconds_bucket{le="+Inf"} 10`,
		`ferry_publish_duration_seconds_sum 0.005`,
		`ferry_publish_duration_seconds_count 10`,
	}
	after := metrics{
		`ferry_publish_duration_seconds_bucket{le="0.001"} 60`,
		`ferry_publish_duration_seconds_bucket{le="0.002"} 110`,
		`ferry_publish_duration_seconds_bucket{le="+Inf"} 110`,
		`ferry_publish_duration_seconds_sum 0.155`,
		`ferry_publish_duration_seconds_count 110`,
		`ferry_publish_requests_total{topic="t",code="202"} 110`,
	}
	h := after.hist("ferry_publish_duration_seconds").since(before.hist("ferry_publish_duration_seconds"))
	if h.count != 100 || len(h.cum) != 3 || h.cum[0] != 50 || h.cum[1] != 100 {
		t.Fatalf("difference %+v", h)
	}
	// 50 of 100 in (0, 1ms], 50 in (1ms, 2ms]: the median is the top of the first bucket.
	if got := h.quantile(0.5); got != time.Millisecond {
		t.Errorf("p50 = %s, want 1ms", got)
	}
	if got := h.quantile(0.75); got != 1500*time.Microsecond {
		t.Errorf("p75 = %s, want 1.5ms (half-way through the second bucket)", got)
	}
	if got := h.mean(); got != 1500*time.Microsecond {
		t.Errorf("mean = %s, want 1.5ms", got)
	}
	if got := (histogram{}).quantile(0.5); got != 0 {
		t.Errorf("empty p50 = %s", got)
	}
}
