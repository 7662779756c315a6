#!/usr/bin/env bash
# The fleet benchmark: 1,000 simulated hosts heartbeating every 5 s with 100 instances each
# (100,000 in PostgreSQL), dry_run placements without and with that load, and an instance's
# create-to-running through cloudapi against straight on the agent (with the test guest, if
# AGENT_TEST_GUEST names it). Starts a private PostgreSQL (cloudapi/tests/postgres-setup.sh,
# port 55433), builds the release binaries, and writes bench/results/fleet.md.
# Environment: HOSTS, PER_HOST, SECS, DRY_RUNS, CREATES (see cloudapi/examples/fleet_bench.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
export CLOUDAPI_TEST_PG_PORT=55433
pg_dir=/var/tmp/fleet-bench-pg
admin=$(bash cloudapi/tests/postgres-setup.sh "$pg_dir")
trap 'bash cloudapi/tests/postgres-teardown.sh "$pg_dir" >/dev/null 2>&1 || true' EXIT
cargo build --release --locked -p cloudapi --bin cloudapi --example fleet_bench -p agent --bin agent
out=bench/results/fleet.md
{
    echo "# Fleet benchmark"
    echo
    echo "$(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD), $(nproc) cores: cloudapi, PostgreSQL and the load generator share them."
    echo
    PG_ADMIN=$admin target/release/examples/fleet_bench | sed -n '/^| measure/,$p'
} > "$out.tmp"
mv "$out.tmp" "$out"
cat "$out"
