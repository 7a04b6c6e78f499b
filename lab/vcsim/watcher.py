"""The watcher: makes vcsim's VMs behave like real machines booting the appliance, by running them in QEMU.

vcsim only keeps records: powering a VM on runs nothing. The watcher polls vcsim (one PropertyCollector read every
``poll_interval``) and, per VM:

* **powered on** -> boot a guest (``pplab``) with the VM's CD ISOs (the files in the datastore directory, device
  order: appliance ISO first, seed second) and its NIC's MAC, on a sparse disk created once per VM in the watcher's
  state dir; with no CD attached, from that disk. The seed's ``stylus.site.network.interfaces.<first>.ipAddress`` is
  remembered per VM (later disk boots have no seed);
* **guest answers an SSH banner** on that address -> set ``guest.ipAddress``, ``guest.hostName`` and
  ``guest.toolsRunningStatus`` in vcsim (``ReconfigVM_Task`` with ``SET.*`` extraConfig), as VMware Tools would;
* **a DHCP seed** (no address in it): the guest's lease, printed on its console by the appliance's udhcpc hook
  (``network: eth0 dhcp lease <ip>/<prefix> ...``), is reported the same way as soon as it appears (VMware Tools
  reports an address once the guest OS has it); a later lease line with another address is reported again.
  ``<state-dir>/addresses.json`` lists what is reported per VM name (``{"vms": {name: {"ip", "source", "mac",
  "moref"}}}``, ``source`` ``seed`` or ``dhcp``), for the lab pieces that follow the guests (the Local API DNAT);
* **guest powers itself off** (the installer's power-off: QEMU exits) -> ``PowerOffVM_Task``, so the library sees
  what a real vCenter shows;
* **powered off in vcsim** -> stop the guest, clear the guest info;
* **destroyed** -> stop the guest, delete its disk (the console log is kept under ``destroyed/``).

One VM's error is logged and never stops the others. SIGTERM/SIGINT stop every guest and exit 0.

CLI (``PYTHONPATH=lab``; password from ``VCSIM_PASSWORD`` or ``--password-file``, never argv)::

    python -m vcsim.watcher --lab-state /tmp/pplab-vc/state.json --state-dir /tmp/pplab-vc/watcher
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from pyVmomi import vim

from vcsim.guests import BootRequest, GuestHandle, GuestRunner, PplabRunner
from vcsim.lab import PC, VcsimTaskError, connect_to, disconnect, wait_task
from vcsim.seed import is_seed_iso, read_seed

__all__ = ["Watcher", "WatcherConfig", "main"]

log = logging.getLogger("vcsim.watcher")

_VM_PROPS = ["name", "runtime.powerState", "summary.runtime.bootTime", "config.hardware.device", "config.instanceUuid"]
_DS_PATH = re.compile(r"^\[(?P<ds>[^\]]+)\]\s*(?P<path>.*)$")
_GIB = 1024**3
#: The appliance's udhcpc hook (lab/appliance/udhcpc.script) on the console, once per lease (bound or renewed).
_LEASE = re.compile(rb"network: \S+ dhcp lease (\d{1,3}(?:\.\d{1,3}){3})/\d+")
ADDRESSES_FILE = "addresses.json"
V: Any = vim  # pyVmomi's data-object constructors are unannotated


@dataclass
class WatcherConfig:
    """Where vcsim is and how the watcher behaves."""

    host: str
    port: int
    username: str
    password: str = field(repr=False)
    cafile: Path | None
    """vcsim's certificate (``VcsimHandle.cert_path``); ``None`` skips verification."""
    state_dir: Path
    """Disks, console logs and per-VM memory (``<state_dir>/<vm moref>/``)."""
    poll_interval: float = 0.5
    ssh_port: int = 22
    task_timeout: float = 60.0
    default_disk_bytes: int = 8 * _GIB
    """Disk size when the VM has no virtual disk (the VM's first disk's capacity otherwise; images are sparse)."""


