#!/usr/bin/env bash
# Builds the small bootable test guest for the agent's QEMU tests, from Debian packages only.
#
#   bash agent/tests/guest/build-test-image.sh OUTDIR
#
# Writes into OUTDIR:
#   disk.raw     32 MiB raw disk: MBR (syslinux mbr.bin) + one bootable FAT16 partition holding
#                syslinux, vmlinuz, initrd.img and syslinux.cfg (serial console on ttyS0).
#                SeaBIOS -> syslinux -> Debian kernel + busybox initramfs.
#   vmlinuz      the same kernel, for qemu -kernel
#   initrd.img   the same initramfs, for qemu -initrd
#   SHA256SUMS   of the three files above
#   BUILDINFO    which packages went in, and the kernel command line
#   cache/       the downloaded .debs (kernel, busybox-static): a rebuild uses them and needs no
#                network. Delete cache/ (or set GUEST_IMAGE_REFRESH=1) to pick up newer packages.
#
# The guest's /init prints GUEST-BOOT-OK on ttyS0, GUEST-META lines from an attached NoCloud
# `cidata` disk, GUEST-NET and GUEST-PING-OK/FAIL lines when the seed gives it a static address
# and an address to ping, GUEST-ALIVE <n> every 2 s, and GUEST-POWEROFF before it powers off on an ACPI
# power-button press (QMP system_powerdown). See README.md beside this file.
#
# The output is reproducible: same cache and same host tools give the same SHA256SUMS
# (SOURCE_DATE_EPOCH, cpio --reproducible, gzip -n, fixed FAT and MBR ids). Needs root only to
# install the missing host packages (apt-get) and to create /dev/console in the initramfs.
set -euo pipefail

usage() { echo "usage: $0 OUTDIR" >&2; exit 2; }
[ $# -eq 1 ] || usage
OUT=$1
log() { echo "build-test-image: $*" >&2; }
die() { log "$*"; exit 1; }

# A fixed timestamp for every file in the image (2024-01-01T00:00:00Z unless the caller sets one).
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1704067200}
export LC_ALL=C TZ=UTC PATH=$PATH:/usr/sbin:/sbin
umask 022

# Debian kernel flavour. `cloud-amd64` (lz4-compressed bzImage, 14 MB) boots in about 6.5 s under
# TCG here; `amd64` (xz, 8 MB, a smaller image) takes about 11.5 s, mostly decompressing itself.
FLAVOUR=${GUEST_KERNEL_FLAVOUR:-cloud-amd64}
# Kernel command line. panic=1: a kernel panic reboots after 1 s (with -no-reboot, qemu then exits
# with a guest-reset). unknown_nmi_panic: QMP inject-nmi panics the guest, so a test can force one.
CMDLINE="console=ttyS0,115200 panic=1 unknown_nmi_panic quiet"
DISK_MIB=32
PART_START=2048                              # sectors (1 MiB)
MBR_ID=0x47554553                            # "GUES", the MBR disk signature
FAT_ID=47554553                              # FAT volume id
FAT_LABEL=GUESTBOOT
# Modules the guest loads: virtio PCI + block (for a cidata disk) + net (for the metadata
# service), iso9660 and vfat (+ the NLS tables vfat mounts with by default), and the ACPI power
# button with evdev for busybox acpid. Their dependencies are added and ordered from
# `modinfo -F depends`.
MODULES="virtio_pci virtio_blk virtio_net isofs vfat nls_cp437 nls_ascii button evdev"

# ---- host tools (Debian packages only) ----------------------------------------------------------
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
# cpio: the initramfs; syslinux + syslinux-common: the bootloader and mbr.bin; mtools and
# dosfstools: the FAT partition without mounting it; fdisk: sfdisk; kmod: modinfo.
missing=()
for pkg in cpio syslinux syslinux-common mtools dosfstools fdisk kmod; do
    dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null | grep -q '^ii' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing host packages: ${missing[*]}"
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >&2
fi

mkdir -p "$OUT/cache"
OUT=$(cd "$OUT" && pwd)
CACHE=$OUT/cache

# One build at a time per OUTDIR (tests may call this script concurrently).
exec 9>"$OUT/.lock"
flock -w 600 9 || die "timed out waiting for another build into $OUT"

