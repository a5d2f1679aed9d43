package daprsub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// FetchConfig says where and how long to ask. Zero values are the defaults
// given per field.
type FetchConfig struct {
	// AppURL is FERRY_APP_URL; the request goes to AppURL + "/dapr/subscribe".
	AppURL string
	// Client sends the requests; nil is a client with a 5 s timeout per
	// request that does not follow redirects.
	Client *http.Client
	// Token, when set, is sent as Authorization: Bearer (FERRY_APP_TOKEN),
	// as deliveries are.
	Token string
	// Wait bounds the whole fetch, retries included; 0 is 60 s.
	Wait time.Duration
	// MinBackoff and MaxBackoff bound the pause between attempts, which
	// doubles from MinBackoff; 0 is 100 ms and 2 s.
	MinBackoff, MaxBackoff time.Duration
	// MaxBody bounds the answer; 0 is 1 MiB. A longer answer is an error.
	MaxBody int64
	// Parse checks the answer.
	Parse ParseOptions
	// Logger gets one line per failed attempt; nil discards.
	Logger *slog.Logger
}

// ErrAppNotReady wraps the last failure when the app did not give a usable
// answer before FetchConfig.Wait ran out.
var ErrAppNotReady = errors.New("app did not answer /dapr/subscribe in time")

// Fetch asks the app for its subscriptions, GET {AppURL}/dapr/subscribe,
// retrying while the app boots: a refused or failed connection, a timeout
// and any status other than 200 and 404 are tried again with backoff until
// Wait runs out (then the error wraps ErrAppNotReady and the last failure).
// 200 is parsed: a malformed answer is returned at once as a *ParseError
// (the app answered; asking again will not change it). 404 is "no
// subscriptions" (nil, nil), as for Dapr. ctx cancels the wait.
func Fetch(ctx context.Context, cfg FetchConfig) ([]Subscription, error) {
	client := cfg.Client
	if client == nil {
		client = &http.Client{
			Timeout:       5 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	wait := cmpOr(cfg.Wait, 60*time.Second)
	backoff := cmpOr(cfg.MinBackoff, 100*time.Millisecond)
	maxBackoff := cmpOr(cfg.MaxBackoff, 2*time.Second)
	maxBody := cfg.MaxBody
	if maxBody <= 0 {
		maxBody = 1 << 20
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	url := strings.TrimSuffix(cfg.AppURL, "/") + "/dapr/subscribe"

	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for attempt := 1; ; attempt++ {
		subs, done, err := fetchOnce(ctx, client, url, cfg.Token, maxBody, cfg.Parse)
		if done {
			return subs, err
		}
		log.Info("app subscriptions not available yet", "attempt", attempt, "delay", backoff, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			if cerr := context.Cause(ctx); errors.Is(cerr, context.DeadlineExceeded) {
				return nil, fmt.Errorf("%w (%s, %d attempts): %w", ErrAppNotReady, wait, attempt, err)
			}
			return nil, fmt.Errorf("fetch app subscriptions: %w", ctx.Err())
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// fetchOnce makes one attempt; done says whether its result is final.
func fetchOnce(ctx context.Context, client *http.Client, url, token string, maxBody int64, opts ParseOptions) (subs []Subscription, done bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, true, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, false, fmt.Errorf("get %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", url, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		if int64(len(body)) > maxBody {
			return nil, true, &ParseError{Index: -1, Reason: fmt.Sprintf("longer than %d bytes", maxBody)}
		}
		subs, err := Parse(body, opts)
		return subs, true, err
	case http.StatusNotFound:
		return nil, true, nil
	default:
		return nil, false, fmt.Errorf("get %s: status %d", url, resp.StatusCode)
	}
}

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
