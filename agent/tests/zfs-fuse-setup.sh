#!/usr/bin/env bash
# Starts zfs-fuse (Debian's package) and creates the test pool `agenttest` on a sparse file, for
# agent/tests/integration/zfs_fuse.rs. Idempotent; needs root. Prints the pool name on standard output, so
# `export AGENT_ZFS_POOL=$(bash agent/tests/zfs-fuse-setup.sh)` works. See
# shared/docs/linux-test-backends.md section 3 for why each step is the way it is.
set -euo pipefail

POOL=agenttest
VDEV=/var/tmp/agenttest-zfs-fuse.img
PIDFILE=/var/run/zfs-fuse-agenttest.pid
SOCKET=/var/run/zfs/zfs_socket
ZFS=/usr/sbin/zfs
ZPOOL=/usr/sbin/zpool

log() { echo "zfs-fuse-setup: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "must run as root"
    exit 1
fi

if [ ! -x /usr/sbin/zfs-fuse ]; then
    log "installing zfs-fuse"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends zfs-fuse >&2
fi

if [ ! -e /dev/fuse ]; then
    log "/dev/fuse is missing: zfs-fuse needs the FUSE device"
    exit 1
fi

daemon_alive() {
    [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

# Any zfs-fuse answering on the socket will do (the package's own, or ours from a previous run).
daemon_answers() {
    [ -S "$SOCKET" ] && timeout 10 "$ZPOOL" list >/dev/null 2>&1
}

if daemon_alive && ! daemon_answers; then
    # Ours, but not answering: maybe still shutting down (it keeps the socket until it exits).
    for _ in $(seq 1 50); do
        daemon_alive || break
        sleep 0.1
    done
fi

if ! daemon_alive && ! daemon_answers; then
    # A daemon that died leaves its FUSE mounts behind ("Transport endpoint is not connected"),
    # which would block the pool's mountpoint: detach the ones of our pool, deepest first.
    awk -v pool="$POOL" '$3 == "fuse.zfs" && ($1 == pool || index($1, pool "/") == 1) { print $2 }' \
        /proc/mounts | sort -r | while read -r mnt; do
        umount -l "$mnt" >&2 || true
    done
    # A stale pidfile makes zfs-fuse exit silently, and a socket left by a dead daemon is useless.
    rm -f "$PIDFILE"
    rm -f "$SOCKET"
    mkdir -p /var/run/zfs
    log "starting zfs-fuse"
    /usr/sbin/zfs-fuse -p "$PIDFILE" -m 128 --no-kstat-mount >&2
fi

for _ in $(seq 1 100); do
    daemon_answers && break
    sleep 0.1
done
if ! daemon_answers; then
    log "zfs-fuse did not come up (no answer on $SOCKET)"
    exit 1
fi

# Re-create the pool from scratch so every run starts empty.
if "$ZPOOL" list "$POOL" >/dev/null 2>&1; then
    log "destroying the old pool $POOL"
    for attempt in 1 2 3; do
        # zfs-fuse answers "pool is busy" while datasets are mounted: unmount them, deepest
        # first, and retry.
        "$ZFS" list -H -o name -t filesystem -r "$POOL" 2>/dev/null | sort -r |
            while read -r fs; do "$ZFS" unmount "$fs" >/dev/null 2>&1 || true; done
        "$ZPOOL" destroy -f "$POOL" >&2 && break
        if [ "$attempt" -eq 3 ]; then
            log "cannot destroy the old pool $POOL"
            exit 1
        fi
        sleep 1
    done
fi
rm -f "$VDEV"
truncate -s 512M "$VDEV"
"$ZPOOL" create -m "/$POOL" "$POOL" "$VDEV" >&2

echo "$POOL"
