"""How the watcher runs a VM's guest: a small protocol, and its implementation on the lab's QEMU runner ``pplab``.

The watcher only needs "boot these CDs / this disk with this MAC" and "is it still running / stop it"; keeping that
behind :class:`GuestRunner` lets the watcher's tests use a fake runner (no QEMU, no namespaces) and keeps every
assumption about ``pplab``'s API in this one file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = ["BootRequest", "GuestHandle", "GuestRunner", "PplabRunner"]


@dataclass(frozen=True)
class BootRequest:
    """One power-on of one VM, in the watcher's terms."""

    name: str
    """A short unique guest name derived from the VM's managed-object id (QEMU process and console names)."""
    mac: str
    disk: Path
    cdroms: tuple[Path, ...]
    """In the VM's device order: first the appliance ISO, then the seed. Empty: boot from the disk."""
    console_log: Path
    storage_disk: Path | None = None
    """The VM's second disk (the storage pool), when it has one."""


class GuestHandle(Protocol):
    """A running guest."""

    def is_running(self) -> bool:
        """False once the guest powered itself off (QEMU exited) or was stopped."""
        ...

    def stop(self) -> None:
        """Pull the plug (a vSphere power-off is not a graceful shutdown either). Idempotent."""
        ...


class GuestRunner(Protocol):
    """Starts guests for the watcher."""

    def prepare(self) -> None:
        """One-time setup before the first boot (the lab LAN)."""
        ...

    def create_disk(self, path: Path, size_bytes: int) -> None:
        """Create a sparse disk image at ``path`` (called once per VM)."""
        ...

    def start(self, request: BootRequest) -> GuestHandle:
        """Boot a guest; return at once (booting takes tens of seconds under TCG)."""
        ...


class PplabRunner:
    """:class:`GuestRunner` on ``pplab`` (``lab/pplab``): guests on the lab LAN bridge, static addresses from seeds.

    ``memory_mb`` / ``install_delay_s`` left ``None`` take pplab's defaults (384 MiB, 3 s): the VM's own memory
    (16 GiB for a real appliance) is deliberately ignored, the test appliance needs little.
    """

    def __init__(self, memory_mb: int | None = None, install_delay_s: int | None = None) -> None:
        self.memory_mb = memory_mb
        self.install_delay_s = install_delay_s

    def prepare(self) -> None:
        import pplab.net  # imported late: the watcher's logic is testable without pplab (and without root)

        pplab.net.ensure_lan()

    def create_disk(self, path: Path, size_bytes: int) -> None:
        import pplab.disk

        pplab.disk.create_disk(path, size_bytes)  # sparse raw image

    def start(self, request: BootRequest) -> GuestHandle:
        import pplab.qemu

        options: dict[str, Any] = {}
        if self.memory_mb is not None:
            options["memory_mb"] = self.memory_mb
        if self.install_delay_s is not None:
            options["install_delay_s"] = self.install_delay_s
        spec = pplab.qemu.GuestSpec(
            name=request.name,
            disk=request.disk,
            mac=request.mac.lower(),  # pplab wants lower case; vSphere reports either
            cdroms=list(request.cdroms),
            console_log=request.console_log,
            storage_disk=request.storage_disk,
            **options,
        )
        # Boots from CD 1 when there are CDs (and caches its kernel/initrd beside the disk); otherwise a direct
        # kernel boot of that cache, as the test appliance installs no bootloader.
        return pplab.qemu.start_guest(spec)
