#!/bin/bash
# Build the lab's test appliance ISO: lab/build/appliance.iso.
#
#   lab/appliance/build.sh [--force]
#
# Needs the Debian packages installed by lab/install.sh. Rebuilds only when an
# input changed (the sources here, the kernel package, the versions of the Debian
# packages copied in); the stamp is lab/build/appliance.inputs.
# Environment: PPLAB_KERNEL_PKG=linux-image-<version>-amd64 pins the kernel
# (default: whatever linux-image-amd64 currently depends on).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
LAB=$(dirname "$HERE")
BUILD=$LAB/build
CACHE=$BUILD/cache
ISO=$BUILD/appliance.iso
FORCE=0
[ "${1:-}" = --force ] && FORCE=1

log() { echo "appliance-build: $*" >&2; }

mkdir -p "$CACHE"
# One build at a time (CI's install.sh and a developer's run may overlap).
exec 9>"$BUILD/appliance.lock"
flock 9

# --- inputs -------------------------------------------------------------------
KPKG=${PPLAB_KERNEL_PKG:-}
# apt-cache costs ~0.7 s here (no saved pkgcache): remember its answer until the
# apt lists change.
LISTS_SIG=$(stat -c '%n %Y' /var/lib/apt/lists/*Release 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ -z "$KPKG" ] && [ "$(sed -n 1p "$CACHE/kernel.resolved" 2>/dev/null)" = "$LISTS_SIG" ]; then
    KPKG=$(sed -n 2p "$CACHE/kernel.resolved")
fi
if [ -z "$KPKG" ]; then
    KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null \
        | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n1)
    [ -n "$KPKG" ] && printf '%s\n%s\n' "$LISTS_SIG" "$KPKG" >"$CACHE/kernel.resolved"
fi
if [ -z "$KPKG" ]; then
    # No apt lists (fresh container) but a kernel already cached: reuse it.
    KPKG=$(cat "$CACHE/kernel.pkg" 2>/dev/null || true)
fi
[ -n "$KPKG" ] || { log "cannot resolve the kernel package (run apt-get update)"; exit 1; }
KVER=${KPKG#linux-image-}

pkgver() { dpkg-query -W -f='${Package}=${Version} ' "$@"; }
INPUTS=$( {
    echo "kernel=$KPKG"
    pkgver busybox-static dropbear-bin curl libcurl4 isolinux syslinux-common golang-go golang-gopkg-yaml.v3-dev libc6
    (cd "$HERE" && find . -type f ! -name '*~' -print0 | sort -z | xargs -0 sha256sum)
} | sha256sum | cut -d' ' -f1)

if [ $FORCE = 0 ] && [ -f "$ISO" ] && [ "$(cat "$BUILD/appliance.inputs" 2>/dev/null)" = "$INPUTS" ]; then
    log "up to date: $ISO"
    exit 0
fi

# --- kernel and the few modules the appliance needs ----------------------------
KDIR=$CACHE/kernel-$KVER
if [ ! -f "$KDIR/.done" ]; then
    log "fetching $KPKG"
    rm -rf "$KDIR" && mkdir -p "$KDIR"
    deb=$(ls "$CACHE"/"${KPKG}"_*.deb 2>/dev/null | head -n1 || true)
    if [ -z "$deb" ]; then
        # apt-get download wants to drop privileges to _apt; the cache dir is root's.
        (cd "$CACHE" && apt-get -q -o APT::Sandbox::User=root download "$KPKG" >&2)
        deb=$(ls "$CACHE"/"${KPKG}"_*.deb | head -n1)
    fi
    tmp=$(mktemp -d)
    # Only /boot and the module tree: the full package unpacks to ~400 MB.
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" ./boot ./lib/modules
    cp "$tmp/boot/vmlinuz-$KVER" "$KDIR/vmlinuz"
    mv "$tmp/lib/modules/$KVER" "$KDIR/modules"
    rm -rf "$tmp"
    # Old kernels' debs and trees are not inputs any more.
    find "$CACHE" -maxdepth 1 -name 'linux-image-*.deb' ! -name "${KPKG}_*" -delete
    find "$CACHE" -maxdepth 1 -name 'kernel-*' ! -name "kernel-$KVER" -exec rm -rf {} +
    echo "$KPKG" >"$CACHE/kernel.pkg"
    touch "$KDIR/.done"
fi

# --- the agent (static Go) ------------------------------------------------------
AGENT=$BUILD/pplab-agent
AGENT_SUM=$(cat "$HERE/agent/"*.go | sha256sum | cut -d' ' -f1)
if [ ! -x "$AGENT" ] || [ "$(cat "$BUILD/pplab-agent.sum" 2>/dev/null)" != "$AGENT_SUM" ]; then
    log "building pplab-agent"
    # GOPATH mode against Debian's packaged yaml.v3: no go.mod, no network.
    (cd "$HERE/agent" && GO111MODULE=off GOPATH=/usr/share/gocode CGO_ENABLED=0 GOFLAGS= \
        GOCACHE="$CACHE/gocache" go build -trimpath -ldflags='-s -w' -o "$AGENT" .)
    echo "$AGENT_SUM" >"$BUILD/pplab-agent.sum"
fi

# --- initramfs ------------------------------------------------------------------
ROOT=$(mktemp -d)
STAGE=$(mktemp -d)
trap 'rm -rf "$ROOT" "$STAGE"' EXIT
# mktemp -d makes 0700 and cpio keeps it as the guest's "/": the node account
# then cannot reach its own ~/.ssh and dropbear rejects its key without a word
# in the log (it reads authorized_keys with the user's euid).
chmod 755 "$ROOT"
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,etc/pplab,etc/ssh,etc/dropbear,dev,proc,sys,tmp,run,root,home,lib/modules,var/lib}
mknod -m 600 "$ROOT/dev/console" c 5 1
mknod -m 666 "$ROOT/dev/null" c 1 3

cp /bin/busybox "$ROOT/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ -e "$ROOT/bin/$applet" ] || ln -s busybox "$ROOT/bin/$applet"
done

# dropbear is dynamically linked (libtomcrypt, libtommath, libgmp, libz, libcrypt, libc); curl (for the seed's
# network-stage commands, as on a Kairos image) with its libraries.
for bin in /usr/sbin/dropbear /usr/bin/dropbearconvert /usr/bin/dropbearkey /usr/bin/curl; do
    cp "$bin" "$ROOT$bin"
    for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
        mkdir -p "$ROOT$(dirname "$lib")"
        cp -L "$lib" "$ROOT$lib"
    done
done
cp "$AGENT" "$ROOT/bin/pplab-agent"
install -m 755 "$HERE/init" "$ROOT/init"
install -m 755 "$HERE/udhcpc.script" "$ROOT/etc/udhcpc.script"
printf '/bin/sh\n' >"$ROOT/etc/shells"
# glibc >= 2.34 has the files NSS module built in; dropbear's getpwnam needs only this.
printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n' >"$ROOT/etc/nsswitch.conf"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$ROOT/etc/passwd"
printf 'root:x:0:\n' >"$ROOT/etc/group"
printf '127.0.0.1 localhost\n' >"$ROOT/etc/hosts"

# Modules and their dependencies, in load order (dependencies first). insmod
# instead of modprobe: no modules.dep to build and the order is fixed here.
MODS="ata_piix sd_mod sr_mod isofs vfat nls_cp437 nls_ascii virtio_pci virtio_blk e1000 qemu_fw_cfg"
declare -A SEEN=()
ORDER=()
modfile() { find "$KDIR/modules/kernel" \( -name "$1.ko" -o -name "${1//_/-}.ko" -o -name "${1//-/_}.ko" \) | head -n1; }
visit() {
    local m=$1 f dep
    [ -n "${SEEN[$m]:-}" ] && return 0
    SEEN[$m]=1
    f=$(modfile "$m")
    if [ -z "$f" ]; then
        grep -q "/${m//-/[-_]}.ko$" "$KDIR/modules/modules.builtin" 2>/dev/null && return 0
        log "module $m not found in $KPKG"; exit 1
    fi
    for dep in $(/sbin/modinfo -F depends "$f" | tr ',' ' '); do visit "$dep"; done
    ORDER+=("${f#"$KDIR/modules/"}")
}
for m in $MODS; do visit "$m"; done
for rel in "${ORDER[@]}"; do
    mkdir -p "$ROOT/lib/modules/$(dirname "$rel")"
    cp "$KDIR/modules/$rel" "$ROOT/lib/modules/$rel"
    echo "$rel"
done >"$ROOT/etc/pplab/modules"

mkdir -p "$STAGE/boot" "$STAGE/isolinux"
(cd "$ROOT" && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) | gzip -6 >"$STAGE/boot/initrd.gz"
cp "$KDIR/vmlinuz" "$STAGE/boot/vmlinuz"
cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$STAGE/isolinux/"
cp "$HERE/isolinux.cfg" "$STAGE/isolinux/isolinux.cfg"
echo "$KPKG" >"$STAGE/boot/kernel.pkg"

xorriso -as mkisofs -quiet -o "$ISO.tmp" -V PPLAB_APPLIANCE -J -R \
    -b isolinux/isolinux.bin -c isolinux/boot.cat -no-emul-boot -boot-load-size 4 -boot-info-table \
    -isohybrid-mbr /usr/lib/ISOLINUX/isohdpfx.bin "$STAGE"
mv "$ISO.tmp" "$ISO"
echo "$INPUTS" >"$BUILD/appliance.inputs"
log "built $ISO ($(du -h "$ISO" | cut -f1), kernel $KVER, initrd $(du -h "$STAGE/boot/initrd.gz" | cut -f1))"
