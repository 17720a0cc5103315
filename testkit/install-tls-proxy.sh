#!/usr/bin/env bash
# Makes sure Debian's socat is installed (the TLS-terminating proxy of the Kafka TLS
# tests, see testkit/src/tls.rs) and prints its path. Idempotent; installs with
# apt-get (as root, else with sudo) only if it is missing. Used by testkit on first
# use and by .ci/run.
set -euo pipefail
if ! command -v socat >/dev/null; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq socat >&2
fi
command -v socat
