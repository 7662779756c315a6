#!/usr/bin/env bash
# The benchmark suite of issue 5, one command: every figure is a ratio against a reference
# measured in the same run on the same data (medians of RUNS runs, with min and max), and the
# results go to bench/RESULTS.md with the machine, date and commit.
#
#   GetImageFile 2 GiB, 1 and 8 clients        vs nginx (sendfile on) serving the same file
#   AddImageFile 2 GiB (sha1 checked)          vs curl -T into a discarding sink, and vs the
#                                                 hashing limit (sha1 + md5, one core each)
#   ListImages, 1,000 and 100,000 images       vs nginx serving a static JSON of the same size
#     (wrk -c64, WRK_SECS s; with and without filters): requests/s and p99
#   peak RSS of the server in each phase
#   agent import of a 1 GiB gzip image         vs curl | tee >(sha1sum) | gzip -d (bench/import.sh)
#   instance creation from a 1 GiB and a 10 GiB image (must not grow with the image)
#
# Usage: bench/run.sh            env: RUNS (5), WRK_SECS (10), FILE_MIB (2048), LIST_SIZES
#                                ("1000 100000"), INSTANCE_GIBS ("1 10"), SKIP_IMPORT=1 to skip
#                                the agent import part, PARTS ("get put list instance import")
#                                to run some parts only: the table is then printed, and
#                                bench/RESULTS.md is left as it is.
# Needs root for apt-get (nginx, wrk) on a fresh machine. Traffic stays on 127.0.0.1; only the
# processes this script starts are stopped, by pid.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${RUNS:-5}
WRK_SECS=${WRK_SECS:-10}
FILE_MIB=${FILE_MIB:-2048}
LIST_SIZES=${LIST_SIZES:-"1000 100000"}
INSTANCE_GIBS=${INSTANCE_GIBS:-"1 10"}
ALL_PARTS="get put list instance import"
PARTS=${PARTS:-$ALL_PARTS}
[ "${SKIP_IMPORT:-0}" = 1 ] && PARTS=${PARTS/import/}
part() { case " $PARTS " in *" $1 "*) return 0;; *) return 1;; esac; }
WORK=$(mktemp -d /var/tmp/imgapi-bench.XXXXXX)
# nginx workers run as an unprivileged user: they must be able to read what they serve.
chmod 755 "$WORK"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

missing=()
for tool in nginx wrk curl python3; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx wrk curl python3 >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release -q -p imgapi -p agent
cargo build --release -q -p imgapi --example hash_limit
BIN=$ROOT/target/release
RESULTS=$WORK/results.tsv   # name <TAB> unit <TAB> values...
: > "$RESULTS"

# --- helpers --------------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1800); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done; return 1; }
record() { local name=$1 unit=$2; shift 2; printf '%s\t%s\t%s\n' "$name" "$unit" "$*" >> "$RESULTS"; }
# stats VALUES... -> "median min max"
stats() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%.1f %.1f %.1f", m, v[1], v[NR]}'; }
median() { stats "$@" | cut -d' ' -f1; }

start_imgapi() { # datadir -> sets IMGAPI_PORT, IMGAPI_PID
    IMGAPI_PORT=$(free_port)
    cat > "$WORK/imgapi.json" <<EOF
{"datadir": "$1", "port": $IMGAPI_PORT, "host": "127.0.0.1", "log_level": "warn",
 "userdb": [{"name": "admin", "password": "secret"}]}
EOF
    "$BIN/imgapi" -s -c "$WORK/imgapi.json" > "$WORK/imgapi.log" 2>&1 &
    IMGAPI_PID=$!; PIDS+=("$IMGAPI_PID")
    wait_port "$IMGAPI_PORT/ping" || { cat "$WORK/imgapi.log"; exit 1; }
}
stop_imgapi() { kill "$IMGAPI_PID"; wait "$IMGAPI_PID" 2>/dev/null || true; }
peak_rss_mib() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

