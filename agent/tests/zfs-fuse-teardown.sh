#!/usr/bin/env bash
# Undoes zfs-fuse-setup.sh: destroys the pool `agenttest`, stops the zfs-fuse daemon that the
# setup started (by the pid in its pidfile; any other zfs-fuse is left alone) and removes the
# pool's file. Needs root.
set -euo pipefail

POOL=agenttest
VDEV=/var/tmp/agenttest-zfs-fuse.img
PIDFILE=/var/run/zfs-fuse-agenttest.pid
ZFS=/usr/sbin/zfs
ZPOOL=/usr/sbin/zpool

log() { echo "zfs-fuse-teardown: $*" >&2; }

if [ -x "$ZPOOL" ] && timeout 10 "$ZPOOL" list "$POOL" >/dev/null 2>&1; then
    log "destroying pool $POOL"
    for attempt in 1 2 3; do
        # zfs-fuse answers "pool is busy" while datasets are mounted: unmount them, deepest
        # first, then retry (an unmount there sometimes completes a moment later).
        timeout 30 "$ZFS" list -H -o name -t filesystem -r "$POOL" 2>/dev/null | sort -r |
            while read -r fs; do timeout 10 "$ZFS" unmount "$fs" >/dev/null 2>&1 || true; done
        timeout 30 "$ZPOOL" destroy -f "$POOL" >&2 && break
        if [ "$attempt" -eq 3 ]; then
            log "could not destroy $POOL"
        else
            sleep 1
        fi
    done
fi

if [ -f "$PIDFILE" ]; then
    pid=$(cat "$PIDFILE")
    if kill -0 "$pid" 2>/dev/null; then
        log "stopping zfs-fuse (pid $pid)"
        kill "$pid"
        # It takes a second or two to exit and keeps its socket until then.
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -f "$PIDFILE"
fi

# Mounts of the pool that outlived the daemon ("Transport endpoint is not connected").
awk -v pool="$POOL" '$3 == "fuse.zfs" && ($1 == pool || index($1, pool "/") == 1) { print $2 }' \
    /proc/mounts | sort -r | while read -r mnt; do
    umount -l "$mnt" >&2 || true
done

rm -f "$VDEV"
