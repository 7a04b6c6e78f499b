#!/bin/bash
# lab/install.sh: make this Debian 12 machine able to run the offline lab.
#
#   1. installs the Debian packages the lab needs (apt-get update first, only when
#      something is missing, so a re-run costs well under a second);
#   2. builds the test appliance ISO into lab/build/appliance.iso (only when its
#      inputs changed; see lab/appliance/build.sh).
#
# Non-interactive and idempotent; run as root (CI runs it with CI=true, no stdin).
# PPLAB_SKIP_APT=1 skips step 1; PPLAB_KERNEL_PKG pins the appliance's kernel.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
export DEBIAN_FRONTEND=noninteractive

PACKAGES=(
    qemu-system-x86 qemu-utils          # the guests (TCG)
    busybox-static dropbear-bin curl    # the appliance's userland, SSH server, and curl for its network stage
    xorriso isolinux syslinux-common    # the appliance ISO; xorriso also reads it back (pplab.qemu)
    cpio kmod                           # initramfs, module dependencies
    golang-go golang-gopkg-yaml.v3-dev  # the appliance's seed parser (static Go, GOPATH mode)
    openssh-server openssh-client       # sshd nodes (pplab.net.SshdNode)
    nftables iproute2                   # lab networks: namespaces, veths, bridge, taps, DNAT, faults
    openipmi ipmitool                   # IPMI BMCs (ipmi_sim) and a reference client (bmclab)
    docker-registry                     # a real OCI registry (CNCF Distribution 2.8) for pack pushes (pplab.registry)
)

if [ "$(id -u)" != 0 ]; then
    echo "lab/install.sh: must run as root" >&2
    exit 1
fi

apt_get() {
    # Another apt (unattended upgrades, a parallel job) may hold the lock: wait for it.
    apt-get -y -q -o DPkg::Lock::Timeout=600 "$@"
}

if [ "${PPLAB_SKIP_APT:-0}" != 1 ]; then
    missing=()
    for p in "${PACKAGES[@]}"; do
        [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
    done
    # The kernel package is resolved from the apt lists: they must exist too.
    # (A glob, not apt-cache, which costs ~0.7 s.)
    if [ ${#missing[@]} -gt 0 ] || ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        echo "lab/install.sh: apt-get update; installing: ${missing[*]:-(nothing, lists only)}" >&2
        apt_get update
        [ ${#missing[@]} -eq 0 ] || apt_get install --no-install-recommends "${missing[@]}"
    fi
fi

if ! "$HERE/appliance/build.sh"; then
    # Stale apt lists name a kernel the mirror no longer has: refresh once, retry.
    echo "lab/install.sh: appliance build failed; refreshing apt lists and retrying" >&2
    apt_get update
    "$HERE/appliance/build.sh"
fi
