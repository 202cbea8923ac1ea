#!/usr/bin/env bash
# Install Debian's chromium for the dashboard's browser tests (Playwright drives it; no browser download).
# Used by .ci/run. Safe to run twice. Prints the executable's path.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then echo "not root: cannot install chromium" >&2; exit 1; fi
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1
fi
command -v chromium
