package delivery

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-sidecar/ferry/retry"
	"github.com/ferry-sidecar/ferry/stream"
)

// NewClient is the HTTP client for deliveries: keep-alive connections to
// the app (conns of them), no proxy from the environment, no redirects.
func NewClient(conns int) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
			ForceAttemptHTTP2:   false,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// send sends one attempt of d to the app and returns the status (0 when
// there was no answer), the Retry-After it asked for, the result (how far
// the request got decides between unreachable and error), and the
// transport error.
func (s *Subscriber) send(ctx context.Context, d *delivery) (int, time.Duration, retry.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, strings.NewReader(d.msg.Body))
	if err != nil {
		return 0, 0, retry.Error, err
	}
	h := req.Header
	for k, v := range d.msg.Header {
		h[k] = v
	}
	d.try.Inject(h) // with tracing on, the app's traceparent is the attempt span
	h.Set("Content-Type", d.msg.ContentType)
	h.Set(stream.HeaderMessageID, d.msg.ID)
	h.Set(stream.HeaderTopic, s.opts.Topic)
	h.Set(stream.HeaderAttempt, strconv.Itoa(d.attempt))
	if !d.msg.PublishedAt.IsZero() {
		h.Set(stream.HeaderPublishedAt, d.msg.PublishedAt.UTC().Format(time.RFC3339Nano))
	}
	if d.replay {
		h.Set(stream.HeaderReplay, "true")
	}
	if s.opts.AppToken != "" {
		h.Set("Authorization", "Bearer "+s.opts.AppToken)
	}
	req, wire := retry.Observe(req)
	resp, err := s.deps.Client.Do(req)
	if err != nil {
		return 0, 0, wire.Classify(0, err), err
	}
	// Drain a little so the connection is reused; the app's body is not needed.
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	resp.Body.Close()
	var after time.Duration
	if v := resp.Header.Get("Retry-After"); v != "" && retry.Classify(resp.StatusCode, nil) == retry.Retry {
		after, _ = retry.ParseRetryAfter(v, time.Now())
	}
	return resp.StatusCode, after, wire.Classify(resp.StatusCode, nil), nil
}
