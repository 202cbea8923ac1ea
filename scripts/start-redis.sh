#!/usr/bin/env bash
# Install (Debian package) and start a local redis-server for the gateway tests; print its URL.
# Used by .ci/run. Safe to run twice. Prints nothing on stdout but the URL; exits non-zero on failure.
set -euo pipefail
port=${TURNOUT_TEST_REDIS_PORT:-6390}
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then echo "not root: cannot install redis-server" >&2; exit 1; fi
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null 2>&1
fi
if ! redis-cli -p "$port" ping >/dev/null 2>&1; then
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes >/dev/null
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
redis-cli -p "$port" ping >/dev/null
echo "redis://127.0.0.1:$port/0"
