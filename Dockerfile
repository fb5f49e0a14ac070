# syntax=docker/dockerfile:1.7
# IO: one image for every role. The command picks it:
#   io all | io api | io gateway | io matcher | io migrate
# Build: docker build -t io:local .   (docker-compose.yml does this)

ARG RUST_VERSION=1
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the target dir between builds, so a code
# change recompiles IO's crates only. The binary is copied out of the cached
# target dir (which is not part of the layer).
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin io \
 && install -D -m 0755 target/release/io /out/io

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates: rediss://, smtps:// and Postgres TLS. curl: the health check.
# tini: PID 1 that forwards SIGTERM (the gateway drains on it) and reaps.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 io \
 && useradd --system --uid 10001 --gid io --home-dir /var/lib/io --create-home \
      --shell /usr/sbin/nologin io
COPY --from=build /out/io /usr/local/bin/io
COPY web /usr/share/io/web
COPY migrations /usr/share/io/migrations

# Listen on every interface inside the container; the metrics port is for the
# compose network / cluster only and is never published.
ENV IO_HTTP_ADDR=0.0.0.0:8080 \
    IO_METRICS_ADDR=0.0.0.0:9100 \
    IO_WEB_DIR=/usr/share/io/web \
    IO_LOG_FORMAT=json
# `io all` keeps its SQLite file and generated JWT secret here.
WORKDIR /var/lib/io
USER io:io
EXPOSE 8080 9100
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${IO_HTTP_ADDR##*:}/healthz" >/dev/null || exit 1
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/io"]
CMD ["all"]
