# JetStream Bridge: one image with both binaries, `relay` and `sink`.
#
#   docker build -t jetstream-bridge .
#   docker run --rm jetstream-bridge relay --help
#   docker run --rm jetstream-bridge sink --help
#
# Configuration is entirely environment variables (see `relay --help`,
# `sink --help`). HTTP_ADDR defaults to :8080 in this image: /healthz, /readyz
# and /metrics on port 8080.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not re-download modules.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/relay ./cmd/sink

FROM debian:bookworm-slim
# ca-certificates for TLS to NATS and Postgres; curl for health checks
# (docker compose, Kubernetes exec probes).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/relay /out/sink /usr/local/bin/
ENV HTTP_ADDR=:8080 \
    LOG_FORMAT=json
EXPOSE 8080
# Unprivileged: neither binary needs root or a writable filesystem.
USER 65532:65532
# /healthz answers while the process runs. /readyz is stricter (a hot-standby
# relay is alive but not ready), so it is the readiness check, not this one.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
CMD ["relay", "run"]
