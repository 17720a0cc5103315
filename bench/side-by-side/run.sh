#!/usr/bin/env bash
# Side-by-side benchmark: ours, Flink SQL, Spark Structured Streaming and DuckDB (batch)
# on the same generated files with the same queries, at 1 and 2 cores. Not in CI.
#
#   bench/side-by-side/run.sh
#
# Environment:
#   QUERIES="q17 q11"    the queries to run (default: all; see bench.py)
#   CORES="1 2"          core counts (each run under taskset -c 0 / -c 0,1)
#   ENGINES="ours flink spark duckdb"
#   EVENTS_SCALE=0.01    shrink the event counts (a quick check)
#   BIN_DIR=<dir>        use aggregator and generator already built there (else: cargo build --release)
#   PEERS_VENV=<dir>     the Python venv with the peers (default target/peers; installed if missing)
#   KEEP_RUNS=1          keep every run's logs, checkpoints and results under target/bench-data/side-by-side/runs
# Results: a table on stdout, also written to target/bench-data/side-by-side/results.md.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"

if [[ -z "${BIN_DIR:-}" ]]; then
    cargo build --release -p aggregator -p generator
    BIN_DIR="${CARGO_TARGET_DIR:-$repo/target}/release"
fi
for bin in aggregator generator; do
    [[ -x "$BIN_DIR/$bin" ]] || { echo "no $BIN_DIR/$bin" >&2; exit 1; }
done

PEERS_VENV=${PEERS_VENV:-$repo/target/peers}
PEERS="apache-flink==2.3.0 pyspark==3.5.8 duckdb==1.5.6"
if ! "$PEERS_VENV/bin/python" -c 'import pyflink.table, pyspark.sql, duckdb' 2>/dev/null; then
    echo "installing $PEERS into $PEERS_VENV" >&2
    python3 -m venv "$PEERS_VENV"
    "$PEERS_VENV/bin/pip" install --quiet --upgrade pip
    # shellcheck disable=SC2086
    "$PEERS_VENV/bin/pip" install --quiet $PEERS
fi
command -v java >/dev/null || { echo "Flink and Spark need Java (17) on PATH" >&2; exit 1; }
command -v taskset >/dev/null || { echo "taskset (util-linux) is needed" >&2; exit 1; }

exec "$PEERS_VENV/bin/python" "$here/bench.py" --repo "$repo" --bin-dir "$BIN_DIR" \
    --data-root "$repo/target/bench-data/side-by-side"
