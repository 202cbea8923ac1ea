#!/usr/bin/env bash
# Install (Debian package) and start a local PostgreSQL for the store tests; print its URL.
# Used by .ci/run. Safe to run twice. Prints nothing on stdout but the URL; exits non-zero on failure.
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then echo "not root: cannot install postgresql" >&2; exit 1; fi
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >/dev/null 2>&1
fi
ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h 2>/dev/null | grep -q online; then
  pg_lsclusters -h | grep -q "^$ver main" || pg_createcluster "$ver" main >/dev/null 2>&1
  pg_ctlcluster "$ver" main start >&2
fi
port=$(pg_lsclusters -h | awk '$2=="main"{print $3; exit}')
su postgres -c "psql -q -p $port -c \"ALTER USER postgres PASSWORD 'turnout-test'\"" >/dev/null
su postgres -c "psql -q -p $port -tc \"SELECT 1 FROM pg_database WHERE datname='turnout_test'\"" | grep -q 1 \
  || su postgres -c "createdb -p $port turnout_test"
echo "postgresql://postgres:turnout-test@127.0.0.1:$port/turnout_test"