@dataclass
class _Node:
    """The watcher's memory of one VM."""

    key: str
    name: str
    uuid: str
    dir: Path
    ip: str | None = None
    """The address to report: the seed's static one, or (``dhcp``) this boot's lease once the console shows it."""
    hostname: str | None = None
    dhcp: bool = False
    """The seed asked for DHCP: the address is learnt from the guest at every boot."""
    mac: str | None = None
    guest: GuestHandle | None = None
    booted: bool = False
    """A boot was attempted for the current power-on (so a failed boot is not retried every poll)."""
    boot_time: Any = None
    """vcsim's ``bootTime`` of that power-on: a new value reveals an off/on cycle that fell between two polls."""
    pending_poweroff: bool = False
    reported: bool = False
    reported_ip: str | None = None
    boots: int = 0
    address_up: threading.Event = field(default_factory=threading.Event)
    """The guest has its address: an SSH banner on the seed's static address, or a DHCP lease on the console."""
    stop_probe: threading.Event = field(default_factory=threading.Event)

    @property
    def disk(self) -> Path:
        return self.dir / "disk.img"

    @property
    def storage_disk(self) -> Path:
        return self.dir / "storage.img"

    def save(self) -> None:
        """Persist what a restarted watcher must remember: the address learnt from the seed (or that it is DHCP)."""
        data = {
            "uuid": self.uuid, "name": self.name, "ip": None if self.dhcp else self.ip, "hostname": self.hostname,
            "dhcp": self.dhcp,
        }  # fmt: skip
        (self.dir / "node.json").write_text(json.dumps(data) + "\n")


