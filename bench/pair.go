package main

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"strconv"
	"time"

	"github.com/ferry-sidecar/ferry/stream"
)

// pair is a publishing side and a delivering side between the load and
// the sink: two ferry sidecars, or ceiling C's two processes.
type pair struct {
	name     string // "ferry" or "ceiling C"
	url      string // where events are POSTed
	pub, sub *process
	ferryPub *sidecar // ferry only
	ferrySub *sidecar
	stream   string // the Redis stream the events go through
	group    string // the delivering side's consumer group
}

// Names of what the pairs use in Redis and at the sink.
const (
	ferryTopic = "bench-e2e"
	ferryGroup = "bench-sub"
	cStream    = "bench:ceiling-c"
	cGroup     = "bench-c"
	sinkRoute  = "/sink"
)

func (p *pair) stop() {
	p.pub.stop(10 * time.Second)
	p.sub.stop(10 * time.Second)
}

// startFerryPair starts a subscribing sidecar (delivering to sinkURL) and
// a publishing one.
func (e *env) startFerryPair(ctx context.Context, sinkURL string) (*pair, error) {
	sub, err := e.startFerry(ctx, ferryGroup, map[string]string{
		"FERRY_APP_URL":       sinkURL,
		"FERRY_SUBSCRIPTIONS": ferryTopic + "=" + sinkRoute,
	})
	if err != nil {
		return nil, err
	}
	pub, err := e.startFerry(ctx, "bench-e2e-pub", nil)
	if err != nil {
		return nil, err
	}
	return &pair{name: "ferry", url: pub.pub + "/v1/publish/" + ferryTopic, pub: pub.process, sub: sub.process,
		ferryPub: pub, ferrySub: sub, stream: stream.Key(ferryTopic), group: ferryGroup}, nil
}

// startCeilingCPair starts ceiling C's delivering and publishing processes,
// with the delivery concurrency ferry uses by default.
func (e *env) startCeilingCPair(ctx context.Context, sinkURL string) (*pair, error) {
	var ports [2]int
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	common := []string{"-redis", e.redisAddr, "-stream", cStream}
	subAddr := "127.0.0.1:" + strconv.Itoa(ports[0])
	sub, err := e.start("ceilingc-sub", e.ceilingBin, append([]string{"-mode", "sub", "-listen", subAddr,
		"-group", cGroup, "-sink", sinkURL + sinkRoute, "-concurrency", strconv.Itoa(ferryConcurrency)}, common...), nil)
	if err != nil {
		return nil, err
	}
	if err := waitHealthy(ctx, sub, "http://"+subAddr); err != nil {
		return nil, err
	}
	pubAddr := "127.0.0.1:" + strconv.Itoa(ports[1])
	pub, err := e.start("ceilingc-pub", e.ceilingBin, append([]string{"-mode", "pub", "-listen", pubAddr}, common...), nil)
	if err != nil {
		return nil, err
	}
	if err := waitHealthy(ctx, pub, "http://"+pubAddr); err != nil {
		return nil, err
	}
	return &pair{name: systemC, url: "http://" + pubAddr + "/v1/publish/bench", pub: pub, sub: sub,
		stream: cStream, group: cGroup}, nil
}

// systemC names ceiling C's pair in the tables.
const systemC = "ceiling C"

// ferryConcurrency is FERRY_DELIVERY_CONCURRENCY's default, which the
// bench's subscriber runs with; ceiling C's reader posts with as many.
const ferryConcurrency = 16

func waitHealthy(ctx context.Context, p *process, base string) error {
	client := &http.Client{Timeout: time.Second}
	return poll(ctx, 15*time.Second, p.name+" /healthz", p, func() bool {
		resp, err := client.Get(base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// buildCeilingC builds ./bench/ceilingc of this module.
func buildCeilingC(ctx context.Context, out string) error {
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, goTool(), "build", "-o", out, "./bench/ceilingc")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build ceiling C: %w\n%s", err, b)
	}
	return nil
}

// cpuMark is the CPU seconds of each process of a pair at one moment.
type cpuMark struct{ pub, sub procStat }

func (p *pair) mark() (cpuMark, error) {
	ps, err := readProcStat(p.pub.cmd.Process.Pid)
	if err != nil {
		return cpuMark{}, err
	}
	ss, err := readProcStat(p.sub.cmd.Process.Pid)
	return cpuMark{pub: ps, sub: ss}, err
}

// procRows are the pair's two processes over a phase that moved events.
func (p *pair) procRows(before, after cpuMark, events int, label string) []procRow {
	return []procRow{
		{Name: p.name + " " + label + ": publishing side", PeakRSS: after.pub.PeakRSS, CPU: after.pub.CPU - before.pub.CPU, Events: events},
		{Name: p.name + " " + label + ": delivering side", PeakRSS: after.sub.PeakRSS, CPU: after.sub.CPU - before.sub.CPU, Events: events},
	}
}
