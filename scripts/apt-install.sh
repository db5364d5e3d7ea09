#!/usr/bin/env bash
# Install Debian packages the tests or benchmarks need, or say how to.
set -euo pipefail
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "Install $* (Debian packages), then run the command again." >&2
  exit 1
fi
echo "Installing $* ..." >&2
apt-get install -y -q "$@" >/dev/null 2>&1 \
  || { apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null; }
