"""The MAAS region simulator's hooks in the lab: a deployed machine is a QEMU guest booted from the uploaded image.

``python -m bmclab.maas_hook deploy`` (the simulator's ``on_deploy``) writes the image MAAS received onto the
machine's disk (as curtin writes a ``ddraw``/``ddgz`` image), packs the deployment's user-data as a ``cidata`` seed
(a FAT image on a virtio disk: MAAS hands cloud-init its user-data through its metadata service, which the lab has
not, so the seed plays that part), boots the disk with the appliance ISO's kernel and initrd, and waits for the
appliance to report SSH ready; it then tells the simulator the machine's address. The test appliance's disk boot
configures a deployed image from that seed (``pplab.disk.write_image``, ``lab/appliance/init``).

``python -m bmclab.maas_hook release`` (``on_release``) stops the machine's guest.

Environment: the simulator's ``MAAS_SIM_*`` variables, and from the hook's own ``env``: ``PPLAB_MAAS_ISO`` (the
appliance ISO, for its kernel and initrd) and ``PPLAB_MAAS_WORK`` (where machines' disks and guests' records live).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from pplab import net
from pplab.disk import create_disk
from pplab.qemu import GuestSpec, cached_boot_files, extract_boot_files, free_tap, start_guest

from palette_provision.seed import build_cidata_disk

READY_TIMEOUT_S = 300


def _env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise SystemExit(f"maas_hook: {name} is not set")
    return value


def _record(work: Path, system_id: str) -> Path:
    return work / f"{system_id}.guest.json"


def _write_image(image: Path, filetype: str, disk: Path) -> None:
    opener = gzip.open if filetype == "ddgz" else open
    with opener(image, "rb") as src, disk.open("r+b") as dst:
        shutil.copyfileobj(src, dst, 4 << 20)


def _stop(work: Path, system_id: str) -> None:
    record = _record(work, system_id)
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        return
    pid = int(data.get("pid", 0))
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        cmdline = b""
    if pid > 0 and str(data.get("disk", "")).encode() in cmdline:  # our QEMU, not a reused pid
        try:
            os.killpg(pid, signal.SIGTERM)
            for _ in range(50):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)
            else:
                os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    free_tap(GuestSpec(name=system_id, disk=Path(data["disk"]), mac=str(data["mac"])))
    record.unlink(missing_ok=True)


def deploy() -> int:
    """The on-deploy hook: write the image, seed it, boot it, wait for SSH, report the address."""
    system_id, hostname = _env("MAAS_SIM_SYSTEM_ID"), _env("MAAS_SIM_HOSTNAME")
    work = Path(_env("PPLAB_MAAS_WORK"))
    work.mkdir(parents=True, exist_ok=True)
    _stop(work, system_id)  # a redeploy replaces the guest
    image = Path(_env("MAAS_SIM_IMAGE_FILE"))
    mac = _env("MAAS_SIM_MACS").split(",")[0]
    result = Path(_env("MAAS_SIM_RESULT_FILE"))
    disk = create_disk(work / f"{system_id}.raw", "300G")
    _write_image(image, os.environ.get("MAAS_SIM_IMAGE_FILETYPE", "ddraw"), disk)
    user_data = Path(_env("MAAS_SIM_USER_DATA_FILE")).read_bytes()
    meta = f"instance-id: {system_id}\nlocal-hostname: {hostname}\n".encode()
    seed = work / f"{system_id}-seed.img"
    seed.write_bytes(build_cidata_disk({"user-data": user_data, "meta-data": meta}, "cidata"))
    seed.chmod(0o600)
    if not extract_boot_files(Path(_env("PPLAB_MAAS_ISO")), disk):
        result.write_text(json.dumps({"status_message": "Installation failed: no kernel in the appliance ISO"}))
        return 1
    kernel, initrd = cached_boot_files(disk)
    net.ensure_lan()
    console = work / f"{system_id}.console.log"
    guest = start_guest(GuestSpec(name=hostname, disk=disk, mac=mac, removable=seed, kernel=kernel, initrd=initrd,
                                  console_log=console))  # fmt: skip
    _record(work, system_id).write_text(json.dumps({"pid": guest.pid, "disk": str(disk), "mac": mac}))
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        text = guest.console()
        if "ready: ssh on " in text:
            shown = text.split("ready: ssh on ", 1)[1].split(":", 1)[0]
            address = shown if shown != "dhcp" else os.environ.get("MAAS_SIM_ADDRESS", "")
            result.write_text(json.dumps({"ip_addresses": [address] if address else []}))
            return 0
        if "ERROR" in text or not guest.is_running():
            result.write_text(json.dumps({"status_message": "Installation failed: the image did not boot"}))
            return 1
        time.sleep(0.5)
    result.write_text(json.dumps({"status_message": "Installation failed: no SSH before the deadline"}))
    return 1


def release() -> int:
    """The on-release hook: stop the machine's guest (none running: nothing to do)."""
    _stop(Path(_env("PPLAB_MAAS_WORK")), _env("MAAS_SIM_SYSTEM_ID"))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``deploy`` or ``release``."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["deploy"]:
        return deploy()
    if args == ["release"]:
        return release()
    print("usage: python -m bmclab.maas_hook deploy|release", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
