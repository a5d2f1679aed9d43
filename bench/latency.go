package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"
)

// latencyRow is one pair at one steady rate.
type latencyRow struct {
	System   string
	Rate     float64
	Sent     int64
	Pub      [2]time.Duration // send → 202: p50, p99
	E2E      [2]time.Duration // send → the sink's receipt: p50, p99
	LateP99  time.Duration    // how late the load sent, p99 (the load generator's own delay)
	Stages   []stage
	Dups     int
	Procs    []procRow
	Observed int // events the observer saw in Redis
	// ServerPublish is ferry's ferry_publish_duration_seconds over the load
	// (request in → answer, the fsync included): interpolated p50 and mean.
	ServerPublish [2]time.Duration
}

// stage is the median of one part of an event's way.
type stage struct {
	Name string
	P50  time.Duration
	N    int // events with both ends known
}

// Stage names, in the order of an event's way; "accept" is ferry's outbox
// append (Ferry-Published-At), "readable" is when an XREAD BLOCK on the
// stream (the bench's observer) saw the entry.
var stageDefs = []struct {
	name     string
	from, to func(*trace) []int64
}{
	{"send → 202 (publish latency)", func(t *trace) []int64 { return t.sent }, func(t *trace) []int64 { return t.accepted }},
	{"send → accept (request in, handler)", func(t *trace) []int64 { return t.sent }, func(t *trace) []int64 { return t.published }},
	{"accept → 202 (group commit, fsync, answer)", func(t *trace) []int64 { return t.published }, func(t *trace) []int64 { return t.accepted }},
	{"accept → readable in Redis (fsync, relay, XADD)", func(t *trace) []int64 { return t.published }, func(t *trace) []int64 { return t.relayed }},
	{"send → readable in Redis", func(t *trace) []int64 { return t.sent }, func(t *trace) []int64 { return t.relayed }},
	{"readable → delivered (read, claim, POST)", func(t *trace) []int64 { return t.relayed }, func(t *trace) []int64 { return t.delivered }},
	{"send → delivered (end to end)", func(t *trace) []int64 { return t.sent }, func(t *trace) []int64 { return t.delivered }},
}

// breakdown is the median of each stage over the events whose two ends
// are both known; a stage with none is left out.
func breakdown(t *trace) []stage {
	var out []stage
	for _, sd := range stageDefs {
		from, to := sd.from(t), sd.to(t)
		var d []time.Duration
		for i := range from {
			if from[i] != 0 && to[i] != 0 {
				d = append(d, time.Duration(to[i]-from[i]))
			}
		}
		if len(d) > 0 {
			out = append(out, stage{Name: sd.name, P50: percentile(d, 0.5), N: len(d)})
		}
	}
	return out
}

// between is the p50 and p99 of to − from over the events with both.
func between(from, to []int64) [2]time.Duration {
	var d []time.Duration
	for i := range from {
		if from[i] != 0 && to[i] != 0 {
			d = append(d, time.Duration(to[i]-from[i]))
		}
	}
	slices.Sort(d)
	return [2]time.Duration{sortedPercentile(d, 0.5), sortedPercentile(d, 0.99)}
}

// steady publishes through p at rate for LatencyDuration, paced, and
// waits for every event at the sink.
//
// One function on purpose: pacing, sending and collecting share one clock.
func steady(ctx context.Context, e *env, ps *pairs, p *pair, rate float64) (latencyRow, error) {
	n := pacedCount(rate, e.o.LatencyDuration)
	if n < 1 {
		return latencyRow{}, fmt.Errorf("steady load: %v events/s for %s is no event", rate, e.o.LatencyDuration)
	}
	sk := ps.newSink(n, 0, true)
	octx, stopObs := context.WithCancel(ctx)
	defer stopObs()
	obs, err := observe(octx, e.redisAddr, p.stream, sk)
	if err != nil {
		return latencyRow{}, err
	}
	before, err := p.mark()
	if err != nil {
		return latencyRow{}, err
	}
	histBefore, err := p.publishHist(ctx)
	if err != nil {
		return latencyRow{}, err
	}
	// With -cpuprofile, ferry's sidecars are traced (go tool trace) over the middle of the load.
	d := min(5*time.Second, e.o.LatencyDuration/2)
	tag := fmt.Sprintf("steady-%.0f", rate)
	tPub := e.pprof(ctx, p.ferryPub, "trace", tag+"-publisher.trace", d)
	tSub := e.pprof(ctx, p.ferrySub, "trace", tag+"-subscriber.trace", d)
	cPub := e.pprof(ctx, p.ferryPub, "profile", tag+"-publisher.pprof", d)
	cSub := e.pprof(ctx, p.ferrySub, "profile", tag+"-subscriber.pprof", d)
	client := newClient(e.o.Clients)
	defer client.CloseIdleConnections()
	res, err := pacedLoop(ctx, rate, n, e.o.Clients, func(ctx context.Context, seq int64) error {
		body := eventBody(e.o.BodySize, ps.clock.since(), seq, sk.phase)
		err := post(ctx, client, p.url, body, http.StatusAccepted)
		sk.tr.accepted[seq] = int64(ps.clock.since())
		return err
	})
	if err == nil {
		err = waitSink(ctx, sk, time.Minute+e.o.LatencyDuration)
	}
	if err != nil {
		return latencyRow{}, fmt.Errorf("%s at %v/s: %w\npublishing side log:\n%s\ndelivering side log:\n%s", p.name, rate, err, p.pub.logTail(), p.sub.logTail())
	}
	after, err := p.mark()
	if err != nil {
		return latencyRow{}, err
	}
	if err := errors.Join(tPub.wait(), tSub.wait(), cPub.wait(), cSub.wait()); err != nil {
		return latencyRow{}, err
	}
	histAfter, err := p.publishHist(ctx)
	if err != nil {
		return latencyRow{}, err
	}
	server := histAfter.since(histBefore)
	stopObs()
	<-obs.done
	if obs.err != nil {
		return latencyRow{}, obs.err
	}
	// The sink saw each event's send time; the publisher's own copy is in the body.
	observed := 0
	for _, r := range sk.tr.relayed {
		if r != 0 {
			observed++
		}
	}
	return latencyRow{
		System: p.name, Rate: rate, Sent: res.Sent,
		Pub:     between(sk.tr.sent, sk.tr.accepted),
		E2E:     between(sk.tr.sent, sk.tr.delivered),
		LateP99: percentile(res.Late, 0.99),
		Stages:  breakdown(sk.tr),
		Dups:    int(sk.dups.Load()),
		Procs:   p.procRows(before, after, int(n), fmt.Sprintf("at %s/s", group(rate))),

		Observed:      observed,
		ServerPublish: [2]time.Duration{server.quantile(0.5), server.mean()},
	}, nil
}

// publishHist is the publishing sidecar's ferry_publish_duration_seconds;
// empty for ceiling C.
func (p *pair) publishHist(ctx context.Context) (histogram, error) {
	if p.ferryPub == nil {
		return histogram{}, nil
	}
	m, err := scrape(ctx, p.ferryPub.admin)
	if err != nil {
		return histogram{}, err
	}
	return m.hist("ferry_publish_duration_seconds"), nil
}
