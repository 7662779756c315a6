#!/usr/bin/env bash
# Installs QEMU (qemu-system-x86, TCG) for the agent's guest tests. Idempotent; needs root.
#
#   bash agent/tests/guest/install-qemu.sh
#
# On the project's Debian 12 machines qemu-utils comes from bookworm-backports, and bookworm's own
# qemu-system-x86 conflicts with it ("qemu-utils : Breaks: qemu-system-common (< 1:8.0+dfsg-5~)"),
# so qemu-system-x86 is installed from bookworm-backports too. The backports suite is added (on the
# mirror the machine's apt sources already use) only if no apt source has it yet. Nothing happens
# when qemu-system-x86_64 and qemu-img are already there. Prints the QEMU version.
# See shared/docs/linux-test-backends.md section 1.
set -euo pipefail

log() { echo "install-qemu: $*" >&2; }

if command -v qemu-system-x86_64 >/dev/null 2>&1 && command -v qemu-img >/dev/null 2>&1; then
    qemu-system-x86_64 --version | head -n 1
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (apt-get install)"
    exit 1
fi

# shellcheck disable=SC1091
. /etc/os-release
CODENAME=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}
BACKPORTS=$CODENAME-backports

# The apt sources, one "URI SUITE" per line, from one-line (.list) and deb822 (.sources) files.
apt_sources() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        # deb [options] URI SUITE COMPONENT...
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" | awk '$1 == "deb" { print $2, $3 }'
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk '
            function flush(   i, j, u, s, nu, ns) {
                if (types ~ /(^| )deb( |$)/ && enabled != "no") {
                    nu = split(uris, u, " "); ns = split(suites, s, " ")
                    for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++) print u[i], s[j]
                }
                types = ""; uris = ""; suites = ""; enabled = ""
            }
            /^[[:space:]]*$/ { flush(); next }
            /^#/ { next }
            { line = $0; sub(/^[^:]*:[[:space:]]*/, "", line); key = tolower($1) }
            key == "types:" { types = line }
            key == "uris:" { uris = line }
            key == "suites:" { suites = line }
            key == "enabled:" { enabled = tolower(line) }
            END { flush() }
        ' "$f"
    done
}

sources=$(apt_sources)
if awk -v s="$BACKPORTS" '$2 == s { found = 1 } END { exit !found }' <<<"$sources"; then
    log "$BACKPORTS is already an apt source"
else
    mirror=$(awk -v s="$CODENAME" '$2 == s { print $1; exit }' <<<"$sources")
    mirror=${mirror:-http://deb.debian.org/debian}
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    log "adding $BACKPORTS from $mirror"
    {
        echo "Types: deb"
        echo "URIs: $mirror"
        echo "Suites: $BACKPORTS"
        echo "Components: main"
        [ ! -f "$keyring" ] || echo "Signed-By: $keyring"
    } > "/etc/apt/sources.list.d/$BACKPORTS.sources"
fi

log "installing qemu-system-x86 and qemu-utils from $BACKPORTS"
timeout 600 apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq -o Dpkg::Use-Pty=0 \
    --no-install-recommends -t "$BACKPORTS" qemu-system-x86 qemu-utils >&2

qemu-system-x86_64 --version | head -n 1
