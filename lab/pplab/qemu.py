"""QEMU guests on the lab LAN (TCG: this machine has no KVM).

A guest boots from its CDs when it has any (CD 1 the appliance ISO, CD 2 the
``cidata`` seed), else "from disk": the test appliance's install writes no
bootloader, so a disk boot is a direct kernel boot of the kernel and initrd of
the ISO the disk was installed from, cached beside the disk
(``<disk>.vmlinuz``, ``<disk>.initrd``) by the CD boot. QEMU runs with
``-no-reboot``: a guest power-off or reboot ends the QEMU process, which is how
a test sees "the install finished".
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from pplab import net
from pplab._cmd import LabError, kill_group, link_exists, ns_argv, require_tool, run
from pplab.disk import create_disk

__all__ = [
    "Guest",
    "GuestSpec",
    "LabError",
    "cached_boot_files",
    "create_disk",
    "extract_boot_files",
    "free_tap",
    "qemu_argv",
    "start_guest",
]

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
DISK_BOOT_APPEND = "console=ttyS0,115200 quiet pplab.boot=disk"
"""Kernel command line of a disk boot (the ISO's own entry says ``pplab.boot=cd``)."""


@dataclass(kw_only=True)
class GuestSpec:
    """What to boot. All fields are keyword-only."""

    name: str
    """Guest name (QEMU ``-name``; also in log messages)."""
    disk: Path
    """Raw disk image (IDE, the guest's /dev/sda); see :func:`create_disk`."""
    mac: str
    """MAC of the e1000 NIC (the guest's eth0), e.g. ``52:54:00:00:00:11``; also names the tap, so it must be
    unique among running guests."""
    cdroms: list[Path] = field(default_factory=list)
    """0..2 ISO images: CD 1 (the appliance ISO), CD 2 (the seed). With any, the guest boots from CD 1."""
    storage_disk: Path | None = None
    """A second raw disk (IDE primary slave): the appliance's storage-pool disk."""
    removable: Path | None = None
    """A read-only image for a BMC's removable-media slot (a seed), as a virtio disk: the guest's /dev/vda, named
    so whatever order the kernel probes the IDE disks in."""
    memory_mb: int = 384
    install_delay_s: int = 3
    """Simulated install time of the test appliance (QEMU ``-fw_cfg opt/pplab/install_delay``)."""
    console_log: Path | None = None
    """Serial console log file (default ``<disk>.console.log``); truncated at start."""
    kernel: Path | None = None
    """Kernel for a disk boot (default: the one cached beside the disk by the CD boot)."""
    initrd: Path | None = None
    """Initrd for a disk boot (default: the one cached beside the disk by the CD boot)."""

    def __post_init__(self) -> None:
        """Normalise: paths as :class:`Path`, the MAC in lower case."""
        self.disk = Path(self.disk)
        self.storage_disk = Path(self.storage_disk) if self.storage_disk else None
        self.removable = Path(self.removable) if self.removable else None
        self.cdroms = [Path(c) for c in self.cdroms]
        self.mac = self.mac.lower()
        self.console_log = Path(self.console_log) if self.console_log else None

    @property
    def console_path(self) -> Path:
        """The console log path actually used."""
        return self.console_log or self.disk.with_name(self.disk.name + ".console.log")

    @property
    def tap(self) -> str:
        """Name of the guest's tap device inside ``pplab`` (``pt`` + the MAC's hex digits, 14 chars)."""
        return "pt" + self.mac.replace(":", "")


def cached_boot_files(disk: Path) -> tuple[Path, Path]:
    """Where the kernel and initrd for a disk boot of ``disk`` are cached (they may not exist yet)."""
    return disk.with_name(disk.name + ".vmlinuz"), disk.with_name(disk.name + ".initrd")


def extract_boot_files(iso: Path, disk: Path) -> bool:
    """Copy /boot/vmlinuz and /boot/initrd.gz from the appliance ISO beside the disk; False if absent."""
    xorriso = require_tool("xorriso", "xorriso")
    kernel, initrd = cached_boot_files(disk)
    proc = run(
        [xorriso, "-osirrox", "on", "-indev", str(iso),
         "-extract", "/boot/vmlinuz", str(kernel), "-extract", "/boot/initrd.gz", str(initrd)],
        check=False,
    )  # fmt: skip
    return proc.returncode == 0 and kernel.is_file() and initrd.is_file()


class Guest:
    """A running (or finished) QEMU guest started by :func:`start_guest`. A context manager: exit stops it."""

    def __init__(self, spec: GuestSpec, process: subprocess.Popen[bytes], argv: list[str]) -> None:
        """Wrap the QEMU process; use :func:`start_guest` rather than this."""
        self.spec = spec
        self.process = process
        self.argv = argv
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int:
        """QEMU's pid (also its process group id)."""
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """QEMU's exit status once it ended (0 after a guest power-off), else None."""
        return self.process.poll()

    def is_running(self) -> bool:
        """True while QEMU runs."""
        return self.process.poll() is None

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s for QEMU to end (guest power-off/reboot).

        Returns QEMU's exit status, or None if it is still running.
        """
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def console(self) -> str:
        """The serial console output so far."""
        try:
            return self.spec.console_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_console(self, pattern: str, timeout: float, poll_s: float = 0.5) -> re.Match[str]:
        """Wait until regex ``pattern`` appears on the console; raise :class:`LabError` on timeout or QEMU exit."""
        rx = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.console())
            if m:
                return m
            if not self.is_running():
                raise LabError(
                    f"guest {self.spec.name} ended (status {self.returncode}) before {pattern!r} appeared;"
                    f" console:\n{self.console()[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise LabError(
                    f"guest {self.spec.name}: {pattern!r} not seen within {timeout} s;"
                    f" console:\n{self.console()[-3000:]}"
                )
            time.sleep(poll_s)

    def stop(self) -> None:
        """Kill QEMU (its process group) if it runs, and remove the tap; idempotent."""
        kill_group(self.process)
        free_tap(self.spec)

    def __enter__(self) -> Guest:
        """Return the guest."""
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the guest."""
        self.stop()


def qemu_argv(spec: GuestSpec) -> list[str]:
    """The QEMU command line for ``spec`` (without the ``ip netns exec`` prefix); checks the files exist."""
    if not _MAC_RE.match(spec.mac):
        raise LabError(f"bad MAC {spec.mac!r} (want lower-case aa:bb:cc:dd:ee:ff)")
    if len(spec.cdroms) > 2:
        raise LabError("at most 2 CD drives (appliance ISO, seed)")
    extra = [p for p in (spec.storage_disk, spec.removable) if p is not None]
    for path in (spec.disk, *spec.cdroms, *extra):
        if not Path(path).is_file():
            raise LabError(f"guest {spec.name}: {path} does not exist")
    qemu = require_tool("qemu-system-x86_64", "qemu-system-x86")
    argv = [
        qemu, "-name", spec.name, "-machine", "pc,accel=tcg", "-m", str(spec.memory_mb), "-smp", "1",
        "-nodefaults", "-display", "none", "-no-reboot", "-monitor", "none",
        "-serial", f"file:{spec.console_path}",
        # cache=unsafe: a killed guest may lose writes, but the appliance syncs
        # before powering off and TCG I/O is slow enough as it is.
        "-drive", f"file={spec.disk},format=raw,if=ide,index=0,cache=unsafe",
        "-netdev", f"tap,id=n0,ifname={spec.tap},script=no,downscript=no",
        "-device", f"e1000,netdev=n0,mac={spec.mac}",
        "-fw_cfg", f"name=opt/pplab/install_delay,string={int(spec.install_delay_s)}",
    ]  # fmt: skip
    if spec.storage_disk is not None:
        # IDE primary slave: the guest's /dev/sdb, as a vSphere VM's second SCSI disk is.
        argv += ["-drive", f"file={spec.storage_disk},format=raw,if=ide,index=1,cache=unsafe"]
    if spec.removable is not None:
        argv += ["-drive", f"file={spec.removable},format=raw,if=virtio,readonly=on"]
    # IDE secondary master/slave: the guest's /dev/sr0 (CD 1) and /dev/sr1 (CD 2).
    for i, iso in enumerate(spec.cdroms):
        argv += ["-drive", f"file={iso},media=cdrom,if=ide,index={2 + i},readonly=on"]
    if spec.cdroms:
        argv += ["-boot", "order=d"]
    else:
        cached_kernel, cached_initrd = cached_boot_files(spec.disk)
        kernel, initrd = spec.kernel or cached_kernel, spec.initrd or cached_initrd
        if not (kernel.is_file() and initrd.is_file()):
            raise LabError(
                f"guest {spec.name}: no kernel/initrd for a disk boot ({kernel}, {initrd});"
                " boot the disk from the appliance ISO first, or set GuestSpec.kernel/initrd"
            )
        argv += ["-kernel", str(kernel), "-initrd", str(initrd), "-append", DISK_BOOT_APPEND]
    return argv


def start_guest(spec: GuestSpec) -> Guest:
    """Start QEMU for ``spec`` inside the ``pplab`` namespace, detached in its own process group.

    Creates the lab LAN if needed and the guest's tap on ``br0``. With CDs, the
    kernel and initrd of CD 1 are cached beside the disk for later disk boots.
    """
    argv = qemu_argv(spec)
    if spec.cdroms:
        extract_boot_files(spec.cdroms[0], spec.disk)
    net.ensure_lan()
    n = ["ip", "-n", net.LAN_NAMESPACE]
    if link_exists(spec.tap, net.LAN_NAMESPACE):
        # Left over from a guest that was not stopped (a persistent tap outlives QEMU).
        run([*n, "link", "del", spec.tap])
    run([*n, "tuntap", "add", "dev", spec.tap, "mode", "tap"])
    run([*n, "link", "set", spec.tap, "master", net.BRIDGE, "up"])
    console = spec.console_path
    console.parent.mkdir(parents=True, exist_ok=True)
    console.write_text("")
    qemu_log = console.with_name(console.name + ".qemu")
    with qemu_log.open("wb") as err:
        process = subprocess.Popen(
            ns_argv(net.LAN_NAMESPACE, argv),
            stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    guest = Guest(spec, process, argv)
    # QEMU fails fast on a bad option or a busy tap: report it here, not later.
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(0.5)
    if process.returncode is not None and process.returncode != 0:
        guest.stop()
        raise LabError(f"QEMU for {spec.name} exited at once ({process.returncode}): {qemu_log.read_text()[-2000:]}")
    return guest


def free_tap(spec: GuestSpec) -> None:
    """Remove a guest's tap if it exists (after a crash); :meth:`Guest.stop` does it normally."""
    if net.lan_exists() and link_exists(spec.tap, net.LAN_NAMESPACE):
        run(["ip", "-n", net.LAN_NAMESPACE, "link", "del", spec.tap], check=False)
