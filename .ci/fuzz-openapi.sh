#!/usr/bin/env bash
# The schema-driven fuzz run of .ci/run: schemathesis (from PyPI) reads each server's OpenAPI
# document (GET /openapi.json) and sends what it generates from it to a live imgapi, a live
# agent and a live cloudapi on private loopback ports, for a bounded time each. A failure is a
# 5xx, a status the document does not declare, or a body that does not match its schema.
#
# Usage: .ci/fuzz-openapi.sh [SECONDS_PER_SERVER]   (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}

# schemathesis in a virtualenv outside the clone, reused by the next run.
venv=${SCHEMATHESIS_VENV:-/var/tmp/schemathesis-venv}
version=4.32.5
if ! "$venv/bin/st" --version 2>/dev/null | grep -q "$version"; then
    rm -rf "$venv"
    if ! python3 -m venv "$venv" 2>/dev/null; then
        # Debian's own python3 needs its venv module from a package.
        sudo_cmd=""
        [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
        $sudo_cmd apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
        rm -rf "$venv"
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q "schemathesis==$version"
fi

cargo build --locked -q --bin imgapi --bin agent --bin cloudapi

work=$(mktemp -d /tmp/openapi-fuzz.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# A free loopback port.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_for() {
    for _ in $(seq 100); do
        curl -sf "$1" >/dev/null && return 0
        sleep 0.1
    done
    echo "fuzz-openapi: $1 does not answer" >&2
    return 1
}

imgapi_port=$(port)
cat >"$work/imgapi.json" <<EOF
{"datadir": "$work/imgapi-data", "port": $imgapi_port, "host": "127.0.0.1", "log_level": "error",
 "userdb": [{"name": "admin", "password": "fuzz-password"}]}
EOF
target/debug/imgapi -s -c "$work/imgapi.json" >"$work/imgapi.log" 2>&1 &
pids+=($!)

agent_port=$(port)
token=fuzz-token-0123456789abcdef
cat >"$work/agent.json" <<EOF
{"listen": "127.0.0.1:$agent_port", "auth": {"tokens": ["$token"]}, "sources": [],
 "storage": {"backend": "files", "dir": "$work/agent/images"},
 "instances": {"hypervisor": "qemu", "dir": "$work/agent/instances", "run_dir": "$work/agent/run",
               "qemu": {"accel": "tcg"}},
 "log_level": "error"}
EOF
target/debug/agent serve -c "$work/agent.json" >"$work/agent.log" 2>&1 &
pids+=($!)

# Users hold one token, hosts join with another: the fuzzer calls as a user, so that it cannot
# register hosts (whose URLs it would make up) for instances to be placed on. The one host
# (below) never times out: calls to an `unknown` host are 503 `HostUnavailable` by design.
cloudapi_port=$(port)
cloudapi_token=fuzz-cloudapi-token-0123456789
join_token=fuzz-join-token-0123456789abcdef
cat >"$work/cloudapi.json" <<EOF
{"listen": "127.0.0.1:$cloudapi_port", "database": "sqlite://$work/cloudapi/cloudapi.db",
 "auth": {"tokens": ["$cloudapi_token"]}, "join_tokens": ["$join_token"], "host_timeout_secs": 86400,
 "log_level": "warn"}
EOF
target/debug/cloudapi serve -c "$work/cloudapi.json" >"$work/cloudapi.log" 2>&1 &
pids+=($!)

wait_for "http://127.0.0.1:$imgapi_port/ping"
wait_for "http://127.0.0.1:$agent_port/api/v1/ping"
wait_for "http://127.0.0.1:$cloudapi_port/api/v1/ping"

# One host in cloudapi's fleet, so that the answers that list hosts and instances have some to
# check, and so that what cloudapi passes on to a host is fuzzed too: the agent above,
# registered, drained (nothing is placed on it), with a heartbeat that reports an image and an
# instance (which cloudapi adopts). The agent has no `cluster` section, so it refuses cloudapi's
# credential (401) on every route that changes it: calls reach it and change nothing, even
# creates placed there should the fuzzer undrain it.
cloudapi=http://127.0.0.1:$cloudapi_port/api/v1
registered=$(curl -sf -X POST "$cloudapi/hosts" -H "Authorization: Bearer $join_token" \
    -H 'Content-Type: application/json' \
    -d '{"name": "fuzz-host", "url": "http://127.0.0.1:'"$agent_port"'", "hypervisor": "qemu",
         "tags": {"rack": "a"}, "capacity": {"vcpus": 8, "memory_mib": 16384, "disk_free_mib": 102400}}')
host_id=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])' <<<"$registered")
credential=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["credential"])' <<<"$registered")
curl -sf -o /dev/null -X POST "$cloudapi/hosts/$host_id?action=drain" -H "Authorization: Bearer $cloudapi_token"
curl -sf -X PUT "$cloudapi/hosts/$host_id/heartbeat" -H "Authorization: Bearer $credential" \
    -H 'Content-Type: application/json' \
    -d '{"capacity": {"vcpus": 8, "memory_mib": 16384, "disk_free_mib": 102400},
         "allocated": {"vcpus": 1, "memory_mib": 512, "disk_mib": 10240},
         "images": [{"uuid": "0d8cf0a4-3a1b-4c5e-9d3e-1b2c3d4e5f60", "origin": null, "size": 1048576}],
         "instances": [{"uuid": "6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b", "alias": "adopted-1",
                        "state": "running", "image": "0d8cf0a4-3a1b-4c5e-9d3e-1b2c3d4e5f60",
                        "vcpus": 1, "memory_mib": 512, "disk_mib": 10240}]}'

# One worker: several threads trip a CPython 3.11 AST bug in hypothesis.
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
status=0
# schemathesis keeps a cache in its working directory: the temp one, not the clone.
st() { (cd "$work" && "$venv/bin/st" "$@"); }
echo "fuzz-openapi: imgapi, ${seconds}s"
st run "http://127.0.0.1:$imgapi_port/openapi.json" --url "http://127.0.0.1:$imgapi_port" \
    --auth admin:fuzz-password --checks "$checks" --max-time "$seconds" -w 1 --no-color || status=1
# Not fuzzed on the agent: what drives the host itself. Creating an instance starts QEMU,
# fetching an ISO goes to the URL given, creating a switch adds a bridge to the host's network;
# their checks are tested in the integration tests instead.
echo "fuzz-openapi: agent, ${seconds}s"
st run "http://127.0.0.1:$agent_port/api/v1/openapi.json" --url "http://127.0.0.1:$agent_port" \
    -H "Authorization: Bearer $token" --checks "$checks" --max-time "$seconds" -w 1 --no-color \
    --exclude-operation-id create_instance --exclude-operation-id fetch_iso \
    --exclude-operation-id create_switch || status=1
# Everything on cloudapi, creates included: with its one host drained, a create is a dry run, a
# refusal (422 NoCapacity) or of an image no source has.
echo "fuzz-openapi: cloudapi, ${seconds}s"
st run "$cloudapi/openapi.json" --url "http://127.0.0.1:$cloudapi_port" \
    -H "Authorization: Bearer $cloudapi_token" --checks "$checks" --max-time "$seconds" -w 1 --no-color \
    || status=1
if [ "$status" -ne 0 ]; then
    echo "fuzz-openapi: failures; the servers' logs:" >&2
    tail -n 50 "$work/imgapi.log" "$work/agent.log" "$work/cloudapi.log" >&2
fi
exit "$status"