start_nginx() { # root -> sets NGINX_PORT, NGINX_PID
    NGINX_PORT=$(free_port)
    mkdir -p "$WORK/nginx"
    cat > "$WORK/nginx/nginx.conf" <<EOF
daemon off; worker_processes 2; pid $WORK/nginx/nginx.pid; error_log $WORK/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000;
    client_body_temp_path $WORK/nginx/body; proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fcgi; uwsgi_temp_path $WORK/nginx/uwsgi; scgi_temp_path $WORK/nginx/scgi;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $1;
        # The discarding sink for the loopback upload limit: nginx reads and drops the body.
        location = /sink { client_max_body_size 0; client_body_buffer_size 1m; return 204; }
    }
}
EOF
    "$NGINX" -c "$WORK/nginx/nginx.conf" &
    NGINX_PID=$!; PIDS+=("$NGINX_PID")
    wait_port "$NGINX_PORT" || { cat "$WORK/nginx/error.log"; exit 1; }
    # A reference that answers 403 or 404 would be "fast": check it serves what it should.
    for f in "$1"/*; do
        [ -f "$f" ] || continue
        local got; got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "http://127.0.0.1:$NGINX_PORT/$(basename "$f")")
        [ "$got" = "200 $(stat -c %s "$f")" ] || { echo "nginx does not serve $f: $got"; exit 1; }
    done
}
stop_nginx() { kill "$NGINX_PID"; wait "$NGINX_PID" 2>/dev/null || true; }

# MB/s of N parallel curl GETs of URL (total bytes / wall time).
get_rate() { # url clients
    local url=$1 n=$2 start end
    start=$(date +%s.%N)
    for _ in $(seq "$n"); do curl -s -o /dev/null "$url" & done
    wait_children
    end=$(date +%s.%N)
    python3 -c "print(round($n * $FILE_BYTES / ($end - $start) / 1e6, 1))"
}
wait_children() { for job in $(jobs -p); do case " ${PIDS[*]} " in *" $job "*) ;; *) wait "$job";; esac; done; }

# --- agent import (bench/import.sh writes its own table) ------------------------------------
# First, on a quiet disk: the agent's import counts only once its file is durable, and the
# reference pipeline does not wait for the disk, so gigabytes written just before by the other
# parts (this VM's disk stays slow for minutes after them) would be charged to the agent alone.
if part import; then
    echo "== agent import (bench/import.sh 1024 $RUNS)"
    bash bench/import.sh 1024 "$RUNS"
fi

# --- data -----------------------------------------------------------------------------------
if part get || part put; then
echo "== making a ${FILE_MIB} MiB image file"
python3 - "$WORK/file.img" "$FILE_MIB" <<'EOF'
import random, sys
path, mib = sys.argv[1], int(sys.argv[2])
rng = random.Random(42)
block = 1 << 20
with open(path, "wb") as out:
    for i in range(mib):
        out.write(bytes(block) if rng.random() < 0.4 else rng.randbytes(block))
EOF
FILE_BYTES=$(stat -c %s "$WORK/file.img")
FILE_SHA1=$(sha1sum "$WORK/file.img" | cut -d' ' -f1)
fi

# --- GetImageFile vs nginx ------------------------------------------------------------------
AUTH=admin:secret
if part get; then
echo "== GetImageFile ${FILE_MIB} MiB vs nginx"
start_imgapi "$WORK/data"
URL=http://127.0.0.1:$IMGAPI_PORT
UUID=$(curl -sf -u $AUTH -H 'Content-Type: application/json' -d '{"name":"bench","version":"1","type":"zone-dataset","os":"smartos"}' "$URL/images" | python3 -c 'import json,sys; print(json.load(sys.stdin)["uuid"])')
curl -sf -u $AUTH -T "$WORK/file.img" "$URL/images/$UUID/file?compression=none&sha1=$FILE_SHA1" -o /dev/null
curl -sf -u $AUTH -X POST "$URL/images/$UUID?action=activate" -o /dev/null
mkdir -p "$WORK/www" && ln "$WORK/file.img" "$WORK/www/file.img"
start_nginx "$WORK/www"
cat "$WORK/file.img" > /dev/null   # both read from the page cache
for clients in 1 8; do
    ours=(); ref=()
    for _ in $(seq "$RUNS"); do
        ours+=("$(get_rate "$URL/images/$UUID/file" "$clients")")
        ref+=("$(get_rate "http://127.0.0.1:$NGINX_PORT/file.img" "$clients")")
    done
    record "get.imgapi.${clients}client" MB/s "${ours[@]}"
    record "get.nginx.${clients}client" MB/s "${ref[@]}"
done
record "get.imgapi.peak_rss" MiB "$(peak_rss_mib "$IMGAPI_PID")"
stop_imgapi
stop_nginx
fi

# --- AddImageFile vs loopback upload and hashing limits ------------------------------------
if part put; then
echo "== AddImageFile ${FILE_MIB} MiB vs curl -T to a sink and the hashing limit"
mkdir -p "$WORK/www-empty"
start_nginx "$WORK/www-empty"
start_imgapi "$WORK/data-put"
URL=http://127.0.0.1:$IMGAPI_PORT
ours=(); sink=(); hash=(); disk=()
# Every run starts from a quiet disk (this VM's disk slows down right after a burst).
settle() { sync; sleep 3; }
for _ in $(seq "$RUNS"); do
    settle
    UUID=$(curl -sf -u $AUTH -H 'Content-Type: application/json' -d '{"name":"put","version":"1","type":"zone-dataset","os":"smartos"}' "$URL/images" | python3 -c 'import json,sys; print(json.load(sys.stdin)["uuid"])')
    ours+=("$(curl -sf -u $AUTH -T "$WORK/file.img" -o /dev/null -w '%{speed_upload}' "$URL/images/$UUID/file?compression=none&sha1=$FILE_SHA1" | python3 -c 'import sys; print(round(float(sys.stdin.read())/1e6,1))')")
    curl -sf -u $AUTH -X DELETE "$URL/images/$UUID" -o /dev/null
    sink+=("$(curl -s -T "$WORK/file.img" -o /dev/null -w '%{speed_upload}' "http://127.0.0.1:$NGINX_PORT/sink" | python3 -c 'import sys; print(round(float(sys.stdin.read())/1e6,1))')")
    hash+=("$("$BIN/examples/hash_limit" "$WORK/file.img" 2>/dev/null)")
    # The durable write limit of the same bytes (zero blocks as holes, as the server does):
    # an upload is only answered once it is on disk.
    settle
    disk+=("$(dd if="$WORK/file.img" of="$WORK/dd.out" bs=1M conv=sparse,fdatasync 2>&1 | python3 -c 'import re,sys; m=re.search(r"copied, ([0-9.]+) s", sys.stdin.read()); print(round('"$FILE_BYTES"'/float(m.group(1))/1e6,1))')")
    rm -f "$WORK/dd.out"
done
record put.imgapi MB/s "${ours[@]}"
record put.sink MB/s "${sink[@]}"
record put.hash_limit MB/s "${hash[@]}"
record put.durable_write_limit MB/s "${disk[@]}"
record put.imgapi.peak_rss MiB "$(peak_rss_mib "$IMGAPI_PID")"
stop_imgapi
stop_nginx
fi

# --- ListImages with wrk vs nginx static JSON -----------------------------------------------
wrk_run() { # url -> "req/s p99_ms"
    wrk -t2 -c64 -d"${WRK_SECS}s" --latency "$1" 2>/dev/null | awk '
        /Requests\/sec/ {rps=$2}
        /^ +99%/ {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; p99=v}
        END {printf "%s %s", rps, p99}'
}
part list || LIST_SIZES=""
for n in $LIST_SIZES; do
    echo "== ListImages with $n images"
    python3 - "$WORK/list-$n" "$n" <<'EOF'
import json, os, sys, uuid
root, n = sys.argv[1], int(sys.argv[2])
os.makedirs(root, exist_ok=True)
blob = os.path.join(root, "blob")
with open(blob, "wb") as f:
    f.write(b"x" * 16)
import hashlib, base64
data = b"x" * 16
sha1 = hashlib.sha1(data).hexdigest()
md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
for i in range(n):
    u = str(uuid.UUID(int=(i + 1) * 7919 + (1 << 100)))
    d = os.path.join(root, u)
    os.makedirs(d)
    # The record as the server writes it (`manifest.json`), about 2 KB.
    m = {"v": 2, "uuid": u, "owner": "00000000-0000-0000-0000-000000000000", "state": "active",
         "disabled": False, "public": True, "name": f"img-{i % 500}", "version": f"1.{i}.0",
         "type": "zone-dataset", "os": "smartos" if i % 2 else "linux",
         "description": "A benchmark image manifest padded to about two kilobytes. " * 8,
         "tags": dict({"role": "bench", "n": str(i)}, **{f"pad{k}": "p" * 60 for k in range(18)}),
         "published_at": "2026-01-01T00:00:00.000Z", "activated": True,
         "files": [{"sha1": sha1, "size": 16, "compression": "none", "contentMD5": md5,
                    "mtime": "2026-01-01T00:00:00.000Z", "path": "file." + sha1}]}
    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump(m, f)
    # A file of its own (ext4 allows 65,000 hard links to one inode).
    with open(os.path.join(d, "file." + sha1), "wb") as f:
        f.write(data)
os.remove(blob)
EOF
    start_imgapi "$WORK/list-$n"
    URL=http://127.0.0.1:$IMGAPI_PORT
    mkdir -p "$WORK/www-list"
    for variant in all filtered; do
        if [ $variant = all ]; then query="/images"; else query="/images?name=img-7&os=smartos"; fi
        curl -sf "$URL$query" -o "$WORK/www-list/$variant.json"
    done
    start_nginx "$WORK/www-list"
    for variant in all filtered; do
        if [ $variant = all ]; then query="/images"; else query="/images?name=img-7&os=smartos"; fi
        size=$(stat -c %s "$WORK/www-list/$variant.json")
        ours_rps=(); ours_p99=(); ref_rps=(); ref_p99=()
        for _ in $(seq "$RUNS"); do
            read -r rps p99 <<< "$(wrk_run "$URL$query")"; ours_rps+=("$rps"); ours_p99+=("$p99")
            read -r rps p99 <<< "$(wrk_run "http://127.0.0.1:$NGINX_PORT/$variant.json")"; ref_rps+=("$rps"); ref_p99+=("$p99")
        done
        record "list.$n.$variant.imgapi.rps (${size} B)" req/s "${ours_rps[@]}"
        record "list.$n.$variant.imgapi.p99" ms "${ours_p99[@]}"
        record "list.$n.$variant.nginx.rps" req/s "${ref_rps[@]}"
        record "list.$n.$variant.nginx.p99" ms "${ref_p99[@]}"
    done
    record "list.$n.imgapi.peak_rss" MiB "$(peak_rss_mib "$IMGAPI_PID")"
    stop_nginx
    stop_imgapi
    rm -rf "$WORK/list-$n" "$WORK/www-list"
done

# --- instance creation time vs image size ---------------------------------------------------
part instance || INSTANCE_GIBS=""
if [ -n "$INSTANCE_GIBS" ]; then
echo "== instance creation from images of $INSTANCE_GIBS GiB"
python3 - "$WORK" $INSTANCE_GIBS <<'EOF'
import gzip, sys
# Sparse-looking disks: a boot sector and a few MiB of data, zeros elsewhere.
work = sys.argv[1]
for gib in map(int, sys.argv[2:]):
    with gzip.open(f"{work}/disk-{gib}g.img.gz", "wb", compresslevel=1) as out:
        out.write(b"\xeb\x3c\x90" + bytes(509))
        out.write(bytes(range(256)) * 4096 * 4)
        zero = bytes(1 << 20)
        for _ in range(gib * 1024 - 5):
            out.write(zero)
        out.write(bytes(1 << 20) [:-512] + b"\x55" * 512)
EOF
start_imgapi "$WORK/data-inst"
URL=http://127.0.0.1:$IMGAPI_PORT
declare -A IMAGE
for gib in $INSTANCE_GIBS; do
    f=$WORK/disk-${gib}g.img.gz
    UUID=$(curl -sf -u $AUTH -H 'Content-Type: application/json' -d "{\"name\":\"disk-${gib}g\",\"version\":\"1\",\"type\":\"zvol\",\"os\":\"linux\",\"nic_driver\":\"virtio\",\"disk_driver\":\"virtio\",\"cpu_type\":\"host\",\"image_size\":$((gib * 1024))}" "$URL/images" | python3 -c 'import json,sys; print(json.load(sys.stdin)["uuid"])')
    curl -sf -u $AUTH -T "$f" "$URL/images/$UUID/file?compression=gzip&sha1=$(sha1sum "$f" | cut -d' ' -f1)" -o /dev/null
    curl -sf -u $AUTH -X POST "$URL/images/$UUID?action=activate" -o /dev/null
    IMAGE[$gib]=$UUID
done
AGENT_PORT=$(free_port)
TOKEN=bench-token-0123456789
cat > "$WORK/agent.json" <<EOF
{"listen": "127.0.0.1:$AGENT_PORT", "auth": {"tokens": ["$TOKEN"]}, "sources": ["$URL"],
 "storage": {"backend": "files", "dir": "$WORK/agent/images"},
 "instances": {"hypervisor": "qemu", "dir": "$WORK/agent/instances", "run_dir": "$WORK/agent/run"},
 "log_level": "warn"}
EOF
"$BIN/agent" serve -c "$WORK/agent.json" > "$WORK/agent.log" 2>&1 &
AGENT_PID=$!; PIDS+=("$AGENT_PID")
wait_port "$AGENT_PORT/api/v1/ping" || { cat "$WORK/agent.log"; exit 1; }
for gib in $INSTANCE_GIBS; do
    curl -sf -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d "{\"uuid\":\"${IMAGE[$gib]}\"}" "http://127.0.0.1:$AGENT_PORT/api/v1/images" -o /dev/null
    times=()
    for _ in $(seq "$RUNS"); do
        out=$(curl -sf -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
            -d "{\"image\":\"${IMAGE[$gib]}\",\"start\":false}" -w '\n%{time_total}' "http://127.0.0.1:$AGENT_PORT/api/v1/instances")
        times+=("$(tail -1 <<< "$out" | python3 -c 'import sys; print(round(float(sys.stdin.read())*1000, 1))')")
        id=$(head -1 <<< "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["uuid"])')
        curl -sf -H "Authorization: Bearer $TOKEN" -X DELETE "http://127.0.0.1:$AGENT_PORT/api/v1/instances/$id" -o /dev/null
    done
    record "instance.create.${gib}GiB" ms "${times[@]}"
done
kill "$AGENT_PID"; wait "$AGENT_PID" 2>/dev/null || true
stop_imgapi
fi

# --- report ---------------------------------------------------------------------------------
OUT=$ROOT/bench/RESULTS.md
[ "$(echo $PARTS)" = "$ALL_PARTS" ] || OUT=/dev/null
python3 - "$RESULTS" "$OUT" "$RUNS" "$FILE_MIB" "$WRK_SECS" <<'EOF'
import os, platform, statistics, subprocess, sys, datetime
results, out, runs, file_mib, wrk_secs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
rows = {}
for line in open(results):
    name, unit, values = line.rstrip("\n").split("\t")
    vals = [float(v) for v in values.split()]
    rows[name.split(" (")[0]] = (name, unit, vals)
def med(key): return statistics.median(rows[key][2]) if key in rows else None
def fmt(key):
    name, unit, v = rows[key]
    return f"| {name} | {unit} | {statistics.median(v):.1f} | {min(v):.1f} | {max(v):.1f} | {len(v)} |"
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
lines = [
    "# Benchmark results", "",
    f"`bench/run.sh` on {datetime.date.today()}, commit `{commit}`: {cpu}, {os.cpu_count()} cores, "
    f"{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB, {platform.system()} {platform.release()}. "
    f"Medians of {runs} runs; every ratio compares with a reference measured in the same run. Clients and servers share the cores.",
    "", "## Ratios", "", "| measure | ratio | target |", "|---|---:|---|",
]
def ratio(label, a, b, target):
    if a is None or b is None:
        return
    lines.append(f"| {label} | {a / b:.2f} | {target} |")
ratio("GetImageFile, 1 client / nginx", med("get.imgapi.1client"), med("get.nginx.1client"), ">= 0.9")
ratio("GetImageFile, 8 clients / nginx", med("get.imgapi.8client"), med("get.nginx.8client"), ">= 0.9")
if "put.imgapi" in rows:
    ratio("AddImageFile / min(upload sink, hashing limit)", med("put.imgapi"), min(med("put.sink"), med("put.hash_limit")), ">= 0.8")
    ratio("AddImageFile / min(upload sink, hashing limit, durable write limit)", med("put.imgapi"),
          min(med("put.sink"), med("put.hash_limit"), med("put.durable_write_limit")), "")
for key in sorted(k for k in rows if k.startswith("list.") and k.endswith(".imgapi.rps")):
    base = key[: -len(".imgapi.rps")]
    ratio(f"ListImages {base[5:]}: req/s / nginx", med(key), med(base + ".nginx.rps"), "")
sizes = sorted(int(k.split(".")[2][:-3]) for k in rows if k.startswith("instance.create."))
if len(sizes) >= 2:
    small, big = f"instance.create.{sizes[0]}GiB", f"instance.create.{sizes[-1]}GiB"
    ratio(f"instance creation, {sizes[-1]} GiB image / {sizes[0]} GiB image", med(big), med(small), "~1 (no growth)")
lines += ["", "## All figures", "", "| figure | unit | median | min | max | n |", "|---|---|---:|---:|---:|---:|"]
lines += [fmt(k) for k in rows]
lines += ["", f"GET and PUT move a {file_mib} MiB file (40% zero MiB blocks, 60% random); wrk runs -t2 -c64 for {wrk_secs} s; "
          "ListImages `filtered` is `?name=img-7&os=smartos`. The agent import comparison is in "
          "[`results/import.md`](results/import.md), written by `bench/import.sh` in the same run."]
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
