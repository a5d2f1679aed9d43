# syntax=docker/dockerfile:1
#
# ferry container image: a static binary on distroless, running as nonroot.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t ferry .
#
# deploy/deploy_test.go builds the binary with the same flags as the build
# stage below and checks this file still carries them: change both together.

# Pin by digest (golang:1.26@sha256:…) in CI for reproducible builds.
FROM golang:1.26 AS build
WORKDIR /src

# Dependencies first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download

COPY . .
ARG VERSION=dev
# CGO_ENABLED=0: no libc, so the binary runs on distroless/static.
# -trimpath: no build-machine paths in the binary. -s -w: no symbol table, no DWARF.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/ferry-sidecar/ferry/sidecar.Version=${VERSION}" -o /out/ferry ./cmd/ferry

# distroless has no shell to mkdir/chown in, so the outbox directory is made
# here and copied with nonroot's uid:gid (65532). A named Docker volume mounted
# on /var/lib/ferry starts as a copy of it, owned by nonroot. In Kubernetes the
# volume replaces it: emptyDir is world-writable; a PVC needs fsGroup: 65532
# (see deploy/kubernetes/components/ferry/sidecar.yaml).
RUN mkdir -p /out/var/lib/ferry/outbox

FROM gcr.io/distroless/static-debian12:nonroot
# On distroless's PATH (/usr/local/bin), so that the admin subcommands work
# by name: kubectl exec deploy/shop -c ferry -- ferry deadletters orders
COPY --from=build /out/ferry /usr/local/bin/ferry
COPY --from=build --chown=65532:65532 /out/var/lib/ferry /var/lib/ferry
ENV FERRY_OUTBOX_DIR=/var/lib/ferry/outbox
VOLUME /var/lib/ferry
USER nonroot
# 7400: publish API. It listens on 127.0.0.1 by default (FERRY_LISTEN_ADDR):
# in a pod the app reaches it on localhost and nothing else can. For
# `docker run -p 7400:7400` set FERRY_LISTEN_ADDR=:7400 and FERRY_API_TOKEN.
# 7401: admin API (/healthz, /readyz, /metrics, /v1/*), all interfaces.
EXPOSE 7400 7401
ENTRYPOINT ["/usr/local/bin/ferry"]
