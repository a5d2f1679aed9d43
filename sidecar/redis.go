package sidecar

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// newRedis builds the Redis client from FERRY_REDIS_URL and the TLS files.
// Errors never contain the URL: it may hold a password.
func newRedis(cfg Config) (redis.UniversalClient, error) {
	opts, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, &ConfigError{Var: EnvPrefix + "REDIS_URL", Err: errors.New("not a valid redis:// or rediss:// URL")}
	}
	if opts.TLSConfig != nil {
		opts.TLSConfig.MinVersion = tls.VersionTLS12
		if cfg.RedisCAFile != "" {
			pem, err := os.ReadFile(cfg.RedisCAFile)
			if err != nil {
				return nil, &ConfigError{Var: EnvPrefix + "REDIS_CA_FILE", Err: err}
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, &ConfigError{Var: EnvPrefix + "REDIS_CA_FILE", Err: errors.New("no PEM certificate found")}
			}
			opts.TLSConfig.RootCAs = pool
		}
		if cfg.RedisCertFile != "" {
			cert, err := tls.LoadX509KeyPair(cfg.RedisCertFile, cfg.RedisKeyFile)
			if err != nil {
				return nil, &ConfigError{Var: EnvPrefix + "REDIS_CERT_FILE", Err: err}
			}
			opts.TLSConfig.Certificates = []tls.Certificate{cert}
		}
	} else if cfg.RedisCAFile != "" || cfg.RedisCertFile != "" {
		return nil, &ConfigError{Var: EnvPrefix + "REDIS_CA_FILE", Err: errors.New("TLS files are set but FERRY_REDIS_URL is not rediss://")}
	}
	opts.DialTimeout = 2 * time.Second
	opts.ReadTimeout = 5 * time.Second
	opts.WriteTimeout = 5 * time.Second
	opts.MaxRetries = 1
	opts.PoolSize = max(opts.PoolSize, 32)
	return redis.NewClient(opts), nil
}

// redisHealth follows ferry_redis_up from the outcome of every command and
// logs each transition once.
type redisHealth struct {
	up atomic.Bool
	// outages counts up-to-down transitions: state taken in Redis before
	// one may be gone after it (a restart without persistence).
	outages atomic.Uint64
	m       *Metrics
	log     *slog.Logger
}

func newRedisHealth(m *Metrics, log *slog.Logger) *redisHealth {
	h := &redisHealth{m: m, log: log}
	m.RedisUp.Set(0)
	return h
}

// Up reports whether the last Redis command succeeded.
func (h *redisHealth) Up() bool { return h.up.Load() }

// Outages is the number of times Redis went from up to down.
func (h *redisHealth) Outages() uint64 { return h.outages.Load() }

func (h *redisHealth) observe(err error) {
	switch {
	case err == nil, errors.Is(err, redis.Nil):
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded) && !isNetErr(err):
		return // our own cancellation says nothing about Redis
	default:
		var rerr redis.Error
		if errors.As(err, &rerr) && !redis.HasErrorPrefix(err, "LOADING") && !redis.HasErrorPrefix(err, "READONLY") && !redis.HasErrorPrefix(err, "MASTERDOWN") {
			break // Redis answered, with an error about the command
		}
		if h.up.Swap(false) {
			h.outages.Add(1)
			h.log.Warn("redis down", "err", redactErr(err))
		}
		h.m.RedisUp.Set(0)
		return
	}
	if !h.up.Swap(true) {
		h.log.Info("redis up")
	}
	h.m.RedisUp.Set(1)
}

func isNetErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne)
}

// redactErr keeps error text free of credentials: go-redis errors carry
// addresses at most, but a dial error is formatted here to be sure.
func redactErr(err error) string {
	var op *net.OpError
	if errors.As(err, &op) {
		return fmt.Sprintf("%s %s: %v", op.Op, op.Net, op.Err)
	}
	return err.Error()
}

// hook implements redis.Hook.
func (h *redisHealth) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			h.observe(err)
		}
		return c, err
	}
}

func (h *redisHealth) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.observe(err)
		return err
	}
}

func (h *redisHealth) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		h.observe(err)
		return err
	}
}
