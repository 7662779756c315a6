#!/usr/bin/env bash
# Benchmark: the agent's import of a gzip image against the shell pipeline
#   curl URL | tee >(sha1sum) | gzip -d > file
# on the same data from the same imgapi server on 127.0.0.1. Prints medians (and min/max) of
# RUNS runs of each and their ratio, and writes bench/results/import.md.
#
# Usage: bench/import.sh [SIZE_MIB] [RUNS]     (defaults: 1024 MiB, 5 runs)
# Needs: cargo, curl, gzip (pigz is used to build the test file when present), python3.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-1024}
RUNS=${2:-5}
WORK=$(mktemp -d /var/tmp/import-bench.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release -q -p imgapi -p agent
BIN=target/release

# Generated data is cached between runs (it takes a minute to make and compress).
CACHE=${BENCH_CACHE:-/var/tmp/imgapi-bench-cache}
mkdir -p "$CACHE"
if [ ! -s "$CACHE/disk-$SIZE_MIB.img.gz" ]; then
echo "generating a ${SIZE_MIB} MiB disk-like image (zero, random and text blocks)..."
python3 - "$WORK/disk.img" "$SIZE_MIB" <<'EOF'
import os, random, sys
# 256 KiB blocks: about 40% zeros, 25% random, 35% bytes of files under /usr (compressible text
# and code), as in docs/perf-limits.md; seeded, so every run measures the same bytes.
path, mib = sys.argv[1], int(sys.argv[2])
rng = random.Random(42)
corpus = bytearray()
for root, _, files in os.walk("/usr/share/doc"):
    for f in files:
        try:
            with open(os.path.join(root, f), "rb") as fh:
                corpus += fh.read(65536)
        except OSError:
            pass
        if len(corpus) > 64 << 20:
            break
    if len(corpus) > 64 << 20:
        break
block = 256 << 10
with open(path, "wb") as out:
    for _ in range(mib * 4):
        r = rng.random()
        if r < 0.40:
            out.write(bytes(block))
        elif r < 0.65:
            out.write(rng.randbytes(block))
        else:
            start = rng.randrange(0, max(1, len(corpus) - block))
            chunk = bytes(corpus[start:start + block])
            out.write(chunk.ljust(block, b"\0"))
EOF
if command -v pigz >/dev/null; then pigz -6 -c "$WORK/disk.img" > "$CACHE/disk-$SIZE_MIB.img.gz"; else gzip -6 -c "$WORK/disk.img" > "$CACHE/disk-$SIZE_MIB.img.gz"; fi
rm -f "$WORK/disk.img"
fi
ln -s "$CACHE/disk-$SIZE_MIB.img.gz" "$WORK/disk.img.gz"
GZ_SIZE=$(stat -L -c %s "$WORK/disk.img.gz")
GZ_SHA1=$(sha1sum "$WORK/disk.img.gz" | cut -d' ' -f1)
echo "compressed to $GZ_SIZE bytes"

start_server() { # name binary args...: starts it here (not in a subshell, so the trap sees the PID)
    local name=$1; shift
    "$@" > "$WORK/$name.out" 2> "$WORK/$name.err" &
    PIDS+=($!)
}
server_url() { # name -> prints the URL the server announced
    for _ in $(seq 100); do
        if grep -q "listening on" "$WORK/$1.out"; then
            sed -n 's/.* listening on \(.*\)/\1/p' "$WORK/$1.out" | head -1
            return
        fi
        sleep 0.1
    done
    echo "$1 did not start" >&2; cat "$WORK/$1.err" >&2; exit 1
}

cat > "$WORK/imgapi.json" <<EOF
{"datadir": "$WORK/imgapi-data", "port": 0, "host": "127.0.0.1", "log_level": "warn",
 "userdb": [{"name": "admin", "password": "secret"}]}
EOF
start_server imgapi "$BIN/imgapi" -s -c "$WORK/imgapi.json"
IMGAPI=$(server_url imgapi)
UUID=$(curl -sf -u admin:secret "$IMGAPI/images" -X POST --data-binary \
    '{"name": "bench", "version": "1", "type": "zvol", "os": "linux", "nic_driver": "virtio",
      "disk_driver": "virtio", "cpu_type": "host", "image_size": '"$SIZE_MIB"'}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["uuid"])')
