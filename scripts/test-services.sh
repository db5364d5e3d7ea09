#!/usr/bin/env bash
# What the test suite needs besides the venv: PostgreSQL (started if installed but stopped),
# Redis for the shared rate-limit test, and Debian's Chromium for the browser tests.
set -euo pipefail
host=${FINDME_TEST_PGHOST:-127.0.0.1}
port=${FINDME_TEST_PGPORT:-5432}

pg_ready() { pg_isready -q -h "$host" -p "$port" 2>/dev/null; }
if ! pg_ready; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    for version in $(ls /etc/postgresql); do
      echo "PostgreSQL $version is installed but not running: starting it." >&2
      pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    done
    for _ in $(seq 1 30); do pg_ready && break; sleep 1; done
  fi
fi
if ! pg_ready; then
  echo "No PostgreSQL answers on $host:$port. The tests need one: install PostgreSQL" \
       "(apt-get install postgresql) or point FINDME_TEST_PGHOST/FINDME_TEST_PGPORT at a server" \
       "that accepts the user postgres." >&2
  exit 1
fi

apt_install() { "$(dirname "$0")/apt-install.sh" "$@"; }

redis_ready() { (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; }
if ! redis_ready; then
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  echo "Redis is not running: starting it." >&2
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 20); do redis_ready && break; sleep 0.5; done
fi

[ -x /usr/bin/chromium ] || apt_install chromium
exit 0
