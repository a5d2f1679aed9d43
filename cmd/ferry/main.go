// Command ferry is the reliable-messaging sidecar: it reads FERRY_*
// variables, runs the sidecar until SIGTERM or SIGINT, drains, and exits.
//
// Exit codes: 0 clean stop with the outbox empty; 1 a runtime error, or
// records left in the outbox after the shutdown budget; 2 bad configuration.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/ferry-sidecar/ferry/config"
	"github.com/ferry-sidecar/ferry/internal/redisconn"
	"github.com/ferry-sidecar/ferry/sidecar"
)

func main() {
	os.Exit(run(os.Stderr))
}

func run(stderr io.Writer) int {
	if code, handled := cli(os.Args[1:], os.Stdout, stderr, sidecar.Version); handled {
		return code // a subcommand (cli.go); no arguments runs the sidecar
	}
	cfg, err := config.Load(nil)
	if err != nil {
		fmt.Fprintf(stderr, "ferry: invalid configuration:\n  %s\n", strings.ReplaceAll(err.Error(), "\n", "\n  "))
		return 2
	}
	log := newLogger(cfg, stderr)
	redis.SetLogger(redisconn.NewLogger(log.With("component", "go-redis")))

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	sc, err := sidecar.New(cfg, log, reg, reg)
	if err != nil {
		var cerr *config.VarError
		if errors.As(err, &cerr) {
			fmt.Fprintf(stderr, "ferry: invalid configuration:\n  %s\n", err)
			return 2
		}
		log.Error("start", "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := sc.Run(ctx); err != nil {
		var undrained *sidecar.UndrainedError
		if !errors.As(err, &undrained) {
			log.Error("run", "err", err)
		}
		return 1
	}
	return 0
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
