"""The ``chassis_control`` program of a lab IPMI BMC: the node's power and boot device, backed by a QEMU guest.

ipmi_sim (OpenIPMI) runs it through ``popen`` (``sh -c``) and waits for it, one call at a time::

    python -m bmclab.chassis <node-state-dir> get power boot      # prints "power:0|1" and "boot:<name>"
    python -m bmclab.chassis <node-state-dir> set boot cdrom      # none|pxe|default|cdrom|bios
    python -m bmclab.chassis <node-state-dir> set power 1         # 0|1; also reset 1, shutdown 1, identify "15 0"

A non-zero exit makes ipmi_sim answer the client with an error completion code (0xFF, "Unspecified"). Tests make
the next calls fail that way on purpose through ``faults.json`` (:func:`inject_faults`): a BMC whose firmware answers
0xFF for a while, as real ones do while busy.

The node state dir holds ``node.json`` (:class:`NodeConfig`, written by the lab: the machine and the media the
operator inserted) and ``chassis.json`` (:class:`ChassisState`: boot device, counters, the QEMU guest's pid, and a
small log of every ``set`` so tests can assert what reached the chassis). Every call holds ``chassis.lock``.

Power on boots the guest through :mod:`pplab.qemu` with the ISO (and seed) attached **only when the stored boot
device is** ``cdrom``: SeaBIOS falls back to a CD even when told to boot the disk, so a disk boot must have no CD.
Every other device (``default``, ``none``, ``pxe``, ``bios``) boots the disk (pplab's direct kernel boot of the
kernel/initrd it cached beside the disk on the CD boot): the lab has no PXE server and no firmware setup screen.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pplab._cmd import LabError
from pplab.qemu import GuestSpec, free_tap, start_guest

__all__ = [
    "BOOT_DEVICES",
    "ChassisState",
    "NodeConfig",
    "faults_left",
    "guest_running",
    "inject_faults",
    "load_state",
    "main",
    "power_off",
    "write_node_config",
]

BOOT_DEVICES = ("none", "pxe", "default", "cdrom", "bios")
"""The names ipmi_sim uses for boot devices (its ``boot_map``). pyghmi's ``hd`` arrives as ``default``, pyghmi's
``default`` as ``none``, ``network`` as ``pxe``, ``optical``/``cdrom`` as ``cdrom``, ``setup`` as ``bios``."""
NODE_FILE = "node.json"
STATE_FILE = "chassis.json"
LOCK_FILE = "chassis.lock"
FAULTS_FILE = "faults.json"
MAX_EVENTS = 500
_KILL_GRACE_S = 5.0


@dataclass(kw_only=True)
class NodeConfig:
    """The machine behind one BMC (``node.json``), written by the lab; paths are absolute."""

    name: str
    """Guest name (QEMU ``-name``, console log names)."""
    mac: str
    """MAC of the guest's NIC; names its tap, so unique among running guests."""
    disk: Path
    """Install disk image (the guest's /dev/sda)."""
    storage_disk: Path | None = None
    """Optional second disk (/dev/sdb)."""
    memory_mb: int = 384
    install_delay_s: int = 3
    console_dir: Path | None = None
    """Where each boot's serial console log goes (``<name>-boot<N>-<cd|disk>.log``); default the state dir."""
    iso: Path | None = None
    """The ISO the operator inserted (CD 1), or None."""
    seed: Path | None = None
    """The seed ISO (CD 2, label ``cidata``), or None."""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (paths as strings)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NodeConfig:
        """The inverse of :meth:`to_json`."""
        paths = ("disk", "storage_disk", "console_dir", "iso", "seed")
        values: dict[str, Any] = {k: (Path(v) if k in paths and v is not None else v) for k, v in data.items()}
        return cls(**values)


@dataclass
class ChassisState:
    """``chassis.json``: what the chassis remembers between calls."""

    boot: str = "default"
    """Boot device as ipmi_sim names it. ipmi_sim does not tell this program whether the client asked for a
    one-time or a persistent boot device (both arrive as ``set boot <dev>``), so it is kept until changed, i.e.
    always persistent."""
    power_on_count: int = 0
    """Power-ons from off (a reset reboots without counting here)."""
    boots: int = 0
    """Guest boots (power-ons and resets)."""
    pid: int | None = None
    """QEMU's pid (also its process group) while it may run."""
    pid_start: int | None = None
    """QEMU's start time (``/proc/<pid>/stat`` field 22), so a reused pid is never taken for the guest."""
    boot_mode: str | None = None
    """``cd`` or ``disk``: how the current (or last) boot went."""
    cdroms: list[str] = field(default_factory=list)
    """The ISOs attached to the current (or last) boot."""
    console_log: str | None = None
    """Serial console log of the current (or last) boot."""
    identify: str | None = None
    """The last ``identify`` request (``"<interval> <force>"``)."""
    events: list[dict[str, Any]] = field(default_factory=list)
    """``{"time": <unix time>, "what": "set boot cdrom"}``, oldest first, at most :data:`MAX_EVENTS`."""

    def log(self, what: str) -> None:
        """Append an event."""
        self.events.append({"time": round(time.time(), 3), "what": what})
        del self.events[:-MAX_EVENTS]


