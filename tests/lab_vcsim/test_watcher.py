"""The watcher's reconciliation against a real vcsim, with a fake guest runner (no QEMU: fast, no root needed).

The watcher with real QEMU guests is proven by the vSphere end-to-end tests (tests/e2e/test_vsphere_lab.py).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from vcsim.guests import BootRequest
from vcsim.lab import VcsimHandle, wait_task
from vcsim.watcher import Watcher, WatcherConfig

from tests.keys import Ed25519

from .inventory import V, create_vm, dev
from .seeds import user_data, write_seed_iso

pytestmark = pytest.mark.lab


@dataclass
class FakeGuest:
    request: BootRequest
    running: bool = True
    stopped_by_watcher: bool = False

    def is_running(self) -> bool:
        return self.running

    def stop(self) -> None:
        self.stopped_by_watcher = self.stopped_by_watcher or self.running
        self.running = False

    def power_off_by_itself(self) -> None:
        self.running = False


@dataclass
class FakeRunner:
    guests: list[FakeGuest] = field(default_factory=list)
    fail_for: set[str] = field(default_factory=set)

    def prepare(self) -> None:
        pass

    def create_disk(self, path: Path, size_bytes: int) -> None:
        with open(path, "wb") as f:
            f.truncate(size_bytes)

    def start(self, request: BootRequest) -> FakeGuest:
        if any(name in str(request.console_log) for name in self.fail_for):
            raise RuntimeError("qemu refused to start")
        guest = FakeGuest(request)
        self.guests.append(guest)
        return guest


@pytest.fixture
def banner_port() -> Iterator[int]:
    """A local "guest" answering an SSH banner, standing in for the appliance's dropbear."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"SSH-2.0-dropbear_fake\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    done.set()
    thread.join()
    server.close()


@pytest.fixture
def runner() -> FakeRunner:
    return FakeRunner()


@pytest.fixture
def watcher(vcsim: VcsimHandle, runner: FakeRunner, banner_port: int, tmp_path: Path) -> Iterator[Watcher]:
    config = WatcherConfig(
        host=vcsim.host, port=vcsim.port, username=vcsim.username, password=vcsim.password,
        cafile=vcsim.cert_path, state_dir=tmp_path / "watcher", poll_interval=0.1, ssh_port=banner_port,
    )  # fmt: skip
    w = Watcher(config, runner)
    thread = w.run_in_thread()
    yield w
    w.stop()
    thread.join(timeout=10)
    assert not thread.is_alive()


