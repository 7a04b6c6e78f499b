"""The Redfish lab's machines: sushy-tools' change notifications turned into QEMU guests (pplab).

The emulator's fake driver only keeps records. With ``external_notifier`` on a system and
``EXTERNAL_NOTIFICATION_URL`` pointing here, it PUTs the whole system record (``power_state``, ``pending_power``,
``boot_device``, ``boot_image: {"Cd": [path, write_protected, inserted], "Floppy": [...]}``) on every change. The
:class:`NotificationListener` (an HTTP server on 127.0.0.1, started *before* the emulator: the emulator sends inside
the client's request, with no timeout, and a refused connection fails that request with HTTP 500) queues each record
for one worker thread, which per system:

* **power Off -> On**: boots a guest. From CD when the boot override is ``Cd`` and the Cd slot holds an image (the
  emulator's downloaded file, CD 1); otherwise from disk when the disk holds an install (a real machine falls
  through an empty CD drive to the disk); otherwise nothing runs (a blank disk: the machine would sit in its
  firmware). The ``Floppy`` (removable) slot's image, ISO or FAT, is attached either way as a read-only virtio
  disk, the guest's /dev/vda (see :func:`start_machine`);
* **power On -> Off**: kills the guest;
* **a pending power change** (``pending_power.apply_time``): reads the system when it is due, since the fake driver
  applies a change only when the system is next read;
* **the guest powered itself off** (end of install, QEMU exits with ``-no-reboot``): a ``ForceOff`` reset through
  the emulator's API, so clients see the system Off as on real hardware.

Everything it does is recorded as :class:`BmcEvent` s (:meth:`NotificationListener.events`) for tests.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import logging
import queue
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pplab._cmd import LabError
from pplab.disk import read_install_state
from pplab.qemu import Guest, GuestSpec, cached_boot_files, start_guest

__all__ = ["BmcEvent", "EmulatorApi", "NotificationListener", "SystemNode", "start_machine"]

log = logging.getLogger("bmclab.notify")

_DUE_MARGIN_S = 0.05
"""Read a system this long after its ``apply_time`` (a whole second from ``int(time.time())``)."""
_RETRY_S = 0.5


@dataclass(frozen=True)
class SystemNode:
    """One emulated system as the listener knows it."""

    uuid: str
    """The system's id in the emulator (``/redfish/v1/Systems/<uuid>``)."""
    name: str
    mac: str
    """The guest NIC's MAC (lab LAN tap); unique among running guests."""
    disk: Path
    """The machine's raw install disk (the guest's /dev/sda)."""
    dir: Path
    """Where console logs and per-boot copies of the removable image go."""
    initial_power: str = "Off"


@dataclass(frozen=True)
class BmcEvent:
    """One thing the listener saw or did for a system.

    ``kind`` is one of: ``power`` (the emulator's power state changed: ``power``), ``boot`` (a guest started:
    ``boot`` is ``cd`` or ``disk``, ``cd``/``removable`` the emulator's image files, ``console`` its log),
    ``boot_skipped`` / ``boot_failed`` (``reason``), ``guest_exited`` (the guest ended by itself: ``status``),
    ``guest_stopped`` (killed: ``reason``), ``forced_off`` (the ForceOff sent after a guest ended by itself),
    ``error`` (``reason``).
    """

    system: str
    kind: str
    at: float
    """``time.time()`` when it was recorded."""
    power: str = ""
    boot: str = ""
    cd: str = ""
    removable: str = ""
    console: str = ""
    status: int | None = None
    reason: str = ""


