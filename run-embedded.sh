#!/usr/bin/env bash
# Runs the whole product on embedded defaults — no Kafka, MongoDB or Docker:
#   generator  → data/events/        (the batch-file log, a new file every second)
#   aggregator → data/results.sqlite (one pipeline per file in sql/)
#   dashboard  → http://localhost:8501 (reads data/results.sqlite)
# Ctrl-C, or SIGTERM/SIGINT to this script's PID (kill, a supervisor), stops everything;
# run it again and the pipelines resume from their checkpoints.
# PROFILE=release for an optimised build (slower to build, much faster to run).
# BIN_DIR=<dir> runs the binaries already in <dir> instead of building them.
set -euo pipefail
cd "$(dirname "$0")"
profile="${PROFILE:-dev}"

# Every child runs in the background and the script waits with the `wait` builtin: a
# trap runs as soon as a signal arrives (bash would hold it until a foreground child
# exits). On a signal, or when any child exits, the others get SIGTERM (the aggregator
# then checkpoints) and the script waits for them.
pids=()
stop() {
    trap - EXIT INT TERM
    if [ ${#pids[@]} -gt 0 ]; then
        kill -TERM -- "${pids[@]}" 2>/dev/null || true
    fi
    wait || true
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
trap stop EXIT

if [ -z "${BIN_DIR:-}" ]; then
    # Its own process group (setsid), so that a stop ends cargo's compilers too: the
    # negative PID below is the group.
    setsid cargo build --profile "$profile" -p generator -p aggregator -p dashboard &
    pids=("-$!")
    wait "$!"
    pids=()
    BIN_DIR="target/$([ "$profile" = dev ] && echo debug || echo "$profile")"
fi
mkdir -p data/events

# 100 events per second of event time, one file per second, starting now.
"$BIN_DIR/generator" --out data/events --count 100000000 --batch-size 100 --interval-seconds 1 \
    --events-per-second 100 --out-of-order-share 0.05 --late-share 0.001 &
pids+=($!)
"$BIN_DIR/aggregator" --sql sql --source file:data/events --sink sqlite:data/results.sqlite \
    --checkpoint-dir data/checkpoints 2> data/aggregator.log &
pids+=($!)
"$BIN_DIR/dashboard" --store sqlite:data/results.sqlite --listen "${DASHBOARD_LISTEN:-127.0.0.1:8501}" &
pids+=($!)
echo "aggregator log: data/aggregator.log; results: data/results.sqlite"
echo "dashboard: open http://${DASHBOARD_LISTEN:-127.0.0.1:8501}"
# Until a child exits (or a signal arrives): then the EXIT trap stops the others.
status=0
wait -n || status=$?
exit "$status"
