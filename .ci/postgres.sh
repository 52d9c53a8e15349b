#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for the registry tests and print its URL on stdout.
# Usage: eval "export CRLAB_TEST_PG_URL=$(bash .ci/postgres.sh)"   (needs Debian's postgresql package)
set -euo pipefail
port="${CRLAB_PG_PORT:-55432}"
data="${CRLAB_PG_DIR:-/tmp/crlab-pg-$port}"
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bin" ] || { echo "postgresql is not installed (apt-get install postgresql)" >&2; exit 1; }
run_as() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi; }
if ! run_as "$bin/pg_isready -q -h 127.0.0.1 -p $port" 2>/dev/null; then
  rm -rf "$data"; mkdir -p "$data"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$data"
  run_as "$bin/initdb -D $data -U postgres --auth=trust -E UTF8 >/dev/null"
  run_as "$bin/pg_ctl -D $data -l $data/server.log -w -o '-p $port -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off' start >/dev/null"
fi
run_as "$bin/psql -h 127.0.0.1 -p $port -U postgres -tAc \"SELECT 1 FROM pg_database WHERE datname='crlab_test'\"" | grep -q 1 \
  || run_as "$bin/createdb -h 127.0.0.1 -p $port -U postgres crlab_test"
echo "postgresql://postgres@127.0.0.1:$port/crlab_test"
