#!/usr/bin/env bash
#
# go-readme-walkthrough.sh IMGAPI_BINARY
#
# Replays the curl walk-through of the Go imgapi server's README (trondn/imgapi)
# against IMGAPI_BINARY: the README's config file (datadir in a fresh temp dir,
# host 127.0.0.1, port 0), `imgapi -s -c config.json`, then the README's curl
# commands in order: ping (-i), create (POST --data-binary, Basic auth),
# upload (--upload-file ... "file?sha1=<sha1>;compression=gzip", note the `;`),
# activate; then it lists the images and downloads the file as `imgadm
# avail`/`imgadm import` would.
#
# Prints `ok - ...` / `not ok - ...` per check and `N passed, M failed`;
# exits non-zero on any failure.  Needs curl, sha1sum, gzip and node (JSON).
# Every curl has a timeout; the server it starts is stopped by PID on exit and
# the temp dir removed.

set -u -o pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 IMGAPI_BINARY" >&2
    exit 2
fi

BIN=$1
case $BIN in
    /*) ;;
    *) BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN") ;;
esac
if [ ! -x "$BIN" ]; then
    echo "not an executable: $BIN" >&2
    exit 2
fi
for tool in curl sha1sum gzip node; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "missing tool: $tool" >&2
        exit 2
    fi
done

# No proxy for 127.0.0.1, whatever the environment says.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export NO_PROXY=127.0.0.1 no_proxy=127.0.0.1

PASSED=0
FAILED=0
SERVER_PID=
WORK=$(mktemp -d "${TMPDIR:-/tmp}/imgapi-go-readme.XXXXXX")

cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            kill -KILL "$SERVER_PID" 2>/dev/null
        fi
        wait "$SERVER_PID" 2>/dev/null
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ok() {
    PASSED=$((PASSED + 1))
    echo "ok - $1"
}

notok() {
    FAILED=$((FAILED + 1))
    echo "not ok - $1"
    shift
    local line
    for line in "$@"; do
        printf '%s\n' "$line" | sed 's/^/#   /'
    done
}

finish() {
    echo "$PASSED passed, $FAILED failed"
    if [ "$FAILED" -ne 0 ]; then
        exit 1
    fi
    exit 0
}

# Abort the walk-through: the remaining steps depend on this one.
abort() {
    notok "walk-through ran to the end" "stopped: $1"
    finish
}

# jcheck FILE 'JS expression over o (the parsed JSON)' -> prints nothing and
# exits 0 if the expression is true; prints why and exits 1 otherwise.
jcheck() {
    node -e '
        var fs = require("fs");
        var text = fs.readFileSync(process.argv[1], "utf8");
        var o;
        try { o = JSON.parse(text); } catch (e) {
            console.log("body is not JSON: " + JSON.stringify(text.slice(0, 300)));
            process.exit(1);
        }
        var ok;
        try { ok = eval(process.argv[2]); } catch (e) { ok = false; }
        if (!ok) {
            console.log("expected: " + process.argv[2]);
            console.log("body: " + JSON.stringify(o).slice(0, 1500));
            process.exit(1);
        }' "$1" "$2"
}

# jget FILE 'JS expression over o' -> prints its value
jget() {
    node -e '
        var o = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
        var v = eval(process.argv[2]);
        process.stdout.write(v === undefined ? "" : String(v));' "$1" "$2" 2>/dev/null
}

# check NAME FILE EXPR
check_json() {
    local name=$1 file=$2 expr=$3 why
    if why=$(jcheck "$file" "$expr"); then
        ok "$name"
    else
        notok "$name" "$why"
    fi
}

# check_status NAME GOT WANT [BODYFILE]
check_status() {
    local name=$1 got=$2 want=$3 body=${4:-}
    if [ "$got" = "$want" ]; then
        ok "$name"
    else
        local shown=""
        [ -n "$body" ] && [ -f "$body" ] && shown=$(head -c 600 "$body")
        notok "$name" "expected HTTP $want, got $got" "body: $shown"
    fi
}

CURL_LIMITS=(--silent --show-error --connect-timeout 5 --max-time 15)

# ---- the README's config file, in a fresh temp dir -------------------------

cd "$WORK" || exit 2
mkdir files
cat > config.json <<EOF
{
    "datadir" : "$WORK/files",
    "port" : 0,
    "host" : "127.0.0.1",
    "userdb" : [
            {
                "name" : "admin",
                "password" : "secret"
            }
    ]
}
EOF

if [ -z "$(ls -A files)" ]; then
    ok "ls -l files: the datadir starts empty"
else
    notok "ls -l files: the datadir starts empty" "$(ls -l files)"
fi

# ---- ./imgadmsrv -s -c config.json ------------------------------------------

"$BIN" -s -c config.json > server.out 2> server.err &
SERVER_PID=$!

PORT=
for _ in $(seq 1 100); do
    PORT=$(sed -n 's|^imgapi listening on http://127\.0\.0\.1:\([0-9][0-9]*\)$|\1|p' server.out | head -n 1)
    [ -n "$PORT" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
done
if [ -n "$PORT" ]; then
    echo "# server pid $SERVER_PID listening on 127.0.0.1:$PORT"
    ok "imgapi -s -c config.json: listening on 127.0.0.1"
else
    notok "imgapi -s -c config.json: listening on 127.0.0.1" \
        "stdout: $(head -c 500 server.out)" "stderr: $(tail -c 1500 server.err)"
    abort "the server did not start"
fi
URL="http://127.0.0.1:$PORT"

# ---- curl -i http://.../ping ------------------------------------------------

curl "${CURL_LIMITS[@]}" -i "$URL/ping" > ping.txt 2> curl.err
rc=$?
if [ $rc -ne 0 ]; then
    notok "curl -i /ping" "curl exit $rc: $(cat curl.err)"
    abort "ping failed"
fi
# Split the -i output into status line, headers and body.
tr -d '\r' < ping.txt | awk 'body {print; next} /^$/ {body=1; next}' > ping.body
tr -d '\r' < ping.txt | awk '/^$/ {exit} {print}' > ping.headers
status=$(head -n 1 ping.headers | awk '{print $2}')
check_status "curl -i /ping: HTTP/1.1 200 OK" "$status" 200 ping.txt
if grep -qi '^content-type: *application/json' ping.headers; then
    ok "curl -i /ping: Content-Type application/json"
else
    notok "curl -i /ping: Content-Type application/json" "$(cat ping.headers)"
fi
check_json "curl -i /ping: {\"imgapi\": true, \"ping\": \"pong\", \"version\": ...}" \
    ping.body 'o.imgapi === true && o.ping === "pong" && typeof o.version === "string"'

# ---- create the image -------------------------------------------------------

status=$(curl "${CURL_LIMITS[@]}" -o create.json -w '%{http_code}' \
    -X POST -u admin:secret --data-binary '
    {
       "name": "couchbase-server",
       "version": "4.5.0-snapshot",
       "description": "Snapshot of Couchbase Server 4.5.0 Community Edition",
       "type": "zone-dataset",
       "os": "smartos",
       "requirements": {
         "networks": [
           {
             "name": "net0",
             "description": "public"
           }
         ]
       }
    }' "$URL/images" 2> curl.err) || status="curl-error: $(cat curl.err)"
check_status "curl -X POST -u admin:secret --data-binary '{...}' /images: 200" \
    "$status" 200 create.json
check_json "create: the newly created manifest (name, version, description, type, os, requirements, v 2)" \
    create.json 'o.name === "couchbase-server" && o.version === "4.5.0-snapshot" &&
        o.description === "Snapshot of Couchbase Server 4.5.0 Community Edition" &&
        o.type === "zone-dataset" && o.os === "smartos" && o.v === 2 &&
        JSON.stringify(o.requirements) ===
            JSON.stringify({networks: [{name: "net0", description: "public"}]})'
check_json "create: state unactivated, disabled false, public false, no file yet" \
    create.json 'o.state === "unactivated" && o.disabled === false &&
        o.public === false && (o.files === undefined ||
        (Array.isArray(o.files) && o.files.length === 0)) &&
        o.published_at === undefined'
UUID=$(jget create.json 'o.uuid')
if [[ $UUID =~ ^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$ ]]; then
    echo "# image uuid $UUID"
    ok "create: the server returned a new uuid"
else
    notok "create: the server returned a new uuid" "uuid: '$UUID'"
    abort "no image uuid to continue with"
fi

# ---- upload the image file --------------------------------------------------

# A deterministic gzip file (the README's couchbase-watson-4.5.img.gz).
IMG=couchbase-watson-4.5.img.gz
seq 1 200000 | gzip -n -9 > "$IMG"
SIZE=$(wc -c < "$IMG" | tr -d ' ')
SHA1=$(sha1sum "$IMG" | cut -d' ' -f1)

# The README uses `digest -a sha1` (illumos); sha1sum prints the same hex.
status=$(curl "${CURL_LIMITS[@]}" -o upload.json -w '%{http_code}' \
    --upload-file "$IMG" \
    -u admin:secret \
    "$URL/images/$UUID/file?sha1=$(sha1sum "$IMG" | cut -d' ' -f1);compression=gzip" \
    2> curl.err) || status="curl-error: $(cat curl.err)"
check_status "curl --upload-file $IMG -u admin:secret \"/images/<uuid>/file?sha1=<sha1>;compression=gzip\": 200" \
    "$status" 200 upload.json
echo "# $IMG: $SIZE bytes, sha1 $SHA1"
check_json "upload: the full manifest with files[0] = {compression gzip, sha1, size} as uploaded" \
    upload.json "Array.isArray(o.files) && o.files.length === 1 &&
        o.files[0].compression === 'gzip' && o.files[0].sha1 === '$SHA1' &&
        o.files[0].size === $SIZE"
check_json "upload: still unactivated, same uuid, name and version" \
    upload.json "o.state === 'unactivated' && o.uuid === '$UUID' &&
        o.name === 'couchbase-server' && o.version === '4.5.0-snapshot'"

# ---- activate ---------------------------------------------------------------

status=$(curl "${CURL_LIMITS[@]}" -o activate.json -w '%{http_code}' \
    -X POST -u admin:secret "$URL/images/$UUID?action=activate" \
    2> curl.err) || status="curl-error: $(cat curl.err)"
check_status "curl -X POST -u admin:secret \"/images/<uuid>?action=activate\": 200" \
    "$status" 200 activate.json
check_json "activate: state active, published_at set" \
    activate.json "o.state === 'active' && o.uuid === '$UUID' &&
        o.disabled === false &&
        /^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(\\.\\d{3})?Z\$/.test(o.published_at)"
check_json "activate: files[0] unchanged (sha1, size as a number, gzip)" \
    activate.json "o.files.length === 1 && o.files[0].sha1 === '$SHA1' &&
        o.files[0].size === $SIZE && o.files[0].compression === 'gzip'"

# ---- imgadm avail: list the images ------------------------------------------

status=$(curl "${CURL_LIMITS[@]}" -o list.json -w '%{http_code}' \
    "$URL/images" 2> curl.err) || status="curl-error: $(cat curl.err)"
check_status "curl /images (what imgadm avail sends): 200" "$status" 200 list.json
check_json "list: the couchbase-server image is listed, active, with published_at" \
    list.json "Array.isArray(o) && o.length === 1 && o[0].uuid === '$UUID' &&
        o[0].name === 'couchbase-server' && o[0].state === 'active' &&
        typeof o[0].published_at === 'string'"

# ---- imgadm import: get the manifest and download the file ------------------

status=$(curl "${CURL_LIMITS[@]}" -o get.json -w '%{http_code}' \
    "$URL/images/$UUID" 2> curl.err) || status="curl-error: $(cat curl.err)"
check_status "curl /images/<uuid>: 200" "$status" 200 get.json
check_json "get: active manifest with v 2 and files[0] as uploaded" \
    get.json "o.v === 2 && o.state === 'active' && o.files[0].sha1 === '$SHA1' &&
        o.files[0].size === $SIZE && o.files[0].compression === 'gzip'"

status=$(curl "${CURL_LIMITS[@]}" -D download.headers -o download.img.gz \
    -w '%{http_code}' "$URL/images/$UUID/file" 2> curl.err) \
    || status="curl-error: $(cat curl.err)"
check_status "curl /images/<uuid>/file: 200" "$status" 200
if [ -f download.img.gz ] && cmp -s "$IMG" download.img.gz; then
    ok "download: the bytes equal the uploaded file"
else
    notok "download: the bytes equal the uploaded file" \
        "uploaded $SIZE bytes sha1 $SHA1" \
        "downloaded $(wc -c < download.img.gz 2>/dev/null) bytes sha1 $(sha1sum download.img.gz 2>/dev/null | cut -d' ' -f1)"
fi
clen=$(tr -d '\r' < download.headers | awk 'tolower($1) == "content-length:" {print $2}' | tail -n 1)
if [ "$clen" = "$SIZE" ]; then
    ok "download: Content-Length equals the size (imgadm requires it)"
else
    notok "download: Content-Length equals the size (imgadm requires it)" \
        "headers: $(tr -d '\r' < download.headers)"
fi

# ---- the server is still up -------------------------------------------------

if kill -0 "$SERVER_PID" 2>/dev/null; then
    ok "the server is still running after the walk-through"
else
    notok "the server is still running after the walk-through" \
        "stderr: $(tail -c 1500 server.err)"
fi

finish
