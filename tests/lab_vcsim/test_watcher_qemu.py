"""End to end: a vcsim VM with the test appliance ISO and a seed really boots in QEMU through the watcher.

Needs root, QEMU and ``lab/build/appliance.iso`` (lab/install.sh); a missing prerequisite fails with the reason.
Takes 1-3 minutes (two TCG boots).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from vcsim.lab import LAB_DIR, VcsimHandle, wait_task
from vcsim.watcher import _ssh_banner

from .inventory import V, create_vm, dev
from .seeds import Keypair, user_data, write_seed_iso

# High on the lab LAN, away from the .11, .12 ... the provider tests give their nodes.
GUEST_IP = "10.251.0.231"

pytestmark = [pytest.mark.lab, pytest.mark.qemu]


@pytest.fixture
def appliance_iso() -> Path:
    if os.geteuid() != 0:
        pytest.fail("the QEMU watcher test needs root (network namespace, taps)", pytrace=False)
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("qemu-system-x86_64 missing: apt-get install qemu-system-x86 (lab/install.sh)", pytrace=False)
    import pplab

    try:
        return pplab.appliance_iso()
    except pplab.LabError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def watcher_process(vcsim: VcsimHandle, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """The watcher as users run it: the CLI, password in the environment, stopped with SIGTERM."""
    log_path = tmp_path / "watcher.log"
    env = dict(os.environ, PYTHONPATH=str(LAB_DIR), VCSIM_PASSWORD=vcsim.password)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vcsim.watcher", "--host", vcsim.host, "--port", str(vcsim.port),
             "--username", vcsim.username, "--cafile", str(vcsim.cert_path),
             "--state-dir", str(tmp_path / "watcher"), "--install-delay", "2"],
            env=env, stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
    yield proc, log_path
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def eventually(check: Callable[[], Any], what: str, timeout: float, log_path: Path) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; watcher log:\n"
                                 + log_path.read_text(errors="replace")[-4000:])  # fmt: skip
        time.sleep(1.0)


def test_vm_installs_powers_off_then_boots_its_disk_and_reports_its_ip(
    vcsim: VcsimHandle,
    si: Any,
    appliance_iso: Path,
    watcher_process: tuple[subprocess.Popen[bytes], Path],
    tmp_path: Path,
) -> None:
    watcher, log_path = watcher_process
    name = f"e2e-{secrets.token_hex(3)}"  # vcsim derives the MAC from the name: unique taps on a shared LAN
    (vcsim.datastore_dir / "iso").mkdir()
    shutil.copyfile(appliance_iso, vcsim.datastore_dir / "iso" / "appliance.iso")
    host_key = Keypair.generate("host")
    write_seed_iso(
        vcsim.datastore_dir / "seed" / f"{name}.iso",
        user_data(name, GUEST_IP, Keypair.generate("user"), host_key),
        f"lab-{name}",
    )
    vm = create_vm(si, name, ["[datastore1] iso/appliance.iso", f"[datastore1] seed/{name}.iso"])

    # 1. Install: the appliance boots the ISO, reads the seed, writes the disk and powers itself off.
    wait_task(si, vm.PowerOnVM_Task())
    eventually(lambda: vm.runtime.powerState == "poweredOff", "the VM to power off after install", 300, log_path)
    assert vm.guest.ipAddress is None

    # 2. The library detaches the media while the VM is off, then boots the installed disk.
    cds = [d for d in vm.config.hardware.device if isinstance(d, dev.VirtualCdrom)]
    spec = V.vm.ConfigSpec(deviceChange=[dev.VirtualDeviceSpec(operation="remove", device=cd) for cd in cds])
    wait_task(si, vm.ReconfigVM_Task(spec=spec))
    wait_task(si, vm.PowerOnVM_Task())
    eventually(lambda: vm.guest.ipAddress == GUEST_IP, "the seed's address in guest.ipAddress", 300, log_path)
    assert vm.guest.hostName == name
    assert _ssh_banner(GUEST_IP, 22)  # the address vcsim reports really answers SSH
    assert vm.runtime.powerState == "poweredOn"

    # 3. Power off in vcsim: the guest goes away with it.
    wait_task(si, vm.PowerOffVM_Task())
    eventually(lambda: not _ssh_banner(GUEST_IP, 22, timeout=1.0), "the guest to stop", 60, log_path)

    # 4. Destroy: the watcher deletes the VM's disk.
    disks = list((tmp_path / "watcher").glob("vm-*/disk.img"))
    assert len(disks) == 1
    wait_task(si, vm.Destroy_Task())
    eventually(lambda: not disks[0].exists(), "the disk to be deleted", 30, log_path)

    # 5. SIGTERM: a clean exit.
    watcher.terminate()
    assert watcher.wait(60) == 0, log_path.read_text(errors="replace")[-4000:]