WORK=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# ---- the .debs: from the cache, else downloaded into it -----------------------------------------
apt_download() { # PACKAGE: downloads its candidate .deb into $CACHE
    local opts=()
    # apt's sandbox user _apt may not be able to write into $CACHE.
    [ "$(id -u)" -ne 0 ] || opts=(-o APT::Sandbox::User=root)
    (cd "$CACHE" && timeout 600 apt-get -q "${opts[@]}" download "$1" >&2) && return 0
    log "apt-get download $1 failed; updating the package lists and retrying"
    $SUDO apt-get update -qq >&2
    (cd "$CACHE" && timeout 600 apt-get -q "${opts[@]}" download "$1" >&2)
}

cached_deb() { # REGEX: prints the newest cached .deb whose name matches it (grep -E), if any
    local f
    f=$(find "$CACHE" -maxdepth 1 -type f -name '*.deb' -printf '%f\n' | grep -E "^$1\$" |
        sort -V | tail -n 1 || true)
    [ -z "$f" ] || echo "$CACHE/$f"
}

kernel_deb=""
busybox_deb=""
if [ "${GUEST_IMAGE_REFRESH:-0}" != 1 ]; then
    kernel_deb=$(cached_deb "linux-image-[0-9.]+-[0-9]+-${FLAVOUR}_[^_]+_amd64\.deb")
    busybox_deb=$(cached_deb "busybox-static_[^_]+_amd64\.deb")
fi
if [ -z "$kernel_deb" ]; then
    # linux-image-amd64 is a metapackage: its dependency names the current ABI's real package.
    kpkg=$(apt-cache depends "linux-image-$FLAVOUR" 2>/dev/null |
        sed -n "s/^ *Depends: \(linux-image-[0-9][^ ]*-$FLAVOUR\)$/\1/p" | head -n 1 || true)
    if [ -z "$kpkg" ]; then
        $SUDO apt-get update -qq >&2
        kpkg=$(apt-cache depends "linux-image-$FLAVOUR" |
            sed -n "s/^ *Depends: \(linux-image-[0-9][^ ]*-$FLAVOUR\)$/\1/p" | head -n 1)
    fi
    [ -n "$kpkg" ] || die "cannot resolve linux-image-$FLAVOUR"
    log "downloading $kpkg"
    apt_download "$kpkg"
    kernel_deb=$(cached_deb "${kpkg}_[^_]+_amd64\.deb")
fi
if [ -z "$busybox_deb" ]; then
    log "downloading busybox-static"
    apt_download busybox-static
    busybox_deb=$(cached_deb "busybox-static_[^_]+_amd64\.deb")
fi
[ -f "$kernel_deb" ] || die "no kernel .deb in $CACHE"
[ -f "$busybox_deb" ] || die "no busybox-static .deb in $CACHE"
log "kernel:  $(basename "$kernel_deb")"
log "busybox: $(basename "$busybox_deb")"