class EmulatorApi:
    """The few Redfish calls the listener makes to the emulator (stdlib HTTP, basic auth)."""

    def __init__(self, base_url: str, username: str, password: str, cafile: Path | None = None) -> None:
        """``base_url`` like ``https://127.0.0.1:8443``; ``cafile`` the emulator's certificate for HTTPS."""
        if not base_url.startswith(("https://", "http://")):
            raise LabError(f"not an http(s) URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}", "Accept": "application/json"}
        self._context = ssl.create_default_context(cafile=str(cafile)) if cafile else None

    def request(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 30) -> bytes:
        """Send one request; raise :class:`LabError` on an HTTP error or no connection."""
        data = json.dumps(body).encode() if body is not None else None
        headers = dict(self._headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        # The scheme is checked in __init__.
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self._context) as resp:  # noqa: S310
                return bytes(resp.read())
        except urllib.error.HTTPError as exc:
            raise LabError(f"{method} {path}: HTTP {exc.code}: {exc.read()[:500]!r}") from exc
        except OSError as exc:
            raise LabError(f"{method} {path}: {exc}") from exc

    def get_system(self, uuid: str) -> dict[str, Any]:
        """GET the system (which also makes the fake driver apply a due power change)."""
        doc = json.loads(self.request("GET", f"/redfish/v1/Systems/{uuid}"))
        return dict(doc)

    def reset(self, uuid: str, reset_type: str) -> None:
        """POST ``ComputerSystem.Reset`` with ``reset_type`` (``On``, ``ForceOff``...)."""
        self.request("POST", f"/redfish/v1/Systems/{uuid}/Actions/ComputerSystem.Reset", {"ResetType": reset_type})


@dataclass
class _Machine:
    node: SystemNode
    power: str
    guest: Guest | None = None
    due: float | None = None
    force_off_due: float | None = None
    """When to send again a ForceOff that failed (the guest ended; the emulator did not take the ForceOff)."""
    boots: int = 0


@dataclass
class _Config:
    install_delay_s: int
    memory_mb: int
    starter: Callable[[GuestSpec, Path | None], Guest]


