#!/usr/bin/env bash
# Stops the PostgreSQL that postgres-setup.sh started (DIR as given to it).
set -euo pipefail
dir=${1:-/var/tmp/cloudapi-test-pg}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ] || exit 0
if [ "$(id -u)" -eq 0 ]; then
    su postgres -s /bin/sh -c "$bin/pg_ctl -D $dir/data -m fast -w stop" >/dev/null
else
    "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
fi
