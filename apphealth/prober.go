package apphealth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults used for zero fields of Config; they match the defaults of
// FERRY_APP_HEALTH_INTERVAL and FERRY_APP_HEALTH_THRESHOLD.
const (
	DefaultInterval  = time.Second
	DefaultThreshold = 3
)

// Config configures a Prober.
//
// URL is the app's base URL (FERRY_APP_URL), http or https, required.
//
// Path is the health endpoint (FERRY_APP_HEALTH_PATH), starting with "/".
// If Path is empty, the Prober dials URL's host and port instead, and only
// after Unreachable.
//
// Interval is the time between the starts of two probes.
// If Interval is 0, 1s is used.
//
// Timeout bounds one probe and must be below Interval.
// If Timeout is 0, half of Interval is used.
//
// Threshold is the number of failed health-path probes in a row that make
// the app unhealthy. If Threshold is 0, 3 is used.
//
// Client sends the health-path probes. If Client is nil, a client without
// keep-alive is used, so that every probe opens a connection as delivery
// would after an outage.
//
// OnChange, if not nil, is called with the new state on every transition.
//
// Logger receives one line per transition. If Logger is nil, nothing is
// logged.
type Config struct {
	URL       string
	Path      string
	Interval  time.Duration
	Timeout   time.Duration
	Threshold int
	Client    *http.Client
	OnChange  func(healthy bool)
	Logger    *slog.Logger
}

// Validate reports the first invalid field: a URL that is not an absolute
// http or https URL, a Path not starting with "/", a negative Interval,
// Timeout or Threshold, or a Timeout not below Interval once defaults are
// applied. The error names the Go field; the caller maps it to its own
// configuration name.
func (c Config) Validate() error {
	if _, err := dialAddr(c.URL); err != nil {
		return err
	}
	switch {
	case c.Path != "" && c.Path[0] != '/':
		return fmt.Errorf("apphealth config: Path %q does not start with /", c.Path)
	case c.Interval < 0:
		return fmt.Errorf("apphealth config: Interval %v is negative", c.Interval)
	case c.Timeout < 0:
		return fmt.Errorf("apphealth config: Timeout %v is negative", c.Timeout)
	case c.Threshold < 0:
		return fmt.Errorf("apphealth config: Threshold %d is negative", c.Threshold)
	}
	if n := c.norm(); n.Timeout >= n.Interval {
		return fmt.Errorf("apphealth config: Timeout %v is not below Interval %v", n.Timeout, n.Interval)
	}
	return nil
}