class NotificationListener:
    """HTTP listener for the emulator's notifications plus the worker that runs the machines; see the module doc.

    ``start()`` before the emulator starts; ``set_emulator()`` once its URL and credentials are known (before any
    client request); ``stop()`` stops the worker, every guest and the server.
    """

    def __init__(
        self,
        nodes: Sequence[SystemNode],
        *,
        install_delay_s: int = 3,
        memory_mb: int = 384,
        starter: Callable[[GuestSpec, Path | None], Guest] | None = None,
    ) -> None:
        """Describe the machines; nothing runs until :meth:`start`. ``starter``: :func:`start_machine` (tests)."""
        self._machines = {n.uuid: _Machine(n, n.initial_power) for n in nodes}
        self._config = _Config(install_delay_s, memory_mb, starter or start_machine)
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self._events: list[BmcEvent] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._api: EmulatorApi | None = None
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """The ``EXTERNAL_NOTIFICATION_URL`` for the emulator (after :meth:`start`)."""
        if self._server is None:
            raise LabError("NotificationListener.url before start()")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/notify"

    def start(self) -> NotificationListener:
        """Start the HTTP server and the worker thread."""
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    record = json.loads(self.rfile.read(length))
                    if not isinstance(record, dict):
                        raise ValueError("not a JSON object")
                except ValueError as exc:
                    self.send_error(400, str(exc))
                    return
                # Only queue: the emulator is waiting inside a client's request for this answer.
                listener._queue.put(record)
                self.send_response(204)
                self.end_headers()

            do_POST = do_PUT

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("notify_http %s", format % args)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._threads = [
            threading.Thread(target=self._server.serve_forever, name="bmclab-notify-http", daemon=True),
            threading.Thread(target=self._work, name="bmclab-notify-worker", daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self

    def set_emulator(self, api: EmulatorApi) -> None:
        """Where the emulator is, for due reads and ForceOff."""
        self._api = api

    def stop(self) -> None:
        """Stop the worker (then every guest) and the HTTP server; idempotent."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for t in self._threads:
            t.join(30)
        self._threads = []
        self._server = None
        for m in self._machines.values():
            self._stop_guest(m, "lab_stopped")

    # ------------------------------------------------------------------------------------------------ records

    def events(self, system: str | None = None, kind: str | None = None) -> list[BmcEvent]:
        """What happened so far (oldest first), optionally only for one system and/or one kind."""
        with self._cond:
            return [e for e in self._events if (system is None or e.system == system) and kind in (None, e.kind)]

    def wait_for_event(
        self,
        system: str,
        kind: str,
        *,
        after: int = 0,
        timeout: float = 60,
        where: Callable[[BmcEvent], bool] | None = None,
    ) -> BmcEvent:
        """The first event of ``kind`` for ``system`` among :meth:`events` ``[after:]`` (waiting up to ``timeout``).

        ``after`` is a count of *all* events, e.g. ``len(listener.events())`` taken before an action.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for e in self._events[after:]:
                    if e.system == system and e.kind == kind and (where is None or where(e)):
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [f"{e.kind}:{e.power or e.boot or e.reason}" for e in self._events if e.system == system]
                    raise LabError(f"no {kind} event for system {system} within {timeout} s; seen: {seen}")
                self._cond.wait(min(left, 1.0))

    def guest(self, system: str) -> Guest | None:
        """The guest currently run for ``system`` (None when none runs: ended, stopped or never booted)."""
        return self._machines[system].guest

    def _record(self, machine: _Machine, kind: str, **fields: Any) -> BmcEvent:
        event = BmcEvent(system=machine.node.uuid, kind=kind, at=time.time(), **fields)
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()
        log.info("bmc_event system=%s %s", machine.node.name, event)
        return event

    # ------------------------------------------------------------------------------------------------ worker

    def _work(self) -> None:
        while not self._stop.is_set():
            # Every queued record first, then the timers: a guest found ended is then judged against the latest
            # power state, so a power cycle already notified (old guest killed, a new one booted) is never taken
            # for "the guest powered itself off" and answered with a ForceOff of the new power-on.
            with contextlib.suppress(queue.Empty):
                self._guarded(self._on_record, self._queue.get(timeout=0.1))
                while True:
                    self._guarded(self._on_record, self._queue.get_nowait())
            self._guarded(self._tick)

    def _guarded(self, step: Callable[..., None], *args: Any) -> None:
        try:
            step(*args)
        except Exception as exc:  # one bad record must not stop the lab
            log.exception("notify_worker_error")
            with self._cond:
                self._events.append(BmcEvent(system="", kind="error", at=time.time(), reason=repr(exc)))
                self._cond.notify_all()

    def _on_record(self, record: dict[str, Any]) -> None:
        machine = self._machines.get(str(record.get("uuid")))
        if machine is None:
            log.warning("notify_unknown_system uuid=%s", record.get("uuid"))
            return
        # Records arrive in write order only because bmclab.redfish serialises the emulator's requests; the stock
        # emulator sends each from its own request thread, and an older record could then undo a newer one here.
        pending = record.get("pending_power")
        machine.due = float(pending["apply_time"]) + _DUE_MARGIN_S if isinstance(pending, dict) else None
        power = str(record.get("power_state", ""))
        if power == machine.power:
            return
        machine.power = power
        self._record(machine, "power", power=power)
        if power == "On":
            self._boot(machine, record)
        else:
            self._stop_guest(machine, "powered_off")

    def _tick(self) -> None:
        now = time.time()
        for machine in self._machines.values():
            guest = machine.guest
            if guest is not None and not guest.is_running():
                machine.guest = None
                guest.stop()  # frees the tap
                self._record(machine, "guest_exited", status=guest.returncode, console=str(guest.spec.console_path))
                if machine.power == "On":
                    self._force_off(machine)
            if machine.force_off_due is not None and now >= machine.force_off_due:
                machine.force_off_due = None
                if machine.power == "On" and machine.guest is None:
                    self._force_off(machine)
            if machine.due is not None and now >= machine.due:
                machine.due = None
                self._read(machine)

    def _read(self, machine: _Machine) -> None:
        """Read the system so that the fake driver applies its due change (its notification comes back here)."""
        if self._api is None:
            machine.due = time.time() + _RETRY_S
            return
        try:
            self._api.get_system(machine.node.uuid)
        except LabError as exc:
            log.warning("due_read_failed system=%s error=%s", machine.node.name, exc)
            machine.due = time.time() + _RETRY_S

    def _force_off(self, machine: _Machine) -> None:
        if self._api is None:
            self._record(machine, "error", reason="guest ended but the emulator's address is not known")
            return
        try:
            self._api.reset(machine.node.uuid, "ForceOff")
        except LabError as exc:
            # Sent again until taken: a machine whose guest ended must not read On for ever (seen when a client on
            # a lossy link held the emulator past this request's timeout).
            self._record(machine, "error", reason=f"ForceOff after the guest ended: {exc}")
            machine.force_off_due = time.time() + _RETRY_S
            return
        self._record(machine, "forced_off")

    # ------------------------------------------------------------------------------------------------ guests

    def _boot(self, machine: _Machine, record: dict[str, Any]) -> None:
        node = machine.node
        images = record.get("boot_image") or {}
        cd = _inserted(images.get("Cd"))
        removable = _inserted(images.get("Floppy"))
        target = str(record.get("boot_device") or "Hdd")
        installed = all(p.is_file() for p in cached_boot_files(node.disk)) and read_install_state(node.disk) is not None
        if target == "Cd" and cd is not None:
            mode = "cd"
        elif installed:
            mode = "disk"
        else:
            reason = f"boot override {target}, Cd {'inserted' if cd else 'empty'}, disk {node.disk.name} blank"
            self._record(machine, "boot_skipped", reason=reason, cd=str(cd or ""), removable=str(removable or ""))
            return
        console = node.dir / f"console-{machine.boots + 1}-{mode}.log"
        spec = GuestSpec(
            name=f"rf-{node.name}", disk=node.disk, mac=node.mac, cdroms=[cd] if mode == "cd" and cd else [],
            install_delay_s=self._config.install_delay_s, memory_mb=self._config.memory_mb, console_log=console,
        )  # fmt: skip
        try:
            machine.guest = self._config.starter(spec, removable)
        except LabError as exc:
            self._record(machine, "boot_failed", boot=mode, reason=str(exc))
            return
        machine.boots += 1
        self._record(
            machine, "boot", boot=mode, cd=str(cd) if mode == "cd" else "", removable=str(removable or ""),
            console=str(console),
        )  # fmt: skip

    def _stop_guest(self, machine: _Machine, reason: str) -> None:
        guest, machine.guest = machine.guest, None
        if guest is None:
            return
        running = guest.is_running()
        try:
            guest.stop()
        except LabError as exc:
            self._record(machine, "error", reason=f"stopping the guest: {exc}")
        if running:
            self._record(machine, "guest_stopped", reason=reason, console=str(guest.spec.console_path))
        else:
            self._record(machine, "guest_exited", status=guest.returncode, console=str(guest.spec.console_path))


def _inserted(slot: Any) -> Path | None:
    """The image file of a ``boot_image`` slot ``[path, write_protected, inserted]`` when inserted and present."""
    if not isinstance(slot, list | tuple) or len(slot) < 3 or not slot[0] or not slot[2]:
        return None
    path = Path(str(slot[0]))
    with contextlib.suppress(OSError):
        if path.is_file():
            return path
    return None


def start_machine(spec: GuestSpec, removable: Path | None = None) -> Guest:
    """:func:`pplab.qemu.start_guest`, with the removable-media image as a read-only virtio disk (/dev/vda).

    Not an IDE disk beside the install disk: the kernel probes the disks of one IDE channel asynchronously, so
    which one becomes /dev/sda varies from boot to boot (seen: the seed image as sda, the install written onto it).
    A virtio disk is named vda, whatever the order.
    """
    if removable is not None:
        spec = dataclasses.replace(spec, removable=removable)
    return start_guest(spec)