class Watcher:
    """Reconciles vcsim's VMs with QEMU guests. ``run()`` blocks until :meth:`stop`.

    Example::

        watcher = Watcher(WatcherConfig(...), PplabRunner(memory_mb=512))
        thread = watcher.run_in_thread()
        ...
        watcher.stop(); thread.join()
    """

    def __init__(self, config: WatcherConfig, runner: GuestRunner) -> None:
        self.config = config
        self.runner = runner
        self.nodes: dict[str, _Node] = {}
        self._stop = threading.Event()
        self._si: Any = None
        self._view: Any = None
        self._first_poll = True

    # ------------------------------------------------------------------------------------------------ lifecycle

    def run(self) -> None:
        """Poll until :meth:`stop`; then stop every guest. Connection errors are logged and retried."""
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        self.runner.prepare()
        log.info("watcher_started vcsim=%s:%s state_dir=%s", self.config.host, self.config.port, self.config.state_dir)
        try:
            while not self._stop.is_set():
                try:
                    self.poll_once()
                except Exception as exc:  # vcsim restarting, a dropped session: reconnect on the next round
                    log.warning("poll_failed error=%s: %s", type(exc).__name__, exc)
                    self._drop_connection()
                    self._stop.wait(2.0)
                    continue
                self._stop.wait(self.config.poll_interval)
        finally:
            self.shutdown()

    def run_in_thread(self) -> threading.Thread:
        """Start :meth:`run` in a daemon thread (tests); stop it with :meth:`stop` and join the thread."""
        thread = threading.Thread(target=self.run, name="vcsim-watcher", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """Ask :meth:`run` to return (safe from a signal handler or another thread)."""
        self._stop.set()

    def shutdown(self) -> None:
        """Stop every guest and log out. The VMs stay as they are in vcsim."""
        for node in self.nodes.values():
            self._stop_guest(node, why="watcher_stopping")
        self._drop_connection()
        log.info("watcher_stopped")

    # ------------------------------------------------------------------------------------------------ polling

    def _connection(self) -> Any:
        if self._si is None:
            c = self.config
            self._si = connect_to(c.host, c.port, c.username, c.password, c.cafile)
            content = self._si.content
            self._view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
        return self._si

    def _drop_connection(self) -> None:
        if self._si is not None:
            disconnect(self._si)
        self._si = self._view = None

    def _retrieve(self, obj_type: Any, path_set: list[str]) -> dict[str, tuple[Any, dict[str, Any]]]:
        """All objects of ``obj_type`` with ``path_set``: {moref: (object, {property: value})}."""
        si = self._connection()
        view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [obj_type], True)
        try:
            return self._retrieve_from(si, view, obj_type, path_set)
        finally:
            view.DestroyView()

    @staticmethod
    def _retrieve_from(si: Any, view: Any, obj_type: Any, path_set: list[str]) -> dict[str, tuple[Any, dict[str, Any]]]:
        spec = PC.FilterSpec(
            objectSet=[
                PC.ObjectSpec(
                    obj=view, skip=True, selectSet=[PC.TraversalSpec(type=vim.view.ContainerView, path="view")]
                )
            ],
            propSet=[PC.PropertySpec(type=obj_type, pathSet=path_set)],
        )
        pc = si.content.propertyCollector
        found: dict[str, tuple[Any, dict[str, Any]]] = {}
        result = pc.RetrievePropertiesEx([spec], PC.RetrieveOptions())
        while result is not None:
            for oc in result.objects:
                found[oc.obj._moId] = (oc.obj, {p.name: p.val for p in oc.propSet})
            result = pc.ContinueRetrievePropertiesEx(result.token) if result.token else None
        return found

    def poll_once(self) -> None:
        """One reconciliation round over every VM."""
        si = self._connection()
        vms = self._retrieve_from(si, self._view, vim.VirtualMachine, _VM_PROPS)
        if self._first_poll:
            self._forget_stale_state(set(vms))
            self._first_poll = False
        for key in [k for k in self.nodes if k not in vms]:
            self._on_destroyed(self.nodes.pop(key))
        for key, (vm, props) in vms.items():
            node = self._node(key, props)
            try:
                self._reconcile(node, vm, props)
            except Exception:
                log.exception("vm_reconcile_failed vm=%s moref=%s", node.name, key)

    def _node(self, key: str, props: dict[str, Any]) -> _Node:
        uuid = str(props.get("config.instanceUuid") or "")
        node = self.nodes.get(key)
        if node is not None and node.uuid == uuid:
            node.name = str(props.get("name", node.name))
            return node
        node = _Node(key=key, name=str(props.get("name", key)), uuid=uuid, dir=self.config.state_dir / key)
        node.dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError, ValueError):
            saved = json.loads((node.dir / "node.json").read_text())
            if saved.get("uuid") == uuid:
                node.ip, node.hostname = saved.get("ip"), saved.get("hostname")
                node.dhcp = bool(saved.get("dhcp"))
        self.nodes[key] = node
        return node

    def _forget_stale_state(self, live: set[str]) -> None:
        """Disks of VMs this vcsim does not know (a previous simulator's) would boot a stale install: remove them."""
        for child in self.config.state_dir.iterdir():
            if child.is_dir() and child.name.startswith("vm-") and child.name not in live:
                shutil.rmtree(child, ignore_errors=True)

    # ------------------------------------------------------------------------------------------------ per VM

    def _reconcile(self, node: _Node, vm: Any, props: dict[str, Any]) -> None:
        power = str(props.get("runtime.powerState"))
        if power != "poweredOn":
            if node.booted or node.guest is not None:
                self._stop_guest(node, why="vm_powered_off")
                node.booted = node.pending_poweroff = False
                self._set_guest_info(vm, node, running=False)
            return
        boot_time = props.get("summary.runtime.bootTime")
        if node.booted and boot_time != node.boot_time:
            self._stop_guest(node, why="vm_power_cycled")
            node.booted = node.pending_poweroff = False
        if not node.booted:
            node.booted, node.boot_time = True, boot_time
            self._boot(node, props)
        elif node.guest is not None and not node.guest.is_running():
            log.info("guest_powered_itself_off vm=%s boot=%s", node.name, node.boots)
            self._stop_guest(node, why="guest_exited")
            node.pending_poweroff = True
        if node.address_up.is_set() and node.ip and (not node.reported or node.reported_ip != node.ip):
            self._set_guest_info(vm, node, running=True)
        if node.pending_poweroff:
            try:
                wait_task(self._connection(), vm.PowerOffVM_Task(), timeout=self.config.task_timeout)
            except VcsimTaskError as exc:
                if not isinstance(exc.fault, vim.fault.InvalidPowerState):
                    raise
            node.pending_poweroff = node.booted = False
            self._set_guest_info(vm, node, running=False)
            log.info("vm_powered_off_after_guest vm=%s", node.name)

    def _boot(self, node: _Node, props: dict[str, Any]) -> None:
        devices = list(props.get("config.hardware.device") or [])
        nics = [d for d in devices if isinstance(d, vim.vm.device.VirtualEthernetCard)]
        if not nics or not nics[0].macAddress:
            log.error("boot_skipped vm=%s reason=no_nic_with_mac", node.name)
            return
        cdroms = self._cdrom_files(node, devices)
        seeds = [p for p in cdroms if is_seed_iso(p)]
        if seeds:
            try:
                seed = read_seed(seeds[0])
            except ValueError as exc:
                log.warning("seed_unreadable vm=%s error=%s", node.name, exc)
            else:
                # No address in the seed: the appliance runs DHCP (its default too when no interface is given).
                node.dhcp = seed.ip is None
                node.ip = seed.ip
                node.hostname = seed.hostname or node.hostname
                node.save()
        if node.dhcp:
            node.ip = None  # this boot's lease, once the guest prints it
        if not node.disk.exists():
            if not cdroms:
                # A blank disk and no CD: a real VM sits in its firmware's boot menu. Nothing to run.
                log.warning("boot_skipped vm=%s reason=no_bootable_media", node.name)
                return
            size = next(
                (int(d.capacityInKB) * 1024 for d in devices if isinstance(d, vim.vm.device.VirtualDisk)),
                self.config.default_disk_bytes,
            )
            self.runner.create_disk(node.disk, size or self.config.default_disk_bytes)
        disks = [d for d in devices if isinstance(d, vim.vm.device.VirtualDisk)]
        if len(disks) > 1 and not node.storage_disk.exists():
            size = int(disks[1].capacityInKB) * 1024
            self.runner.create_disk(node.storage_disk, size or self.config.default_disk_bytes)
        request = BootRequest(
            name=f"vc-{node.key}",
            mac=str(nics[0].macAddress),
            disk=node.disk,
            cdroms=tuple(cdroms),
            console_log=node.dir / f"console-{node.boots + 1}-{'cd' if cdroms else 'disk'}.log",
            storage_disk=node.storage_disk if node.storage_disk.exists() else None,
        )
        node.guest = self.runner.start(request)
        node.mac = request.mac
        node.boots += 1
        node.address_up.clear()
        node.reported = False
        node.stop_probe = threading.Event()
        log.info(
            "guest_started vm=%s mac=%s cdroms=%s expect_ip=%s",
            node.name, request.mac, [str(p) for p in cdroms] or "none (disk boot)", "dhcp" if node.dhcp else node.ip,
        )  # fmt: skip
        if node.dhcp:
            threading.Thread(
                target=self._watch_lease, args=(node, node.guest, request.console_log, node.stop_probe), daemon=True
            ).start()
        elif node.ip:
            threading.Thread(
                target=self._probe_ssh, args=(node, node.guest, node.ip, node.stop_probe), daemon=True
            ).start()

    def _cdrom_files(self, node: _Node, devices: list[Any]) -> list[Path]:
        """The connected CD drives' ISO files, in device order (controller, unit)."""
        cds: list[Any] = [
            d
            for d in devices
            if isinstance(d, vim.vm.device.VirtualCdrom)
            and isinstance(d.backing, vim.vm.device.VirtualCdrom.IsoBackingInfo)
            and (d.connectable is None or d.connectable.startConnected is not False)
        ]
        cds.sort(key=lambda d: (d.controllerKey or 0, d.unitNumber or 0))
        if not cds:
            return []
        stores = self._retrieve(vim.Datastore, ["name", "summary.url"])
        roots = {props.get("name"): props.get("summary.url") for _, props in stores.values()}
        files: list[Path] = []
        for cd in cds:
            path = _resolve(str(cd.backing.fileName), roots)
            if path is None or not path.is_file():
                # vcsim accepts a missing ISO at CreateVM and PowerOn; a real host would connect nothing.
                log.warning("cdrom_missing vm=%s backing=%r resolved=%s", node.name, cd.backing.fileName, path)
                continue
            files.append(path)
        return files

    def _probe_ssh(self, node: _Node, guest: GuestHandle, ip: str, stop: threading.Event) -> None:
        """Wait for an SSH banner on the seed's address (an open port alone proves nothing; see lab-facts)."""
        while not stop.is_set() and not self._stop.is_set() and guest.is_running():
            if _ssh_banner(ip, self.config.ssh_port):
                log.info("guest_ssh_up vm=%s ip=%s", node.name, ip)
                node.address_up.set()
                return
            stop.wait(1.0)

    def _watch_lease(self, node: _Node, guest: GuestHandle, console: Path, stop: threading.Event) -> None:
        """A DHCP guest's address: the last lease its console shows (VMware Tools reads it inside the guest)."""
        seen: str | None = None
        while not stop.is_set() and not self._stop.is_set() and guest.is_running():
            lease = _last_lease(console)
            if lease is not None and lease != seen and not stop.is_set():
                seen = node.ip = lease
                log.info("guest_dhcp_lease vm=%s ip=%s", node.name, lease)
                node.address_up.set()
            stop.wait(0.5)

    def _set_guest_info(self, vm: Any, node: _Node, *, running: bool) -> None:
        """What VMware Tools would report. An empty value clears the field in vcsim (it then reads as unset)."""
        if not running and not node.reported:
            return
        values = {
            "SET.guest.ipAddress": node.ip if running else "",
            "SET.guest.hostName": (node.hostname or node.name) if running else "",
            "SET.guest.toolsRunningStatus": "guestToolsRunning" if running else "guestToolsNotRunning",
        }
        spec = V.vm.ConfigSpec(extraConfig=[V.option.OptionValue(key=k, value=v) for k, v in values.items()])
        wait_task(self._connection(), vm.ReconfigVM_Task(spec=spec), timeout=self.config.task_timeout)
        node.reported = running
        node.reported_ip = node.ip if running else None
        log.info("guest_info_%s vm=%s ip=%s", "set" if running else "cleared", node.name, node.ip)
        self._publish_addresses()

    def _publish_addresses(self) -> None:
        """Write ``addresses.json``: the address reported for each VM (by name), atomically."""
        vms = {
            n.name: {"ip": n.reported_ip, "source": "dhcp" if n.dhcp else "seed", "mac": n.mac, "moref": n.key}
            for n in self.nodes.values()
            if n.reported and n.reported_ip
        }
        path = self.config.state_dir / ADDRESSES_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"vms": vms}, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)

    def _stop_guest(self, node: _Node, *, why: str) -> None:
        node.stop_probe.set()
        node.address_up.clear()
        guest, node.guest = node.guest, None
        if guest is not None:
            try:
                if guest.is_running():
                    log.info("guest_stopping vm=%s why=%s", node.name, why)
                guest.stop()
            except Exception:
                log.exception("guest_stop_failed vm=%s", node.name)

    def _on_destroyed(self, node: _Node) -> None:
        self._stop_guest(node, why="vm_destroyed")
        keep = self.config.state_dir / "destroyed"
        for console in node.dir.glob("console-*.log"):  # evidence outlives the VM; the disk does not
            keep.mkdir(exist_ok=True)
            with contextlib.suppress(OSError):
                console.replace(keep / f"{node.name}-{node.key}-{console.name}")
        shutil.rmtree(node.dir, ignore_errors=True)
        log.info("vm_destroyed vm=%s disk_deleted=%s", node.name, node.disk)
        if node.reported:
            node.reported = False
            self._publish_addresses()