dpkg-deb -x "$kernel_deb" "$WORK/kernel"
dpkg-deb -x "$busybox_deb" "$WORK/busybox"
KVER=$(find "$WORK/kernel/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | head -n 1)
if [ -z "$KVER" ] || [ ! -f "$WORK/kernel/boot/vmlinuz-$KVER" ]; then
    die "unexpected layout in $kernel_deb"
fi
KMOD=$WORK/kernel/lib/modules/$KVER

# ---- the initramfs ------------------------------------------------------------------------------
R=$WORK/root
mkdir -p "$R"/{bin,sbin,dev,proc,sys,tmp,run,mnt/cidata,var/log,etc/acpi/PWRF,lib/modules}
cp "$WORK/busybox/bin/busybox" "$R/bin/busybox"
for applet in $("$R/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$R/bin/$applet"
done
if [ "$(id -u)" -eq 0 ]; then
    # The kernel opens /dev/console for init before /init can mount devtmpfs.
    mknod -m 600 "$R/dev/console" c 5 1
    mknod -m 666 "$R/dev/null" c 1 3
fi

# Module file for a name (modinfo and the kernel treat - and _ alike).
declare -A modpath
while IFS= read -r f; do
    n=$(basename "$f" .ko)
    modpath[${n//-/_}]=$f
done < <(find "$KMOD/kernel" -name '*.ko')
declare -A builtin
while IFS= read -r f; do
    n=$(basename "$f" .ko)
    builtin[${n//-/_}]=1
done < "$KMOD/modules.builtin"

order=()
declare -A placed
add_module() { # NAME: appends NAME after its dependencies (depth first)
    local name=${1//-/_} dep
    [ -z "${placed[$name]:-}" ] || return 0
    [ -z "${builtin[$name]:-}" ] || return 0
    local f=${modpath[$name]:-}
    [ -n "$f" ] || die "module $name is not in $(basename "$kernel_deb")"
    placed[$name]=1
    for dep in $(modinfo -F depends "$f" | tr ',' ' '); do
        add_module "$dep"
    done
    order+=("$name")
    cp "$f" "$R/lib/modules/$name.ko"
}
for m in $MODULES; do add_module "$m"; done
printf '%s\n' "${order[@]}" > "$R/etc/modules"
log "modules: ${order[*]}"

cat > "$R/etc/udhcpc.script" <<'EOF'
#!/bin/sh
# busybox udhcpc calls this with the lease in the environment.
case "$1" in
bound|renew)
    ifconfig "$interface" "$ip" netmask "${subnet:-255.255.0.0}" up
    [ -z "$router" ] || route add default gw "${router%% *}" dev "$interface"
    ;;
esac
EOF
chmod 755 "$R/etc/udhcpc.script"

cat > "$R/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
# Run by busybox acpid for the ACPI power button (QMP system_powerdown).
echo GUEST-POWEROFF > /dev/console
sync
poweroff -f
EOF
chmod 755 "$R/etc/acpi/PWRF/00000080"

cat > "$R/init" <<'EOF'
#!/bin/sh
# PID 1 of the agent's test guest. Every line it prints goes to ttyS0 (console=ttyS0).
export PATH=/bin:/sbin
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
exec </dev/console >/dev/console 2>&1
# The firmware and the bootloader leave terminal escapes without a newline: start a fresh line.
echo

while read -r m; do
    insmod "/lib/modules/$m.ko" || echo "GUEST-WARN insmod $m failed"
done < /etc/modules

# NoCloud hook: a virtio disk (iso9660 `cidata` or vfat `CIDATA`) with a meta-data file.
meta_value() { # KEY FILE: the value of a `key: value` line, quotes and CR stripped
    sed -n "s/^[[:space:]]*$1[[:space:]]*:[[:space:]]*//p" "$2" | head -n 1 |
        tr -d '\r' | sed 's/^"\(.*\)"[[:space:]]*$/\1/; s/^'"'"'\(.*\)'"'"'[[:space:]]*$/\1/; s/[[:space:]]*$//'
}
static_addr=""
ping_target=""
ping_tries=""
for label in cidata CIDATA; do
    dev=$(findfs "LABEL=$label" 2>/dev/null) || continue
    mount -o ro "$dev" /mnt/cidata 2>/dev/null || continue
    if [ -f /mnt/cidata/meta-data ]; then
        for key in instance-id local-hostname; do
            v=$(meta_value "$key" /mnt/cidata/meta-data)
            [ -z "$v" ] || echo "GUEST-META $key=$v"
        done
        # The first SSH key: the line after `public-keys:`, without the list dash and quotes.
        k=$(sed -n '/^public-keys:/{n;p;}' /mnt/cidata/meta-data | tr -d '\r' |
            sed 's/^[[:space:]]*-[[:space:]]*//; s/^"\(.*\)"[[:space:]]*$/\1/')
        [ -z "$k" ] || echo "GUEST-META public-key=$k"
        h=$(meta_value local-hostname /mnt/cidata/meta-data)
        [ -z "$h" ] || hostname "$h"
        # What the switch tests ask for in the key/value metadata (`meta:`, keys quoted): an
        # address to ping once the network is up, and how many tries it gets.
        ping_target=$(sed -n 's/^[[:space:]]*"ping":[[:space:]]*"\([0-9.]*\)"[[:space:]]*$/\1/p' \
            /mnt/cidata/meta-data | head -n 1)
        ping_tries=$(sed -n 's/^[[:space:]]*"ping-tries":[[:space:]]*"\([0-9]*\)"[[:space:]]*$/\1/p' \
            /mnt/cidata/meta-data | head -n 1)
    fi
    # A static address for eth0 from network-config: the first item under `addresses:`.
    if [ -f /mnt/cidata/network-config ]; then
        static_addr=$(sed -n '/addresses:/{n;p;}' /mnt/cidata/network-config | head -n 1 |
            tr -d '\r"' | sed 's/^[[:space:]]*-[[:space:]]*//; s/[[:space:]]*$//')
    fi
    break
done

# Metadata over HTTP (EC2 layout at 169.254.169.254): DHCP on the first NIC, then two paths.
# busybox's static wget segfaults (its resolver), so the GET is by hand over nc.
http_get() { # HOST PATH: the first line of the body of the answer
    { printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$2" "$1"; sleep 1; } | nc "$1" 80 2>/dev/null |
        tr -d '\r' | sed '1,/^$/d' | head -n 1
}
if [ -e /sys/class/net/eth0 ]; then
    ifconfig eth0 up
    if [ -n "$static_addr" ]; then
        if ip addr add "$static_addr" dev eth0; then
            echo "GUEST-NET eth0=$static_addr"
        else
            echo "GUEST-WARN cannot put $static_addr on eth0"
        fi
    elif udhcpc -i eth0 -n -q -t 4 -T 1 -s /etc/udhcpc.script >/dev/null 2>&1; then
        for key in local-hostname public-keys/0/openssh-key; do
            v=$(http_get 169.254.169.254 "/latest/meta-data/$key")
            [ -z "$v" ] || echo "GUEST-HTTP $key=$v"
        done
    else
        echo "GUEST-WARN no DHCP lease on eth0"
    fi
fi

# ACPI power button -> /etc/acpi/PWRF/00000080 -> GUEST-POWEROFF, poweroff -f.
acpid -c /etc/acpi -l /var/log/acpid.log

read -r up _ < /proc/uptime
echo "GUEST-INFO kernel=$(uname -r) uptime=$up"
echo GUEST-BOOT-OK

# Ping the address the metadata named, once a second, until it answers or the tries run out.
if [ -n "$ping_target" ]; then
    (
        n=0
        while [ "$n" -lt "${ping_tries:-90}" ]; do
            if ping -c 1 -W 1 "$ping_target" >/dev/null 2>&1; then
                echo "GUEST-PING-OK $ping_target"
                exit 0
            fi
            n=$((n + 1))
            sleep 1
        done
        echo "GUEST-PING-FAIL $ping_target"
    ) &
fi

n=0
while :; do
    sleep 2
    n=$((n + 1))
    echo "GUEST-ALIVE $n"
done
EOF
chmod 755 "$R/init"

find "$R" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
(cd "$R" && find . -mindepth 1 | sort | cpio -o -H newc --reproducible -R 0:0 --quiet) |
    gzip -n -9 > "$WORK/initrd.img"
cp "$WORK/kernel/boot/vmlinuz-$KVER" "$WORK/vmlinuz"

# ---- the disk -----------------------------------------------------------------------------------
cat > "$WORK/syslinux.cfg" <<EOF
SERIAL 0 115200
PROMPT 0
TIMEOUT 0
DEFAULT guest
LABEL guest
  KERNEL /vmlinuz
  INITRD /initrd.img
  APPEND $CMDLINE
EOF
touch -d "@$SOURCE_DATE_EPOCH" "$WORK/vmlinuz" "$WORK/initrd.img" "$WORK/syslinux.cfg"

PART_SECTORS=$((DISK_MIB * 2048 - PART_START))
PART=$WORK/part.img
truncate -s $((PART_SECTORS * 512)) "$PART"
mkfs.fat --invariant -F 16 -n "$FAT_LABEL" -i "$FAT_ID" -h "$PART_START" "$PART" >/dev/null
export MTOOLS_SKIP_CHECK=1
mcopy -m -i "$PART" "$WORK/vmlinuz" "$WORK/initrd.img" "$WORK/syslinux.cfg" ::/
syslinux --install "$PART"

DISK=$WORK/disk.raw
truncate -s $((DISK_MIB * 1024 * 1024)) "$DISK"
printf 'label: dos\nlabel-id: %s\nunit: sectors\n\nstart=%d, size=%d, type=6, bootable\n' \
    "$MBR_ID" "$PART_START" "$PART_SECTORS" | sfdisk -q --no-reread --no-tell-kernel "$DISK" >/dev/null
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$DISK" bs=440 count=1 conv=notrunc status=none
dd if="$PART" of="$DISK" bs=512 seek="$PART_START" conv=notrunc,sparse status=none

cat > "$WORK/BUILDINFO" <<EOF
kernel-deb: $(basename "$kernel_deb")
busybox-deb: $(basename "$busybox_deb")
syslinux: $(dpkg-query -W -f='${Version}' syslinux)
kernel: $KVER
cmdline: $CMDLINE
modules: ${order[*]}
source-date-epoch: $SOURCE_DATE_EPOCH
EOF
(cd "$WORK" && sha256sum disk.raw initrd.img vmlinuz > SHA256SUMS)

for f in disk.raw initrd.img vmlinuz BUILDINFO SHA256SUMS; do
    mv -f "$WORK/$f" "$OUT/$f"
done
log "built $OUT/disk.raw ($(du -k --apparent-size "$OUT/disk.raw" | cut -f1) KiB)," \
    "initrd.img $(stat -c %s "$OUT/initrd.img") bytes, vmlinuz $(stat -c %s "$OUT/vmlinuz") bytes"
cat "$OUT/SHA256SUMS" >&2
