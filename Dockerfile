# syntax=docker/dockerfile:1
# The origin as a container image: `failsoft worker` by default, and the
# operator commands (`failsoft dlq list|show|replay|purge`) with another
# command. README.md, "Deploy", has the settings it reads.
#
#   docker build -t failsoft-origin .
#   docker run --rm -p 8788:8788 --env-file origin.env failsoft-origin
#   docker run --rm --env-file origin.env failsoft-origin dlq list
#
# Needs BuildKit (Docker 23+ uses it by default) for the cache mounts.

# ── build: the whole workspace (cargo reads every member's manifest), the
# release profile (LTO, stripped), Cargo.lock as it is.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p failsoft-origin --bin failsoft \
    && install -D -m 0755 target/release/failsoft /out/failsoft

# ── runtime: the binary, CA certificates for the CRM's and AWS's TLS, and
# curl for the health check (the slim image has no HTTP client).
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 failsoft \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin failsoft
COPY --from=build /out/failsoft /usr/local/bin/failsoft
USER 10001:10001

# The worker's edge-facing API (results, edge reports, POST /v1/events) and
# /healthz. It listens on loopback unless told otherwise; in a container it
# must take connections from outside. The health check follows this port:
# change both together. The operator's surface (/metrics, /v1/health, the
# dashboard) stays on FAILSOFT_OPERATOR_LISTEN's default, 127.0.0.1:8789,
# inside the container: set it (e.g. 0.0.0.0:8789) and publish it only
# toward your monitoring.
ENV FAILSOFT_ORIGIN_LISTEN=0.0.0.0:8788
EXPOSE 8788

# Liveness of the worker only (/healthz answers 200 while the process runs,
# whatever the CRM's state): a CRM outage must not get the worker restarted.
# One-off operator commands serve no /healthz; they exit before it matters.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8788/healthz"]

ENTRYPOINT ["failsoft"]
CMD ["worker"]