def _resolve(backing: str, roots: dict[Any, Any]) -> Path | None:
    """``[datastore1] iso/a.iso`` -> ``<datastore1's directory>/iso/a.iso``; ``None`` if unknown or escaping it."""
    match = _DS_PATH.match(backing.strip())
    if match is None or not roots.get(match["ds"]):
        return None
    root = Path(str(roots[match["ds"]]).removeprefix("file://")).resolve()
    path = (root / match["path"].lstrip("/")).resolve()
    return path if path.is_relative_to(root) else None


def _last_lease(console: Path) -> str | None:
    """The address of the last ``dhcp lease`` line in a console log, or None."""
    try:
        text = console.read_bytes()
    except OSError:
        return None
    leases = _LEASE.findall(text)
    return leases[-1].decode() if leases else None


def _ssh_banner(ip: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(64).startswith(b"SSH-")
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """``python -m vcsim.watcher``: run until SIGTERM/SIGINT, then stop every guest."""
    p = argparse.ArgumentParser(prog="python -m vcsim.watcher", description=__doc__.split("\n\n")[0])
    p.add_argument("--lab-state", type=Path, help="state.json written by `python -m vcsim.lab up`")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int)
    p.add_argument("--username")
    p.add_argument("--cafile", type=Path, help="vcsim's certificate (default: from --lab-state)")
    p.add_argument("--password-file", type=Path, help="default: env VCSIM_PASSWORD")
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--memory-mb", type=int, help="guest memory (pplab default)")
    p.add_argument("--install-delay", type=int, help="seconds the test appliance 'installs' (pplab default)")
    p.add_argument("--poll-interval", type=float, default=0.5)
    p.add_argument("--ssh-port", type=int, default=22)
    p.add_argument("--log-level", default="INFO")
    ns = p.parse_args(argv)
    logging.basicConfig(level=ns.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    lab: dict[str, Any] = json.loads(ns.lab_state.read_text()) if ns.lab_state else {}
    password = ns.password_file.read_text().strip() if ns.password_file else os.environ.get("VCSIM_PASSWORD", "")
    if not password and lab.get("password_file"):
        password = Path(lab["password_file"]).read_text().strip()
    port, username = ns.port or lab.get("port"), ns.username or lab.get("username")
    if not (password and port and username):
        p.error("need --port/--username (or --lab-state) and a password (VCSIM_PASSWORD or --password-file)")
    cafile = ns.cafile or (Path(lab["cert_path"]) if lab.get("cert_path") else None)
    config = WatcherConfig(
        host=lab.get("host", ns.host), port=int(port), username=str(username), password=password, cafile=cafile,
        state_dir=ns.state_dir, poll_interval=ns.poll_interval, ssh_port=ns.ssh_port,
    )  # fmt: skip
    watcher = Watcher(config, PplabRunner(memory_mb=ns.memory_mb, install_delay_s=ns.install_delay))

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal_received signal=%s", signal.Signals(signum).name)
        watcher.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    watcher.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
