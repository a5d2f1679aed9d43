package adminclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"syscall"
	"time"
)

// DefaultTimeout bounds every call when Options.Timeout is zero.
const DefaultTimeout = 5 * time.Second

// maxBody bounds what the client reads of an answer.
const maxBody = 16 << 20

// Options says where the admin API is and how to call it.
type Options struct {
	// Addr is host:port to dial (see DialAddr).
	Addr string
	// Token is sent as Authorization: Bearer when not empty.
	Token string
	// TokenVar names the variable Token came from, for error messages;
	// empty when no token is set.
	TokenVar string
	// Timeout bounds each call, connection to last byte; zero means
	// DefaultTimeout.
	Timeout time.Duration
}

// Client calls one sidecar's admin API.
type Client struct {
	opts Options
	http *http.Client
}

// New returns a client for opts.
func New(opts Options) *Client {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	return &Client{opts: opts, http: &http.Client{Timeout: opts.Timeout}}
}

// Status is the body of GET /v1/status.
type Status struct {
	AppID         string         `json:"app_id"`
	Redis         RedisStatus    `json:"redis"`
	Outbox        OutboxStatus   `json:"outbox"`
	Subscriptions []Subscription `json:"subscriptions"`
}

// RedisStatus says whether the sidecar's last Redis command succeeded.
type RedisStatus struct {
	Up bool `json:"up"`
}