curl -sf -u admin:secret -T "$WORK/disk.img.gz" "$IMGAPI/images/$UUID/file?compression=gzip&sha1=$GZ_SHA1" > /dev/null
curl -sf -u admin:secret -X POST "$IMGAPI/images/$UUID?action=activate" > /dev/null

TOKEN=bench-token-0123456789
cat > "$WORK/agent.json" <<EOF
{"listen": "127.0.0.1:0", "auth": {"tokens": ["$TOKEN"]}, "sources": ["$IMGAPI"],
 "storage": {"backend": "files", "dir": "$WORK/agent-images"}, "log_level": "warn"}
EOF
start_server agent "$BIN/agent" serve -c "$WORK/agent.json"
AGENT=$(server_url agent)

now() { date +%s.%N; }
# Every run starts from a quiet disk: what the previous run left dirty is written out first, and
# the (virtual) disk gets a moment, so that no pipeline pays for the one before it.
settle() { sync; sleep 3; }
reference_times=()
durable_times=()
agent_times=()
for run in $(seq "$RUNS"); do
    settle; rm -f "$WORK/ref.raw"
    t0=$(now)
    curl -sf "$IMGAPI/images/$UUID/file" | tee >(sha1sum > "$WORK/ref.sha1") | gzip -d > "$WORK/ref.raw"
    t1=$(now)
    reference_times+=("$(echo "$t1 - $t0" | bc -l)")
    [ "$(cut -d' ' -f1 "$WORK/ref.sha1")" = "$GZ_SHA1" ] || { echo "reference sha1 mismatch" >&2; exit 1; }

    # The same pipeline made durable like the agent's import (fsync before it counts as done).
    settle; rm -f "$WORK/ref.raw"
    t0=$(now)
    curl -sf "$IMGAPI/images/$UUID/file" | tee >(sha1sum > "$WORK/ref.sha1") | gzip -d \
        | dd of="$WORK/ref.raw" bs=1M conv=fsync status=none
    t1=$(now)
    durable_times+=("$(echo "$t1 - $t0" | bc -l)")

    settle
    t0=$(now)
    "$BIN/agent" --url "$AGENT" --token "$TOKEN" --json images import "$UUID" > /dev/null
    t1=$(now)
    agent_times+=("$(echo "$t1 - $t0" | bc -l)")
    cmp -s "$WORK/ref.raw" "$WORK/agent-images/$UUID.raw" || { echo "agent image differs" >&2; exit 1; }
    "$BIN/agent" --url "$AGENT" --token "$TOKEN" images delete "$UUID" > /dev/null
    echo "run $run: reference ${reference_times[-1]} s, durable reference ${durable_times[-1]} s, agent ${agent_times[-1]} s"
done

python3 - "$SIZE_MIB" "$GZ_SIZE" "${reference_times[*]}" "${agent_times[*]}" "${durable_times[*]}" <<'EOF' | tee bench/results/import.md
import statistics, sys, subprocess, datetime, platform
mib, gz = int(sys.argv[1]), int(sys.argv[2])
ref = [float(x) for x in sys.argv[3].split()]
agent = [float(x) for x in sys.argv[4].split()]
durable = [float(x) for x in sys.argv[5].split()]
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
def row(name, xs):
    m = statistics.median(xs)
    return f"| {name} | {m:.2f} | {min(xs):.2f} | {max(xs):.2f} | {mib / m:.0f} |"
print(f"## Import of a {mib} MiB image ({gz / 2**20:.0f} MiB gzip), files backend\n")
print(f"{datetime.date.today()}, commit {commit}, {cpu}, {len(ref)} runs each, client and servers on 127.0.0.1.\n")
print("| pipeline | median s | min s | max s | MiB/s (decompressed) |")
print("| --- | ---: | ---: | ---: | ---: |")
print(row("`curl \\| tee >(sha1sum) \\| gzip -d > file`", ref))
print(row("the same, `\\| dd conv=fsync` (durable, as the agent is)", durable))
print(row("`agent images import` (download, sha1, gunzip, write, fsync, verify, commit)", agent))
print(f"\n**Ratio (reference time / agent time, medians): {statistics.median(ref) / statistics.median(agent):.2f}x** (target: at least 3x)")
print(f"Against the durable reference: {statistics.median(durable) / statistics.median(agent):.2f}x.")
EOF