def eventually(check: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def stage_media(vcsim: VcsimHandle, name: str, ip: str = "127.0.0.1", *, dhcp: bool = False) -> list[str]:
    """An "appliance ISO" and a real seed in the datastore directory; returns their datastore paths."""
    (vcsim.datastore_dir / "iso").mkdir(exist_ok=True)
    (vcsim.datastore_dir / "iso" / "palette.iso").write_bytes(b"\0" * 65536)
    data = user_data(name, ip, Ed25519.generate("user"), Ed25519.generate("host"))
    if dhcp:
        data["stylus"]["site"]["network"]["interfaces"]["eth0"] = {"type": "dhcp"}
    write_seed_iso(vcsim.datastore_dir / "seed" / f"{name}.iso", data, f"lab-{name}")
    return ["[datastore1] iso/palette.iso", f"[datastore1] seed/{name}.iso"]


def test_power_on_boots_the_cds_and_reports_the_seed_address(
    vcsim: VcsimHandle, si: Any, runner: FakeRunner, watcher: Watcher
) -> None:
    vm = create_vm(si, "node-1", stage_media(vcsim, "node-1"))
    mac = next(d.macAddress for d in vm.config.hardware.device if isinstance(d, dev.VirtualEthernetCard))
    wait_task(si, vm.PowerOnVM_Task())

    guest = eventually(lambda: runner.guests and runner.guests[0], "a guest to boot")
    assert guest.request.mac == mac
    assert guest.request.cdroms == (
        vcsim.datastore_dir / "iso" / "palette.iso",
        vcsim.datastore_dir / "seed" / "node-1.iso",
    )
    assert guest.request.disk.is_file()

    eventually(lambda: vm.guest.ipAddress == "127.0.0.1", "the guest IP in vcsim")
    assert vm.guest.hostName == "node-1"
    assert vm.guest.toolsRunningStatus == "guestToolsRunning"
    assert [n.macAddress for n in vm.guest.net] == [mac]


def test_dhcp_guest_reports_the_lease_its_console_shows(
    vcsim: VcsimHandle, si: Any, runner: FakeRunner, watcher: Watcher
) -> None:
    vm = create_vm(si, "node-1", stage_media(vcsim, "node-1", dhcp=True))
    mac = next(d.macAddress for d in vm.config.hardware.device if isinstance(d, dev.VirtualEthernetCard))
    wait_task(si, vm.PowerOnVM_Task())
    guest = eventually(lambda: runner.guests and runner.guests[0], "a guest to boot")
    time.sleep(0.5)
    assert vm.guest.ipAddress is None, "no address before the guest has a lease"

    # The appliance's udhcpc hook prints each lease on the console; the watcher reports the last one.
    with open(guest.request.console_log, "a") as console:
        console.write("pplab: [5.1] network: eth0 dhcp\npplab: network: eth0 dhcp lease 10.251.0.201/24 router=x\n")
    eventually(lambda: vm.guest.ipAddress == "10.251.0.201", "the lease in vcsim")
    assert [(n.macAddress, list(n.ipAddress)) for n in vm.guest.net] == [(mac, ["10.251.0.201"])]
    addresses = json.loads((watcher.config.state_dir / "addresses.json").read_text())["vms"]
    assert addresses["node-1"] == {"ip": "10.251.0.201", "source": "dhcp", "mac": mac, "moref": vm._moId}
    with open(guest.request.console_log, "a") as console:  # a renewal that moved the guest
        console.write("pplab: network: eth0 dhcp lease 10.251.0.202/24 router=x\n")
    eventually(lambda: vm.guest.ipAddress == "10.251.0.202", "the new lease in vcsim")

    guest.power_off_by_itself()
    eventually(lambda: vm.guest.ipAddress is None, "the guest IP to be cleared")
    # The file is rewritten after vcsim is told (two writes, not one transaction): wait for it too.
    eventually(lambda: json.loads((watcher.config.state_dir / "addresses.json").read_text())["vms"] == {},
               "the address to leave addresses.json")


def test_guest_power_off_powers_the_vm_off_and_disk_boot_remembers_the_address(
    vcsim: VcsimHandle, si: Any, runner: FakeRunner, watcher: Watcher
) -> None:
    vm = create_vm(si, "node-1", stage_media(vcsim, "node-1"))
    wait_task(si, vm.PowerOnVM_Task())
    first = eventually(lambda: runner.guests and runner.guests[0], "a guest to boot")

    first.power_off_by_itself()  # the installer's power-off
    eventually(lambda: vm.runtime.powerState == "poweredOff", "vcsim to show the VM powered off")
    eventually(lambda: vm.guest.ipAddress is None, "the guest IP to be cleared")

    # The library detaches both CDs (while powered off) and boots the installed disk.
    cds = [d for d in vm.config.hardware.device if isinstance(d, dev.VirtualCdrom)]
    wait_task(si, vm.ReconfigVM_Task(spec=V.vm.ConfigSpec(deviceChange=[
        dev.VirtualDeviceSpec(operation="remove", device=cd) for cd in cds
    ])))  # fmt: skip
    wait_task(si, vm.PowerOnVM_Task())
    second = eventually(lambda: len(runner.guests) == 2 and runner.guests[1], "a second boot")
    assert second.request.cdroms == ()
    assert second.request.disk == first.request.disk
    eventually(lambda: vm.guest.ipAddress == "127.0.0.1", "the remembered IP to be reported")


def test_vm_power_off_stops_the_guest_and_destroy_deletes_the_disk(
    vcsim: VcsimHandle, si: Any, runner: FakeRunner, watcher: Watcher
) -> None:
    vm = create_vm(si, "node-1", stage_media(vcsim, "node-1"))
    wait_task(si, vm.PowerOnVM_Task())
    guest = eventually(lambda: runner.guests and runner.guests[0], "a guest to boot")

    wait_task(si, vm.PowerOffVM_Task())
    eventually(lambda: guest.stopped_by_watcher, "the guest to be stopped")

    wait_task(si, vm.Destroy_Task())
    eventually(lambda: not guest.request.disk.exists(), "the disk to be deleted")


def test_one_failing_vm_does_not_stop_the_others(
    vcsim: VcsimHandle, si: Any, runner: FakeRunner, watcher: Watcher
) -> None:
    broken = create_vm(si, "broken", stage_media(vcsim, "broken"))
    runner.fail_for.add(broken._moId)
    fine = create_vm(si, "fine", stage_media(vcsim, "fine"))
    wait_task(si, broken.PowerOnVM_Task())
    wait_task(si, fine.PowerOnVM_Task())
    eventually(lambda: fine.guest.ipAddress == "127.0.0.1", "the healthy VM's IP")
    assert [g.request.name for g in runner.guests] == [f"vc-{fine._moId}"]


def test_stopping_the_watcher_stops_every_guest(
    vcsim: VcsimHandle, si: Any, runner: FakeRunner, watcher: Watcher
) -> None:
    vms = [create_vm(si, f"node-{i}", stage_media(vcsim, f"node-{i}")) for i in (1, 2)]
    for vm in vms:
        wait_task(si, vm.PowerOnVM_Task())
    eventually(lambda: len(runner.guests) == 2, "two guests")
    watcher.stop()
    eventually(lambda: all(g.stopped_by_watcher for g in runner.guests), "every guest stopped")


def test_vm_without_media_or_installed_disk_is_not_booted(si: Any, runner: FakeRunner, watcher: Watcher) -> None:
    vm = create_vm(si, "empty", [])
    wait_task(si, vm.PowerOnVM_Task())
    time.sleep(0.5)
    assert runner.guests == []
    assert vm.runtime.powerState == "poweredOn"  # like a real VM waiting at its firmware's boot menu
