# syntax=docker/dockerfile:1
# Images for the three binaries, one target each:
#
#   DOCKER_BUILDKIT=1 docker build --target aggregator -t sql-aggregator/aggregator .
#   DOCKER_BUILDKIT=1 docker build --target generator  -t sql-aggregator/generator .
#   DOCKER_BUILDKIT=1 docker build --target dashboard  -t sql-aggregator/dashboard .
#
# Needs BuildKit (Docker 18.09+; the default of `docker build` since Docker 23 and of
# Compose v2). With Docker < 23 or docker-compose 1.x, export DOCKER_BUILDKIT=1
# COMPOSE_DOCKER_CLI_BUILD=1 first, else the build stops at the first `RUN --mount`.

FROM rust:1.95-slim-bookworm AS builder
# librdkafka is built from source by rdkafka-sys (its configure script and make):
# a C/C++ toolchain, python3, perl and pkg-config. So are the libraries it uses for
# Kafka TLS and SASL SCRAM (OpenSSL, by openssl-src: perl and make) and for gzip and
# zstd topics (zlib, zstd): no -dev packages. No cmake (no cmake-build feature).
# MongoDB's TLS is rustls.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential python3 perl pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The registry and target dir are cache mounts, kept between builds, so the
# binaries are copied out of target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p aggregator -p generator -p dashboard \
    && mkdir -p /out \
    && cp target/release/aggregator target/release/generator target/release/dashboard /out/

# What every runtime image has: CA certificates (Kafka's TLS finds them with
# ssl.ca.location=probe, our default), a non-root user (app, uid 10001), /app.
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app
WORKDIR /app

FROM runtime AS aggregator
COPY sql/ /app/sql/
COPY schemas/ /app/schemas/
# Created here, owned by the user, so a named volume mounted on it starts writable.
RUN install -d -o app -g app /var/lib/aggregator/checkpoints /app/data
ENV AGGREGATOR_CHECKPOINT_DIR=/var/lib/aggregator/checkpoints
COPY --from=builder /out/aggregator /usr/local/bin/aggregator
USER 10001:10001
# `docker stop` sends SIGTERM: the aggregator finishes its batches and checkpoints.
ENTRYPOINT ["/usr/local/bin/aggregator"]

FROM runtime AS generator
# The generator writes its batch files under data/events before publishing them.
RUN install -d -o app -g app /app/data
COPY --from=builder /out/generator /usr/local/bin/generator
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/generator"]

FROM runtime AS dashboard
RUN install -d -o app -g app /app/data
COPY --from=builder /out/dashboard /usr/local/bin/dashboard
USER 10001:10001
EXPOSE 8501
ENTRYPOINT ["/usr/local/bin/dashboard"]