def write_node_config(state_dir: Path, config: NodeConfig) -> None:
    """Write ``node.json`` (atomically) into a node state dir, creating the dir."""
    state_dir.mkdir(parents=True, exist_ok=True)
    _write_json(state_dir / NODE_FILE, config.to_json())


def load_node_config(state_dir: Path) -> NodeConfig:
    """Read ``node.json``."""
    try:
        data = json.loads((state_dir / NODE_FILE).read_text())
    except FileNotFoundError as exc:
        raise LabError(f"{state_dir}: no {NODE_FILE} (the lab writes it before starting ipmi_sim)") from exc
    return NodeConfig.from_json(data)


def load_state(state_dir: Path) -> ChassisState:
    """Read ``chassis.json`` (a fresh state if there is none yet)."""
    try:
        data = json.loads((state_dir / STATE_FILE).read_text())
    except FileNotFoundError:
        return ChassisState()
    return ChassisState(**data)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    # Atomic: readers (tests, IpmiBmc.chassis_state) never see half a file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def _save_state(state_dir: Path, state: ChassisState) -> None:
    _write_json(state_dir / STATE_FILE, asdict(state))


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    with (state_dir / LOCK_FILE).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time) of a process, or None if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[19])


def _alive(pid: int | None, start: int | None) -> bool:
    if pid is None:
        return False
    stat = _proc_stat(pid)
    # A zombie is a dead guest: without a subreaper above it (the program run by hand, not under bmclab.reaper), an
    # orphaned QEMU that powered itself off stays a zombie, since PID 1 here reaps no orphans.
    return stat is not None and stat[0] not in ("Z", "X") and (start is None or stat[1] == start)


def _spec(config: NodeConfig, cdroms: Sequence[Path] = (), console: Path | None = None) -> GuestSpec:
    return GuestSpec(
        name=config.name, disk=config.disk, mac=config.mac, cdroms=list(cdroms), storage_disk=config.storage_disk,
        memory_mb=config.memory_mb, install_delay_s=config.install_delay_s, console_log=console,
    )  # fmt: skip


def _reconcile(state_dir: Path, state: ChassisState, config: NodeConfig) -> None:
    """Notice a guest that ended by itself (the installer's power-off): forget it and free its tap."""
    if state.pid is not None and not _alive(state.pid, state.pid_start):
        state.log("guest powered itself off")
        state.pid = state.pid_start = None
        free_tap(_spec(config))


def _kill_guest(state: ChassisState, config: NodeConfig) -> None:
    pid, start = state.pid, state.pid_start
    if pid is not None and _alive(pid, start):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
            deadline = time.monotonic() + _KILL_GRACE_S
            while _alive(pid, start) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not _alive(pid, start):
                break
        if _alive(pid, start):
            raise LabError(f"guest {config.name} (pid {pid}) survived SIGKILL")
    state.pid = state.pid_start = None
    free_tap(_spec(config))


def _boot(state_dir: Path, state: ChassisState, config: NodeConfig) -> None:
    """Start the guest (detached: QEMU runs in its own session, stdio on files, after this program exits)."""
    cdroms = [config.iso, *([config.seed] if config.seed else [])] if config.iso else []
    cd = state.boot == "cdrom" and bool(cdroms)
    console_dir = config.console_dir or state_dir
    console = console_dir / f"{config.name}-boot{state.boots + 1}-{'cd' if cd else 'disk'}.log"
    # Raises LabError for a disk boot of a disk that never booted the ISO (no cached kernel/initrd): the client
    # sees an error completion code, where a real machine would sit at "no bootable device".
    guest = start_guest(_spec(config, cdroms if cd else [], console))
    stat = _proc_stat(guest.pid)
    state.pid, state.pid_start = guest.pid, (stat[1] if stat else None)
    state.boots += 1
    state.boot_mode = "cd" if cd else "disk"
    state.cdroms = [str(c) for c in cdroms] if cd else []
    state.console_log = str(console)
    state.log(f"guest started: {state.boot_mode} boot #{state.boots} pid {guest.pid}")


def _set_power(state_dir: Path, state: ChassisState, config: NodeConfig, on: bool) -> None:
    running = state.pid is not None
    if on and not running:
        state.power_on_count += 1
        _boot(state_dir, state, config)
    elif not on and running:
        _kill_guest(state, config)
        state.log("guest stopped")
    else:
        state.log(f"already {'on' if on else 'off'}: nothing to do")


