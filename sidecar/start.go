package sidecar

import (
	"context"
	"net"
	"net/url"

	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/dedupe"
	"github.com/ferry-sidecar/ferry/internal/redisconn"
	"github.com/ferry-sidecar/ferry/retry"
)

// checkRedis pings Redis until it answers once, then checks its
// maxmemory-policy: an evicting policy can drop dedupe keys and pending state.
func (s *Sidecar) checkRedis(ctx context.Context) {
	for attempt := 1; ctx.Err() == nil; attempt++ {
		if err := s.rdb.Ping(ctx).Err(); err == nil {
			break
		}
		if !retry.Sleep(ctx, redisconn.Backoff.Delay(min(attempt, 20), 0)) {
			return
		}
	}
	policy, ok, err := dedupe.CheckEvictionPolicy(ctx, s.rdb)
	switch {
	case err != nil:
		if redis.HasErrorPrefix(err, "NOPERM") {
			// An ACL without CONFIG GET is the recommended least privilege (docs/security.md).
			s.log.Info("redis maxmemory-policy not readable (CONFIG GET not allowed for this user); make sure it is noeviction")
			break
		}
		s.log.Info("redis maxmemory-policy not readable (CONFIG not allowed); make sure it is noeviction", "err", redisconn.RedactErr(err))
	case !ok:
		s.log.Warn("redis maxmemory-policy evicts keys: dedupe state and pending entries can be lost; set maxmemory-policy noeviction", "maxmemory-policy", policy)
	}
}

// logStart logs the effective configuration without secrets, and warns
// about settings that weaken a promise.
func (s *Sidecar) logStart() {
	c := s.cfg
	s.log.Info("ferry starting",
		"version", Version,
		"listen_addr", s.PublishAddr(), "admin_addr", s.AdminAddr(),
		"redis_url", redisconn.RedactURL(c.RedisURL), "redis_mode", c.RedisMode, "redis_wait_replicas", c.RedisWaitReplicas,
		"app_url", redisconn.RedactURL(c.AppURL),
		"subscriptions", c.SubscriptionList, "consumer", c.Consumer,
		"outbox_dir", c.OutboxDir, "outbox_max_bytes", c.OutboxMaxBytes, "max_body_bytes", c.MaxBodyBytes,
		"delivery_timeout", c.DeliveryTimeout.String(), "delivery_concurrency", c.DeliveryConcurrency,
		"delivery_rate", c.DeliveryRate, "publish_rate", c.PublishRate, "publish_topics", c.PublishTopicList,
		"retry_max_attempts", c.RetryMaxAttempts, "retry_initial_interval", c.RetryInitialInterval.String(), "retry_max_interval", c.RetryMaxInterval.String(),
		"breaker_failure_ratio", c.BreakerFailureRatio, "breaker_min_requests", c.BreakerMinRequests, "breaker_open_timeout", c.BreakerOpenTimeout.String(),
		"breaker_consecutive_failures", c.BreakerConsecutiveFailures, "app_health_path", c.AppHealthPath,
		"dedupe_ttl", c.DedupeTTL.String(), "dedupe_lease", c.DedupeLease.String(), "claim_idle", c.ClaimIdle.String(),
		"subscribe_from", c.SubscribeFrom, "stream_max_len", c.StreamMaxLen, "stream_max_age", c.StreamMaxAge.String(),
		"api_token_set", c.APIToken != "", "admin_token_set", c.AdminToken != "", "app_token_set", c.AppToken != "",
		"shutdown_timeout", c.ShutdownBudget.String())
	if c.APIToken == "" && !isLoopback(s.PublishAddr()) {
		s.log.Warn("FERRY_LISTEN_ADDR is not loopback and FERRY_API_TOKEN is empty: anyone who reaches this port can publish; set FERRY_API_TOKEN or listen on 127.0.0.1",
			"listen_addr", s.PublishAddr())
	}
	if c.AdminToken == "" && !isLoopback(s.AdminAddr()) {
		s.log.Warn("FERRY_ADMIN_ADDR is not loopback and no admin token is set: /metrics is readable by anyone who reaches this port (/v1/* answers loopback callers only); set FERRY_ADMIN_TOKEN or a NetworkPolicy",
			"admin_addr", s.AdminAddr())
	}
	if c.DedupeLease <= c.DeliveryTimeout {
		s.log.Warn("FERRY_DEDUPE_LEASE is not above FERRY_DELIVERY_TIMEOUT: a slow delivery can outlive its claim and another replica may deliver the same message at the same time",
			"dedupe_lease", c.DedupeLease.String(), "delivery_timeout", c.DeliveryTimeout.String())
	}
	if u, err := url.Parse(c.RedisURL); err == nil && u.Query().Get("skip_verify") == "true" {
		s.log.Warn("FERRY_REDIS_URL has skip_verify=true: the Redis server certificate is not verified; remove it and use FERRY_REDIS_CA_FILE")
	}
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
