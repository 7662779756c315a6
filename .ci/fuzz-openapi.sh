#!/usr/bin/env bash
# The schema-driven fuzz run of .ci/run: schemathesis (from PyPI) reads each server's OpenAPI
# document (GET /openapi.json) and sends what it generates from it to a live imgapi and a live
# agent on private loopback ports, for a bounded time each. A failure is a 5xx, a status the
# document does not declare, or a body that does not match its schema.
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

cargo build --locked -q --bin imgapi --bin agent

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

wait_for "http://127.0.0.1:$imgapi_port/ping"
wait_for "http://127.0.0.1:$agent_port/api/v1/ping"

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
if [ "$status" -ne 0 ]; then
    echo "fuzz-openapi: failures; the servers' logs:" >&2
    tail -n 50 "$work/imgapi.log" "$work/agent.log" >&2
fi
exit "$status"