def _set(state_dir: Path, state: ChassisState, config: NodeConfig, pairs: dict[str, str]) -> None:
    # Boot device first: a request carrying both should boot the new device.
    if "boot" in pairs:
        dev = pairs["boot"]
        if dev not in BOOT_DEVICES:
            raise LabError(f"unknown boot device {dev!r} (ipmi_sim names: {', '.join(BOOT_DEVICES)})")
        state.boot = dev
        state.log(f"set boot {dev}")
    if "identify" in pairs:
        # "<interval s> <force>": recorded only, the lab has no chassis light.
        state.identify = pairs["identify"]
        state.log(f"set identify {pairs['identify']}")
    if "power" in pairs:
        value = pairs["power"]
        if value not in ("0", "1"):
            raise LabError(f"power must be 0 or 1, not {value!r}")
        state.log(f"set power {value}")
        _set_power(state_dir, state, config, value == "1")
    if "reset" in pairs:
        state.log("set reset")
        if state.pid is not None:  # a hard reset of a machine that is off does nothing
            _kill_guest(state, config)
            _boot(state_dir, state, config)
    if "shutdown" in pairs:
        # A soft (ACPI) shutdown: QEMU runs without a monitor and the test appliance has no ACPI daemon, so the
        # lab powers the guest off, which is where a graceful shutdown ends anyway.
        state.log("set shutdown")
        _set_power(state_dir, state, config, False)


def _get(state: ChassisState, names: Sequence[str]) -> str:
    # Answer every name asked, one "name:value" line each: ipmi_sim's parser (extcmd.c, read, not seen failing)
    # walks the lines with strchr(buf, '\n') + 1 and runs off the end looking for a name that is missing.
    values = {"power": "1" if state.pid is not None else "0", "boot": state.boot}
    return "".join(f"{name}:{values.get(name, '0')}\n" for name in names)


def inject_faults(state_dir: Path, *, gets: int) -> None:
    """Make the next ``gets`` ``get`` calls fail (exit 1): ipmi_sim then answers 0xFF to the client."""
    with _locked(state_dir):
        _write_json(state_dir / FAULTS_FILE, {"gets": gets})


def faults_left(state_dir: Path) -> int:
    """How many of the injected ``get`` failures are still to come."""
    try:
        return int(json.loads((state_dir / FAULTS_FILE).read_text()).get("gets", 0))
    except FileNotFoundError:
        return 0


def _take_fault(state_dir: Path) -> bool:
    """True (and one fewer left) when an injected ``get`` failure is pending; called under the lock."""
    left = faults_left(state_dir)
    if left > 0:
        _write_json(state_dir / FAULTS_FILE, {"gets": left - 1})
    return left > 0


def guest_running(state_dir: Path) -> bool:
    """True while the node's QEMU guest runs (what ``get power`` answers)."""
    state = load_state(state_dir)
    return _alive(state.pid, state.pid_start)


def power_off(state_dir: Path, reason: str = "lab stop") -> None:
    """Power the node off from the lab side (not through IPMI), e.g. when its BMC stops; logs ``reason``."""
    with _locked(state_dir):
        state = load_state(state_dir)
        if state.pid is not None:
            _kill_guest(state, load_node_config(state_dir))
            state.log(f"guest stopped ({reason})")
            _save_state(state_dir, state)


def run(state_dir: Path, args: Sequence[str]) -> str:
    """Handle one call (``get NAME...`` or ``set NAME VALUE...``); returns what to print."""
    if not args or args[0] not in ("get", "set"):
        raise ValueError("want get NAME... or set NAME VALUE...")
    verb, rest = args[0], list(args[1:])
    pairs: dict[str, str] = {}
    if verb == "set":
        if len(rest) % 2:
            raise ValueError(f"set wants NAME VALUE pairs, got {rest}")
        pairs = dict(zip(rest[::2], rest[1::2], strict=True))
        unknown = set(pairs) - {"power", "reset", "boot", "shutdown", "identify"}
        if unknown:
            raise ValueError(f"unknown names {sorted(unknown)}")
    with _locked(state_dir):
        if verb == "get" and _take_fault(state_dir):
            raise LabError("get: failing on purpose (faults.json)")
        config = load_node_config(state_dir)
        state = load_state(state_dir)
        before = json.dumps(asdict(state))
        try:
            _reconcile(state_dir, state, config)
            if verb == "get":
                return _get(state, rest)
            _set(state_dir, state, config, pairs)
            return ""
        except LabError as exc:
            state.log(f"error: {exc}"[:500])
            raise
        finally:
            if json.dumps(asdict(state)) != before:
                _save_state(state_dir, state)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``python -m bmclab.chassis <node-state-dir> get|set ...``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        print("usage: python -m bmclab.chassis <node-state-dir> get NAME... | set NAME VALUE...", file=sys.stderr)
        return 2
    try:
        out = run(Path(args[0]), args[1:])
    except ValueError as exc:
        print(f"bmclab.chassis: {exc}", file=sys.stderr)
        return 2
    except LabError as exc:
        print(f"bmclab.chassis: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
