#!/usr/bin/env bash
# Boots the test guest built by build-test-image.sh under QEMU (TCG) and powers it off over QMP.
#
#   bash agent/tests/guest/boot-test.sh OUTDIR
#
# OUTDIR/disk.raw is booted through a throw-away qcow2 overlay (the image is never written), with
# the serial console in a log file. The test waits (at most BOOT_TIMEOUT s, default 120) for
# GUEST-BOOT-OK, sends QMP system_powerdown (the ACPI power button), waits (at most
# POWERDOWN_TIMEOUT s, default 30) for qemu to exit, and checks that the guest printed
# GUEST-POWEROFF and that qemu exited 0. Prints the timings; exits non-zero on any failure, after
# killing the qemu it started (by PID, never by name) and removing its temporary files.
# BOOT_TEST_QEMU_ARGS adds qemu arguments (split on spaces), e.g. a NoCloud seed:
#   BOOT_TEST_QEMU_ARGS="-drive file=seed.iso,format=raw,if=virtio,readonly=on"
# Needs qemu-system-x86_64 and qemu-img (install-qemu.sh) and python3 or socat for QMP.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
OUT=$1
BOOT_TIMEOUT=${BOOT_TIMEOUT:-120}
POWERDOWN_TIMEOUT=${POWERDOWN_TIMEOUT:-30}
log() { echo "boot-test: $*" >&2; }

[ -f "$OUT/disk.raw" ] || { log "no $OUT/disk.raw: run build-test-image.sh $OUT first"; exit 1; }
for tool in qemu-system-x86_64 qemu-img; do
    command -v "$tool" >/dev/null 2>&1 || { log "no $tool: run install-qemu.sh first"; exit 1; }
done

# QMP client: python3 if there is one, else socat (installed from Debian if missing).
QMP_CLIENT=${QMP_CLIENT:-}
if [ -z "$QMP_CLIENT" ]; then
    if command -v python3 >/dev/null 2>&1; then QMP_CLIENT=python3; else QMP_CLIENT=socat; fi
fi
if [ "$QMP_CLIENT" = socat ] && ! command -v socat >/dev/null 2>&1; then
    log "installing socat"
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends socat >&2
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/guest-boot-test.XXXXXX")
LOG=$TMP/serial.log
SOCK=$TMP/qmp.sock
QEMU_PID=""

cleanup() {
    local rc=$?
    set +e
    trap '' PIPE INT TERM   # a closed stderr or a second signal must not stop the clean-up
    if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
        log "killing qemu (pid $QEMU_PID)"
        kill "$QEMU_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$QEMU_PID" 2>/dev/null || true
        wait "$QEMU_PID" 2>/dev/null || true
    fi
    if [ "$rc" -ne 0 ] && [ -f "$LOG" ]; then
        log "serial log (last 40 lines):"
        tail -n 40 "$LOG" | tr -d '\r' | sed 's/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1bc//g' >&2
        [ ! -s "$TMP/qemu.out" ] || { log "qemu output:"; cat "$TMP/qemu.out" >&2; }
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { log "FAIL: $*"; exit 1; }
now() { date +%s%N; }
secs() { awk -v ns="$1" 'BEGIN { printf "%.2f", ns / 1e9 }'; }

# Sends one QMP command (after the capabilities handshake) and prints qemu's answer.
qmp() {
    local cmd=$1
    if [ "$QMP_CLIENT" = python3 ]; then
        timeout 10 python3 - "$SOCK" "$cmd" <<'EOF'
import json, socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(5)
sock.connect(sys.argv[1])
f = sock.makefile("rw")
def reply():
    while True:
        msg = json.loads(f.readline())
        if "event" not in msg:
            return msg
reply()  # greeting
for cmd in ("qmp_capabilities", sys.argv[2]):
    f.write(json.dumps({"execute": cmd}) + "\n")
    f.flush()
    r = reply()
    if "error" in r:
        sys.exit("QMP %s: %s" % (cmd, r["error"]))
print(json.dumps(r))
EOF
    else
        # socat sends both lines and prints what qemu answers until it has been quiet for 1 s.
        printf '{"execute":"qmp_capabilities"}\n{"execute":"%s"}\n' "$cmd" |
            timeout 10 socat -t 1 - "UNIX-CONNECT:$SOCK" >"$TMP/qmp.out" || true
        # Two answers: one for qmp_capabilities, one for the command.
        if [ "$(grep -c '"return"' "$TMP/qmp.out")" -ne 2 ]; then
            cat "$TMP/qmp.out" >&2
            return 1
        fi
        cat "$TMP/qmp.out"
    fi
}

qemu-img create -q -f qcow2 -b "$(cd "$OUT" && pwd)/disk.raw" -F raw "$TMP/disk.qcow2"

t_start=$(now)
# shellcheck disable=SC2086 # BOOT_TEST_QEMU_ARGS is split on purpose
qemu-system-x86_64 -machine q35 -accel tcg -smp 1 -m 256 -nographic -display none \
    -serial "file:$LOG" -no-reboot -qmp "unix:$SOCK,server,nowait" -nic none \
    -drive "file=$TMP/disk.qcow2,format=qcow2,if=virtio" \
    ${BOOT_TEST_QEMU_ARGS:-} \
    </dev/null >"$TMP/qemu.out" 2>&1 &
QEMU_PID=$!

deadline=$((t_start + BOOT_TIMEOUT * 1000000000))
until grep -q GUEST-BOOT-OK "$LOG" 2>/dev/null; do
    kill -0 "$QEMU_PID" 2>/dev/null || fail "qemu exited before GUEST-BOOT-OK"
    [ "$(now)" -lt "$deadline" ] || fail "no GUEST-BOOT-OK within ${BOOT_TIMEOUT}s"
    sleep 0.1
done
t_marker=$(now)
uptime=$(tr -d '\r' <"$LOG" | sed -n 's/.*GUEST-INFO .*uptime=\([0-9.]*\).*/\1/p' | head -n 1)
meta=$(tr -d '\r' <"$LOG" | grep -o 'GUEST-META .*' | tr '\n' ' ' || true)

t_powerdown=$(now)
qmp system_powerdown >/dev/null || fail "QMP system_powerdown failed"
deadline=$((t_powerdown + POWERDOWN_TIMEOUT * 1000000000))
while kill -0 "$QEMU_PID" 2>/dev/null; do
    [ "$(now)" -lt "$deadline" ] || fail "qemu still running ${POWERDOWN_TIMEOUT}s after system_powerdown"
    sleep 0.05
done
t_exit=$(now)
rc=0
wait "$QEMU_PID" || rc=$?
QEMU_PID=""
[ "$rc" -eq 0 ] || fail "qemu exited with $rc"
grep -q GUEST-POWEROFF "$LOG" || fail "the guest did not print GUEST-POWEROFF"

echo "boot-test: OK: qemu start -> GUEST-BOOT-OK $(secs $((t_marker - t_start))) s" \
    "(guest uptime ${uptime:-?} s), system_powerdown -> qemu exit" \
    "$(secs $((t_exit - t_powerdown))) s, total $(secs $((t_exit - t_start))) s${meta:+; $meta}"
