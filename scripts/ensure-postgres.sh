#!/usr/bin/env bash
# Make sure the PostgreSQL the tests use answers; start the local cluster if it is stopped.
set -euo pipefail
host=${FINDME_TEST_PGHOST:-127.0.0.1}
port=${FINDME_TEST_PGPORT:-5432}

ready() { pg_isready -q -h "$host" -p "$port" 2>/dev/null; }

ready && exit 0
if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  for version in $(ls /etc/postgresql); do
    echo "PostgreSQL $version is installed but not running: starting it." >&2
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  done
  for _ in $(seq 1 30); do ready && exit 0; sleep 1; done
fi
echo "No PostgreSQL answers on $host:$port. The tests need one: install PostgreSQL" \
     "(apt-get install postgresql) or point FINDME_TEST_PGHOST/FINDME_TEST_PGPORT at a server" \
     "that accepts the user postgres." >&2
exit 1
