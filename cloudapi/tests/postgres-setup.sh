#!/usr/bin/env bash
# Starts a private PostgreSQL (Debian's package, installed if missing) for cloudapi's tests:
# on 127.0.0.1:$PORT (default 55432), its data and socket under DIR (default
# /var/tmp/cloudapi-test-pg), trust auth for the postgres user. Prints the admin URL.
# Stop it with postgres-teardown.sh.
set -euo pipefail
port=${CLOUDAPI_TEST_PG_PORT:-55432}
dir=${1:-/var/tmp/cloudapi-test-pg}
if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then su postgres -s /bin/sh -c "$1"; else sh -c "$1"; fi
}
# A server left by an earlier run is stopped first: each run starts from an empty cluster.
if [ -f "$dir/data/postmaster.pid" ]; then
    as_postgres "$bin/pg_ctl -D $dir/data -m fast -w stop" >/dev/null 2>&1 || true
fi
rm -rf "$dir"
mkdir -p "$dir"
[ "$(id -u)" -ne 0 ] || chown postgres "$dir"
as_postgres "$bin/initdb -D $dir/data -A trust -U postgres" >/dev/null
as_postgres "$bin/pg_ctl -D $dir/data -l $dir/log -w -o '-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300' start" >/dev/null
echo "postgres://postgres@127.0.0.1:$port/postgres"
