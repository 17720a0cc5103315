#!/usr/bin/env bash
# Runs the whole product on embedded defaults — no Kafka, MongoDB or Docker:
#   generator  → data/events/        (the batch-file log, a new file every second)
#   aggregator → data/results.sqlite (one pipeline per file in sql/)
#   dashboard  → http://localhost:8501 (reads data/results.sqlite)
# Ctrl-C stops everything; run it again and the pipelines resume from their checkpoints.
# PROFILE=release for an optimised build (slower to build, much faster to run).
set -euo pipefail
cd "$(dirname "$0")"
profile="${PROFILE:-dev}"
cargo build --profile "$profile" -p generator -p aggregator -p dashboard
bin="target/$([ "$profile" = dev ] && echo debug || echo "$profile")"
mkdir -p data/events

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# 100 events per second of event time, one file per second, starting now.
"$bin/generator" --out data/events --count 100000000 --batch-size 100 --interval-seconds 1 \
    --events-per-second 100 --out-of-order-share 0.05 --late-share 0.001 &
pids+=($!)
"$bin/aggregator" --sql sql --source file:data/events --sink sqlite:data/results.sqlite \
    --checkpoint-dir data/checkpoints 2> data/aggregator.log &
pids+=($!)
echo "aggregator log: data/aggregator.log; results: data/results.sqlite"
echo "dashboard: open http://localhost:8501"
"$bin/dashboard" --store sqlite:data/results.sqlite --listen 127.0.0.1:8501