func (c Config) norm() Config {
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.Timeout <= 0 {
		c.Timeout = c.Interval / 2
	}
	if c.Threshold <= 0 {
		c.Threshold = DefaultThreshold
	}
	if c.Client == nil {
		c.Client = &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// dialAddr is the host:port a dial probe connects to.
func dialAddr(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("apphealth config: URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("apphealth config: URL %q is not an http or https URL with a host", raw)
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return net.JoinHostPort(u.Hostname(), port), nil
}

// Prober tracks whether the app is healthy. Create it with New, run it with
// Run; its methods are safe for concurrent use.
type Prober struct {
	cfg    Config
	target string // health URL, or host:port to dial
	wake   chan struct{}

	healthy atomic.Bool

	mu       sync.Mutex
	failures int           // failed probes in a row
	lastErr  error         // why the last probe failed
	changed  chan struct{} // closed and replaced when Run reports a transition
	reported bool          // the state OnChange was last told
	downed   bool          // Unreachable was called since the last report
}

// New returns a Prober for cfg, or the error of cfg.Validate.
func New(cfg Config) (*Prober, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.norm()
	p := &Prober{cfg: cfg, wake: make(chan struct{}, 1), changed: make(chan struct{})}
	if cfg.Path != "" {
		p.target = cfg.URL + cfg.Path
		p.failures = cfg.Threshold // unhealthy until a probe passes
	} else {
		p.target, _ = dialAddr(cfg.URL)
		p.healthy.Store(true)
		p.reported = true
	}
	return p, nil
}

// Healthy reports whether the app is healthy now.
func (p *Prober) Healthy() bool { return p.healthy.Load() }

// Value is the ferry_app_healthy gauge: 1 while healthy, else 0.
func (p *Prober) Value() float64 {
	if p.Healthy() {
		return 1
	}
	return 0
}

// Unreachable tells the Prober that a delivery found the app not there
// (retry.Unreachable). The app is unhealthy from now on, and Run probes at
// once and then every Interval until a probe passes. It never blocks.
func (p *Prober) Unreachable() {
	p.mu.Lock()
	p.failures = max(p.failures, p.cfg.Threshold)
	p.healthy.Store(false)
	p.downed = true
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default: // Run has a wake-up pending already
	}
}

// WaitHealthy blocks until the app is healthy, or returns ctx.Err() when ctx
// ends first. Run must be running for it to return while the app is
// unhealthy.
func (p *Prober) WaitHealthy(ctx context.Context) error {
	for {
		p.mu.Lock()
		changed := p.changed // taken before the check: no transition is missed
		p.mu.Unlock()
		if p.Healthy() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

// Run probes until ctx ends, then returns nil. With a health path it probes
// at once and every Interval; without one only while the app is unhealthy.
func (p *Prober) Run(ctx context.Context) error {
	probing := p.cfg.Path != "" || !p.Healthy()
	var next time.Duration // the first probe goes at once
	for {
		var due <-chan time.Time
		var timer *time.Timer
		if probing {
			timer = time.NewTimer(next)
			due = timer.C
		}
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return nil
		case <-p.wake:
			if timer != nil {
				timer.Stop()
			}
			p.report()
			if p.Healthy() { // a probe passed since the Unreachable: nothing to do
				probing, next = p.cfg.Path != "", p.cfg.Interval
			} else {
				probing, next = true, 0
			}
			continue
		case <-due:
		}
		start := time.Now()
		err := p.probe(ctx)
		if ctx.Err() != nil {
			return nil // a probe cut short by the stop says nothing about the app
		}
		p.record(err)
		p.report()
		probing = p.cfg.Path != "" || !p.Healthy()
		next = max(p.cfg.Interval-time.Since(start), 0)
	}
}

// errStatus is a health answer outside 2xx.
type errStatus int

func (e errStatus) Error() string { return fmt.Sprintf("health status %d", int(e)) }

// probe runs one probe; nil means it passed.
func (p *Prober) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	if p.cfg.Path == "" {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", p.target)
		if err != nil {
			return fmt.Errorf("dial app: %w", err)
		}
		return c.Close()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.target, nil)
	if err != nil {
		return fmt.Errorf("build health request: %w", err)
	}
	resp, err := p.cfg.Client.Do(req)
	if err != nil {
		return fmt.Errorf("get health: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return errStatus(resp.StatusCode)
	}
	return nil
}

// record applies one probe's outcome to the state.
func (p *Prober) record(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil {
		p.failures, p.lastErr = 0, nil
		p.healthy.Store(true)
		return
	}
	p.failures++
	p.lastErr = err
	if p.failures >= p.cfg.Threshold {
		p.healthy.Store(false)
	}
}

// report tells OnChange, the log and WaitHealthy about a state that differs
// from the last one reported. An Unreachable since the last report is told
// even if a probe has passed since: delivery that paused on it is then told
// to resume. Only Run's goroutine calls it.
func (p *Prober) report() {
	for {
		p.mu.Lock()
		var next bool
		switch {
		case p.downed && p.reported:
			next = false
		case p.healthy.Load() != p.reported:
			next = !p.reported
		default:
			p.downed = false
			p.mu.Unlock()
			return
		}
		p.downed = false
		p.reported = next
		close(p.changed)
		p.changed = make(chan struct{})
		failures, lastErr := p.failures, p.lastErr
		p.mu.Unlock()
		if next {
			p.cfg.Logger.Info("app healthy", "probe", p.mode())
		} else {
			attrs := []any{"probe", p.mode(), "failures", failures}
			var st errStatus
			switch {
			case errors.As(lastErr, &st):
				attrs = append(attrs, "status", int(st))
			case lastErr != nil:
				attrs = append(attrs, "err", lastErr.Error())
			default:
				attrs = append(attrs, "err", "delivery found the app unreachable")
			}
			p.cfg.Logger.Warn("app unhealthy", attrs...)
		}
		if p.cfg.OnChange != nil {
			p.cfg.OnChange(next)
		}
	}
}

func (p *Prober) mode() string {
	if p.cfg.Path != "" {
		return "http"
	}
	return "dial"
}
