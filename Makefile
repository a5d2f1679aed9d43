# ferry — the two commands are `make demo` and `make test`.
SHELL := /bin/bash
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/ferry-sidecar/ferry/sidecar.Version=$(VERSION)
GO ?= go
# Nested modules with heavy test-only dependencies (kustomize, k8s.io/api),
# kept out of ferry's go.mod; `./...` at the root does not reach them.
NESTED := deploy/kubetest examples/shipping

.PHONY: all build deps test test-ha test-nested test-observability test-short verify bench bench-guard fuzz demo vet fmt clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/ferry ./cmd/ferry

# deps installs what the tests and the demo need: redis-server, Debian's
# prometheus package (promtool for the alert-rule tests, the server for the
# dashboard test), and ip (iproute2) for the network namespaces of
# internal/netnstest.
deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	{ command -v promtool >/dev/null && command -v prometheus >/dev/null; } || missing="$$missing prometheus"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	$(GO) mod download
	for m in $(NESTED); do (cd $$m && $(GO) mod download) || exit 1; done

vet:
	$(GO) vet ./...
	for m in $(NESTED); do (cd $$m && $(GO) vet ./...) || exit 1; done
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }

# test: vet, gofmt, the whole suite with the race detector (fuzz seed corpora
# run as plain tests), and the hot-path benchmarks briefly as a regression guard.
test: deps vet
	$(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) test-nested
	$(MAKE) bench-guard

# test-ha: the Redis Cluster and Sentinel suites too long for `make test`
# (build tag ha, cmd/ferry): failover chaos (20,000 events, 2 publishing and
# 2 subscribing sidecars, the topic's primary killed 3 times, with and
# without FERRY_REDIS_WAIT_REPLICAS) per topology, the reshard of a busy
# topic's slot, and 64 topics over a cluster against standalone. FERRY_CHAOS_RUNS (default 1) runs per setting,
# FERRY_CHAOS_SEED replays the kill moments. The shorter cluster and
# sentinel tests (end to end in every mode, slots, relay WAIT) are
# in `make test`. .ci/run runs both.
test-ha: deps
	$(GO) test -tags ha -race -count=1 -v -timeout 20m -run '^(TestFailoverChaos|TestClusterSpread64Topics|TestReshardBusyTopic)' ./cmd/ferry/

# test-nested: the kustomize tests (render every kustomization under
# deploy/kubernetes and check each object); no race detector, nothing concurrent.
test-nested:
	for m in $(NESTED); do (cd $$m && $(GO) test -count=1 -timeout 5m ./...) || exit 1; done

# verify: the module cache matches go.sum, for ferry and each nested module.
verify:
	$(GO) mod verify
	for m in $(NESTED); do (cd $$m && $(GO) mod verify) || exit 1; done

# test-observability: the Grafana dashboard and the alert rules against a real
# Prometheus scraping two live sidecars (also part of `make test`).
test-observability: deps
	$(GO) test -race -count=1 -run '^TestDashboardAndAlertsAgainstPrometheus$$' -v ./cmd/ferry/

bench-guard:
	$(GO) test -run '^$$' -bench . -benchtime 100x ./outbox/ ./retry/ ./stream/ ./publish/ ./delivery/

bench: deps
	$(GO) run ./bench

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime 30s ./outbox/
	$(GO) test -run '^$$' -fuzz FuzzTruncate -fuzztime 30s ./outbox/
	$(GO) test -run '^$$' -fuzz '^FuzzPublishHandler$$' -fuzztime 30s ./sidecar/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeStrict$$' -fuzztime 30s ./sidecar/
	$(GO) test -run '^$$' -fuzz '^FuzzLoadConfig$$' -fuzztime 30s ./sidecar/
	$(GO) test -run '^$$' -fuzz '^FuzzValidTopic$$' -fuzztime 30s ./sidecar/
	$(GO) test -run '^$$' -fuzz '^FuzzValidKey$$' -fuzztime 30s ./sidecar/

demo: deps
	$(GO) run ./demo

clean:
	rm -rf bin
