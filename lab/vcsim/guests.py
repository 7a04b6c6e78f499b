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
    """:class:`GuestRunner` on ``pplab`` (``lab/pplab``): guests on the lab LAN bridge, static addresses from seeds."""

    def __init__(self, memory_mb: int = 512, install_delay_s: int | None = None) -> None:
        self.memory_mb = memory_mb
        self.install_delay_s = install_delay_s

    def prepare(self) -> None:
        import pplab.net  # imported late: the watcher's logic is testable without pplab

        pplab.net.ensure_lan()

    def create_disk(self, path: Path, size_bytes: int) -> None:
        import pplab.qemu

        pplab.qemu.create_disk(path, size_bytes)

    def start(self, request: BootRequest) -> GuestHandle:
        import pplab.qemu

        extra: dict[str, Any] = {}
        if self.install_delay_s is not None:
            extra["install_delay_s"] = self.install_delay_s
        spec = pplab.qemu.GuestSpec(
            name=request.name,
            disk=request.disk,
            mac=request.mac,
            cdroms=list(request.cdroms),
            memory_mb=self.memory_mb,
            console_log=request.console_log,
            **extra,
        )
        guest: GuestHandle = pplab.qemu.start_guest(spec)
        return guest
