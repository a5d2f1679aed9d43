package config

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"path"
	"strings"

	"github.com/ferry-sidecar/ferry/stream"
)

// ParseSubscriptions parses FERRY_SUBSCRIPTIONS: `topic=/route,…`.
func ParseSubscriptions(raw string) ([]Subscription, error) {
	var subs []Subscription
	seen := map[string]bool{}
	for _, item := range strings.Split(raw, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		topic, route, ok := strings.Cut(item, "=")
		topic, route = strings.TrimSpace(topic), strings.TrimSpace(route)
		switch {
		case !ok:
			return nil, fmt.Errorf("%q: want topic=/route", item)
		case !stream.ValidTopic(topic):
			return nil, fmt.Errorf("%q: invalid topic name (want %s)", topic, stream.TopicPattern)
		case !strings.HasPrefix(route, "/"):
			return nil, fmt.Errorf("%q: route must start with /", route)
		case seen[topic]:
			return nil, fmt.Errorf("topic %q subscribed twice", topic)
		}
		seen[topic] = true
		subs = append(subs, Subscription{Topic: topic, Route: route})
	}
	return subs, nil
}

// parseTopicPatterns parses FERRY_PUBLISH_TOPICS: topic names or *-globs.
func parseTopicPatterns(raw string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(raw, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if !stream.ValidTopic(strings.ReplaceAll(p, "*", "x")) {
			return nil, fmt.Errorf("%q: want a topic name, optionally with * wildcards", p)
		}
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("%q: %v", p, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// Validate checks what the types alone do not; every error names its variable.
func (c Config) Validate() error {
	var errs []error
	bad := func(name string, format string, args ...any) {
		errs = append(errs, &VarError{Var: Prefix + name, Err: fmt.Errorf(format, args...)})
	}
	if strings.TrimSpace(c.AppID) == "" {
		bad("APP_ID", "required but empty")
	} else if !stream.ValidTopic(c.AppID) {
		bad("APP_ID", "%q: use letters, digits, '.', '_' and '-' (at most 128)", c.AppID)
	}
	c.validateRedis(bad)
	c.validateNumbers(bad)
	c.validateChoices(bad)
	if u, err := url.Parse(c.AppURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("APP_URL", "%q: want an http:// or https:// base URL", c.AppURL)
	}
	if c.ListenAddr == "" {
		bad("LISTEN_ADDR", "required but empty")
	}
	if c.AdminAddr == "" {
		bad("ADMIN_ADDR", "required but empty")
	}
	if _, err := ParseSubscriptions(c.SubscriptionList); err != nil {
		bad("SUBSCRIPTIONS", "%v", err)
	}
	if _, err := parseTopicPatterns(c.PublishTopicList); err != nil {
		bad("PUBLISH_TOPICS", "%v", err)
	}
	if c.AppHealthPath != "" && !strings.HasPrefix(c.AppHealthPath, "/") {
		bad("APP_HEALTH_PATH", "%q: must start with /", c.AppHealthPath)
	}
	return errors.Join(errs...)
}

// validateNumbers checks sizes, counts, durations and rates: above 0 or not negative.
func (c Config) validateNumbers(bad func(string, string, ...any)) {
	positive := []struct {
		name string
		v    float64
	}{
		{"OUTBOX_MAX_BYTES", float64(c.OutboxMaxBytes)},
		{"MAX_BODY_BYTES", float64(c.MaxBodyBytes)},
		{"DELIVERY_TIMEOUT", float64(c.DeliveryTimeout)},
		{"DELIVERY_CONCURRENCY", float64(c.DeliveryConcurrency)},
		{"RETRY_MAX_ATTEMPTS", float64(c.RetryMaxAttempts)},
		{"RETRY_INITIAL_INTERVAL", float64(c.RetryInitialInterval)},
		{"RETRY_MAX_INTERVAL", float64(c.RetryMaxInterval)},
		{"BREAKER_MIN_REQUESTS", float64(c.BreakerMinRequests)},
		{"BREAKER_OPEN_TIMEOUT", float64(c.BreakerOpenTimeout)},
		{"APP_HEALTH_INTERVAL", float64(c.AppHealthInterval)},
		{"APP_HEALTH_THRESHOLD", float64(c.AppHealthThreshold)},
		{"METRICS_MAX_TOPICS", float64(c.MetricsMaxTopics)},
		{"DEDUPE_TTL", float64(c.DedupeTTL)},
		{"DEDUPE_LEASE", float64(c.DedupeLease)},
		{"CLAIM_IDLE", float64(c.ClaimIdle)},
		{"STREAM_MAX_LEN", float64(c.StreamMaxLen)},
		{"SHUTDOWN_TIMEOUT", float64(c.ShutdownBudget)},
		{"REDIS_WAIT_TIMEOUT", float64(c.RedisWaitTimeout)},
	}
	for _, p := range positive {
		if p.v <= 0 {
			bad(p.name, "must be above 0")
		}
	}
	nonNegative := []struct {
		name string
		v    float64
	}{
		{"DELIVERY_RATE", c.DeliveryRate},
		{"DELIVERY_BURST", float64(c.DeliveryBurst)},
		{"PUBLISH_RATE", c.PublishRate},
		{"PUBLISH_BURST", float64(c.PublishBurst)},
		{"STREAM_MAX_AGE", float64(c.StreamMaxAge)},
		{"BREAKER_CONSECUTIVE_FAILURES", float64(c.BreakerConsecutiveFailures)},
		{"REDIS_WAIT_REPLICAS", float64(c.RedisWaitReplicas)},
	}
	for _, p := range nonNegative {
		if p.v < 0 || math.IsNaN(p.v) || math.IsInf(p.v, 0) {
			bad(p.name, "must not be negative")
		}
	}
}

// validateChoices checks the variables that take one of a few values.
func (c Config) validateChoices(bad func(string, string, ...any)) {
	if c.RetryInitialInterval > c.RetryMaxInterval && c.RetryMaxInterval > 0 {
		bad("RETRY_INITIAL_INTERVAL", "%s is above FERRY_RETRY_MAX_INTERVAL (%s)", c.RetryInitialInterval, c.RetryMaxInterval)
	}
	if !(c.BreakerFailureRatio > 0 && c.BreakerFailureRatio <= 1) {
		bad("BREAKER_FAILURE_RATIO", "%v: must be in (0, 1]", c.BreakerFailureRatio)
	}
	if c.SubscribeFrom != "earliest" && c.SubscribeFrom != "latest" {
		bad("SUBSCRIBE_FROM", "%q: want earliest or latest", c.SubscribeFrom)
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		bad("LOG_LEVEL", "%q: want debug, info, warn or error", c.LogLevel)
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		bad("LOG_FORMAT", "%q: want json or text", c.LogFormat)
	}
	if c.AppSubscribe != "env" && c.AppSubscribe != "dapr" {
		bad("APP_SUBSCRIBE", "%q: want env or dapr", c.AppSubscribe)
	}
	if !stream.ValidTopic(c.PubsubName) {
		bad("PUBSUB_NAME", "%q: use letters, digits, '.', '_' and '-'", c.PubsubName)
	}
}

// validateRedis checks the URL against the mode; the URL may hold a
// password, so it is never echoed.
func (c Config) validateRedis(bad func(string, string, ...any)) {
	switch c.RedisMode {
	case ModeStandalone, ModeCluster, ModeSentinel:
	default:
		bad("REDIS_MODE", "%q: want standalone, cluster or sentinel", c.RedisMode)
	}
	u, err := url.Parse(c.RedisURL)
	if err != nil {
		bad("REDIS_URL", "not a URL")
		return
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		bad("REDIS_URL", "scheme %q: want redis or rediss", u.Scheme)
		return
	}
	q := u.Query()
	switch {
	case c.RedisMode == ModeSentinel && q.Get("master_name") == "":
		bad("REDIS_URL", "FERRY_REDIS_MODE=sentinel needs ?master_name=<name> in the URL (the URL's hosts are the Sentinels)")
	case c.RedisMode != ModeSentinel && q.Has("master_name"):
		bad("REDIS_MODE", "FERRY_REDIS_URL names a master_name: set FERRY_REDIS_MODE=sentinel")
	case c.RedisMode == ModeStandalone && q.Has("addr"):
		bad("REDIS_MODE", "FERRY_REDIS_URL lists more nodes (?addr=): set FERRY_REDIS_MODE=cluster or sentinel")
	}
	if c.RedisMode == ModeCluster && u.Path != "" && u.Path != "/" && u.Path != "/0" {
		bad("REDIS_URL", "Redis Cluster has only database 0")
	}
	if c.RedisPassword != "" {
		// The file holds the data nodes' password; in Sentinel mode the
		// URL's userinfo is the Sentinels' and the data nodes' is ?password=.
		_, has := u.User.Password()
		if c.RedisMode == ModeSentinel {
			has = q.Get("password") != ""
		}
		if has {
			bad("REDIS_PASSWORD_FILE", "FERRY_REDIS_URL holds the data nodes' password too: use one of them")
		}
	}
	if (c.RedisCertFile == "") != (c.RedisKeyFile == "") {
		bad("REDIS_CERT_FILE", "FERRY_REDIS_CERT_FILE and FERRY_REDIS_KEY_FILE go together")
	}
	if u.Scheme != "rediss" && (c.RedisCAFile != "" || c.RedisCertFile != "") {
		bad("REDIS_CA_FILE", "TLS files are set but FERRY_REDIS_URL is not rediss://")
	}
}