// OutboxStatus describes the records not yet relayed to Redis.
type OutboxStatus struct {
	PendingRecords   int64   `json:"pending_records"`
	Bytes            int64   `json:"bytes"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
}

// Subscription describes one subscription's consumer group.
type Subscription struct {
	Topic   string `json:"topic"`
	Route   string `json:"route"`
	Breaker string `json:"breaker"`
	Pending int64  `json:"pending"`
	Lag     int64  `json:"lag"`
}

// DeadLetter is one entry of GET /v1/deadletters/{topic}.
type DeadLetter struct {
	MessageID string `json:"message_id"`
	Reason    string `json:"reason"`
	Status    int    `json:"status"`
	Error     string `json:"error"`
	Attempts  int    `json:"attempts"`
	FailedAt  string `json:"failed_at"`
}

// Status calls GET /v1/status; raw is the body as received.
func (c *Client) Status(ctx context.Context) (st Status, raw []byte, err error) {
	raw, err = c.call(ctx, http.MethodGet, "/v1/status", "", nil, &st)
	return st, raw, err
}

// DeadLetters calls GET /v1/deadletters/{topic}; limit 0 leaves the
// sidecar's default.
func (c *Client) DeadLetters(ctx context.Context, topic string, limit int) (dls []DeadLetter, raw []byte, err error) {
	q := ""
	if limit != 0 {
		q = "limit=" + strconv.Itoa(limit)
	}
	var body struct {
		DeadLetters []DeadLetter `json:"deadletters"`
	}
	raw, err = c.call(ctx, http.MethodGet, "/v1/deadletters/"+url.PathEscape(topic), q, nil, &body)
	return body.DeadLetters, raw, err
}

// Redrive calls POST /v1/deadletters/{topic}/redrive and returns how many
// dead letters went back into delivery.
func (c *Client) Redrive(ctx context.Context, topic string) (n int, raw []byte, err error) {
	var body struct {
		Redriven int `json:"redriven"`
	}
	raw, err = c.call(ctx, http.MethodPost, "/v1/deadletters/"+url.PathEscape(topic)+"/redrive", "", nil, &body)
	return body.Redriven, raw, err
}

// Replay calls POST /v1/subscriptions/{topic}/replay with from (an RFC 3339
// time or a stream id) and returns the stream id delivery restarts from.
func (c *Client) Replay(ctx context.Context, topic, from string) (start string, raw []byte, err error) {
	req, err := json.Marshal(map[string]string{"from": from})
	if err != nil {
		return "", nil, fmt.Errorf("encode replay request: %w", err)
	}
	var body struct {
		ReplayedFrom string `json:"replayed_from"`
	}
	raw, err = c.call(ctx, http.MethodPost, "/v1/subscriptions/"+url.PathEscape(topic)+"/replay", "", req, &body)
	return body.ReplayedFrom, raw, err
}

// call does one request and decodes a 2xx JSON answer into out.
func (c *Client) call(ctx context.Context, method, path, query string, body []byte, out any) ([]byte, error) {
	u := url.URL{Scheme: "http", Host: c.opts.Addr, Path: path, RawQuery: query}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, &Error{Addr: c.opts.Addr, Msg: "build request: " + err.Error()}
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.opts.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.opts.Token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, &Error{Addr: c.opts.Addr, Msg: fmt.Sprintf("cannot reach the admin API at %s: %s", c.opts.Addr, transportReason(err, c.opts.Timeout))}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, &Error{Addr: c.opts.Addr, Status: resp.StatusCode, Msg: fmt.Sprintf("read the admin API's answer from %s: %s", c.opts.Addr, transportReason(err, c.opts.Timeout))}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return raw, c.statusError(resp, raw)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return raw, &Error{Addr: c.opts.Addr, Status: resp.StatusCode, Msg: fmt.Sprintf("the admin API at %s answered something that is not ferry's JSON: %v", c.opts.Addr, err)}
	}
	return raw, nil
}

// problem is an RFC 9457 error body.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

// statusError turns a non-2xx answer into one line.
func (c *Client) statusError(resp *http.Response, raw []byte) *Error {
	var p problem
	_ = json.Unmarshal(raw, &p)
	detail := oneLine(p.Detail)
	if detail == "" {
		detail = http.StatusText(resp.StatusCode)
	}
	e := &Error{Addr: c.opts.Addr, Status: resp.StatusCode, Type: p.Type}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		if c.opts.Token == "" {
			e.Msg = "unauthorized: set FERRY_ADMIN_TOKEN (or FERRY_ADMIN_TOKEN_FILE) to the sidecar's admin token"
		} else {
			e.Msg = "unauthorized: the admin API refused the token from " + c.opts.TokenVar + "; set FERRY_ADMIN_TOKEN to the sidecar's admin token"
		}
	case http.StatusNotFound:
		if p.Detail == "" {
			e.Msg = fmt.Sprintf("not found: the admin API at %s has no %s (is this ferry's admin port?)", c.opts.Addr, resp.Request.URL.Path)
		} else {
			e.Msg = "unknown topic: " + detail
		}
	case http.StatusBadRequest:
		e.Msg = "bad request: " + detail
	case http.StatusServiceUnavailable:
		e.Msg = "the sidecar cannot do it now (503): " + detail
		if ra := resp.Header.Get("Retry-After"); ra != "" {
			e.Msg += " (retry after " + ra + "s)"
		}
	default:
		e.Msg = fmt.Sprintf("the admin API at %s answered %d: %s", c.opts.Addr, resp.StatusCode, detail)
	}
	return e
}

// Error is a failed call: Msg is one line for a human. Status is the HTTP
// status, 0 when there was no answer.
type Error struct {
	Addr   string
	Status int
	Type   string
	Msg    string
}

// Error returns the one-line message.
func (e *Error) Error() string { return e.Msg }

// transportReason names why there was no answer, shortly.
func transportReason(err error, timeout time.Duration) string {
	var nerr net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &nerr) && nerr.Timeout():
		return fmt.Sprintf("no answer within %s", timeout)
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return dns.Error()
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return oneLine(op.Err.Error())
	}
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return oneLine(uerr.Err.Error())
	}
	return oneLine(err.Error())
}

// oneLine folds a message onto one line.
func oneLine(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '\n' || c == '\r' {
			b[i] = ' '
		}
	}
	return string(bytes.TrimSpace(b))
}
