"""IPMI BMCs of the lab (bmclab.ipmi): OpenIPMI's ipmi_sim driven with pyghmi, its machines booted in QEMU.

Every client logs out (:func:`ipmi_client`), and the tests that can check it assert that no session is left open.
What reached the chassis is read from the chassis program's state: pyghmi's ``get_bootdev`` always answers
``default`` against ipmi_sim. One QEMU guest at a time (TCG, 2 cores). The full install (CD boot with a seed,
power-off, disk boot, SSH) is proven once, through the provider, in providers/baremetal/tests/test_ipmi_lab.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bmclab.chassis import write_node_config
from bmclab.ipmi import LAB_DIR, IpmiBmc, LabError, NodeConfig, free_udp_port
from pplab import net
from pplab._cmd import link_exists
from pplab.disk import create_disk
from pyghmi.exceptions import IpmiException  # type: ignore[import-untyped]
from pyghmi.ipmi.command import Command  # type: ignore[import-untyped]
from pyghmi.ipmi.private.session import Session  # type: ignore[import-untyped]

# Not the other lab tests' nodes (.11/.12/.61, Redfish .131): those may boot at the same time.
MAC = "52:54:00:5e:01:21"
USER, PASSWORD = "labadmin", "ipmi-lab-pw"
BOOT_TIMEOUT = 240  # TCG under load; ~15 s on a quiet machine


@contextlib.contextmanager
def ipmi_client(bmc: IpmiBmc, password: str | None = None) -> Iterator[Command]:
    """A pyghmi client of ``bmc`` that always logs out."""
    password = bmc.password if password is None else password
    cmd = Command(bmc.address, bmc.username, password, port=bmc.port)
    try:
        yield cmd
    finally:
        cmd.ipmi_session.logout()
        # pyghmi 1.6.19 keys Session.initting_sessions with str credentials but deletes the entry with bytes ones,
        # so a logged-out session stays there and is handed to the next Command for the same BMC and
        # credentials in this process (dead: its first command fails). Drop it.
        Session.initting_sessions.pop((bmc.address, bmc.username, password, bmc.port, None), None)


def _ppid(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1])


def qemu_pids(mac: str) -> list[int]:
    """The QEMU processes whose NIC is the tap of ``mac`` (zombies excluded)."""
    tap = "pt" + mac.replace(":", "")
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline, stat = (proc / "cmdline").read_bytes(), (proc / "stat").read_text()
            if f"ifname={tap},".encode() in cmdline and stat.rsplit(")", 1)[1].split()[0] != "Z":
                pids.append(int(proc.name))
    return pids


def wait_console(bmc: IpmiBmc, text: str, timeout: float = BOOT_TIMEOUT) -> str:
    """Wait until the current boot's console shows ``text``; fail with the console's tail otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        console = bmc.console()
        if text in console:
            return console
        assert bmc.guest_running(), f"guest ended before {text!r}:\n{console[-3000:]}"
        assert time.monotonic() < deadline, f"{text!r} not on the console within {timeout} s:\n{console[-3000:]}"
        time.sleep(0.5)


def wait_power(cmd: Command, state: str, timeout: float) -> None:
    """Poll the BMC (as a provisioning tool does) until the power state is ``state``."""
    deadline = time.monotonic() + timeout
    while cmd.get_power()["powerstate"] != state:
        assert time.monotonic() < deadline, f"power not {state} within {timeout} s"
        time.sleep(2)


def whats(bmc: IpmiBmc) -> list[str]:
    return [e["what"] for e in bmc.chassis_state()["events"]]


@pytest.fixture
def node(lab_ready: None, appliance_iso: Path, tmp_path: Path) -> NodeConfig:
    """A node with a blank 300 GiB sparse disk and the appliance ISO inserted (no seed)."""
    return NodeConfig(
        name="ipmi-121", mac=MAC, disk=create_disk(tmp_path / "node.raw", "300G"), iso=appliance_iso,
        install_delay_s=1, console_dir=tmp_path / "console",
    )  # fmt: skip


@pytest.fixture
def bmc(node: NodeConfig, tmp_path: Path) -> Iterator[IpmiBmc]:
    with IpmiBmc(node, username=USER, password=PASSWORD, workdir=tmp_path / "bmc") as bmc:
        yield bmc
    assert not qemu_pids(node.mac), "the BMC's stop left the guest running"


@pytest.mark.lab
@pytest.mark.timeout(120)
def test_boot_devices_reach_the_chassis_under_ipmi_sim_names(bmc: IpmiBmc) -> None:
    assert bmc.chassis_state()["boot"] == "default"
    with ipmi_client(bmc) as cmd:
        assert bmc.active_sessions() == 1
        assert cmd.get_power() == {"powerstate": "off"}
        cmd.set_bootdev("cdrom")
        assert bmc.chassis_state()["boot"] == "cdrom"
        cmd.set_bootdev("hd", persist=True)  # persistence does not reach the program: the same "set boot"
        assert bmc.chassis_state()["boot"] == "default"
        cmd.set_bootdev("network")
        cmd.set_bootdev("default")
        # ipmi_sim never marks the boot flags valid: pyghmi reads "default" whatever was set.
        assert cmd.get_bootdev()["bootdev"] == "default"
        cmd.set_bootdev("optical")
    assert bmc.boot_devices_set() == ["cdrom", "default", "pxe", "none", "cdrom"]
    assert bmc.active_sessions() == 0, "the client's logout left a session open"
    state = bmc.chassis_state()
    assert (state["power_on_count"], state["pid"]) == (0, None), "setting a boot device powered nothing on"
    assert all(isinstance(e["time"], float) for e in state["events"])


@pytest.mark.lab
@pytest.mark.timeout(120)
def test_sessions_are_counted_until_the_client_logs_out(bmc: IpmiBmc) -> None:
    with ipmi_client(bmc) as first:
        first.get_power()
        assert bmc.active_sessions() == 1
    assert bmc.active_sessions() == 0
    # A second client for the same BMC in the same process works (see ipmi_client) and is counted again.
    with ipmi_client(bmc) as second:
        assert second.get_power() == {"powerstate": "off"}
        assert bmc.active_sessions() == 1
    assert bmc.active_sessions() == 0


@pytest.mark.lab
@pytest.mark.timeout(120)
def test_a_wrong_password_is_refused(bmc: IpmiBmc) -> None:
    started = time.monotonic()
    with pytest.raises(IpmiException, match="Incorrect password"):
        Command(bmc.address, bmc.username, "not-the-password", port=bmc.port)
    assert time.monotonic() - started < 5, "a refusal is an answer, not a timeout"
    with pytest.raises(IpmiException, match="Unauthorized name"):
        Command(bmc.address, "intruder", bmc.password, port=bmc.port)
    # The right credentials still work (through ipmitool: no pyghmi session state shared with the failures).
    assert "Chassis Power is off" in bmc.ipmitool("chassis", "power", "status")
    assert bmc.chassis_state()["power_on_count"] == 0


@pytest.mark.lab
def test_credentials_ipmi_sim_would_silently_never_match_are_refused_up_front(tmp_path: Path) -> None:
    node = NodeConfig(name="n", mac=MAC, disk=tmp_path / "d.raw")
    for user, password in [("u" * 16, "pw"), ("admin", "p" * 20), ("admin", "two words"), ("admin", 'a"b')]:
        with pytest.raises(LabError):
            IpmiBmc(node, username=user, password=password)
    IpmiBmc(node, username="u" * 15, password="p" * 19)  # the longest that work


@pytest.mark.lab
@pytest.mark.timeout(120)
def test_an_unreachable_bmc_times_out_in_bounded_time(lab_ready: None) -> None:
    port = free_udp_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(IpmiException):
        Command("127.0.0.1", USER, PASSWORD, port=port)
    elapsed = time.monotonic() - started
    assert elapsed < 20, f"pyghmi gave up after {elapsed:.1f} s"  # ~5 s here


@pytest.mark.lab
@pytest.mark.timeout(120)
def test_a_disk_boot_of_a_disk_that_never_booted_the_iso_is_an_ipmi_error(bmc: IpmiBmc) -> None:
    """pplab boots a disk through the kernel/initrd cached by a CD boot: with none, power on fails visibly."""
    with ipmi_client(bmc) as cmd:
        cmd.set_bootdev("hd")
        with pytest.raises(IpmiException):
            cmd.set_power("on", wait=10)
        assert cmd.get_power() == {"powerstate": "off"}
    assert any(w.startswith("error: ") and "no kernel/initrd" in w for w in whats(bmc)), whats(bmc)
    assert bmc.chassis_state()["pid"] is None and not qemu_pids(MAC)


@pytest.mark.lab
@pytest.mark.timeout(60)
def test_the_chassis_program_speaks_ipmi_sims_protocol(node: NodeConfig, tmp_path: Path) -> None:
    """The program as ipmi_sim runs it (through sh -c): one "name:value" line per name asked, errors as exit codes."""
    state_dir = tmp_path / "node-state"
    write_node_config(state_dir, node)

    def chassis(*args: str) -> subprocess.CompletedProcess[str]:
        line = " ".join([sys.executable, "-m", "bmclab.chassis", str(state_dir), *args])
        return subprocess.run(line, shell=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(LAB_DIR)})

    assert chassis("get", "power", "boot").stdout == "power:0\nboot:default\n"
    assert chassis("set", "boot", '"cdrom"').returncode == 0  # ipmi_sim quotes every value
    assert chassis("set", "identify", '"15 0"').returncode == 0
    assert chassis("get", "boot", "reset", "power").stdout == "boot:cdrom\nreset:0\npower:0\n"
    bad = chassis("set", "boot", "floppy")
    assert bad.returncode == 1 and "unknown boot device" in bad.stderr
    assert chassis("set", "power").returncode == 2
    assert chassis("frobnicate").returncode == 2
    events = [e["what"] for e in json.loads((state_dir / "chassis.json").read_text())["events"]]
    assert events[:2] == ["set boot cdrom", "set identify 15 0"]


@pytest.mark.lab
@pytest.mark.qemu
@pytest.mark.timeout(600)
def test_power_on_off_is_idempotent_and_the_boot_device_picks_cd_or_disk(bmc: IpmiBmc, node: NodeConfig) -> None:
    tap = "pt" + MAC.replace(":", "")
    with ipmi_client(bmc) as cmd:
        # CD boot: the ISO is attached (no seed, so the installer stays up waiting for one).
        cmd.set_bootdev("cdrom")
        cmd.set_power("on", wait=30)
        assert cmd.get_power() == {"powerstate": "on"}
        # pyghmi does not send "on" to a machine that is on; a raw Chassis Control "power up" does reach it.
        assert cmd.set_power("on", wait=30) == {"powerstate": "on"}
        assert cmd.raw_command(netfn=0, command=2, data=[1])["code"] == 0
        state = bmc.chassis_state()
        assert (state["power_on_count"], state["boots"], state["boot_mode"]) == (1, 1, "cd")
        assert state["cdroms"] == [str(node.iso)]
        assert len(qemu_pids(MAC)) == 1, "power on twice started a second guest"
        assert "already on: nothing to do" in whats(bmc)
        wait_console(bmc, "boot mode=cd")  # the installer (it would wait for a seed, then sit at the console)

        cmd.set_power("off", wait=30)
        assert cmd.get_power() == {"powerstate": "off"}
        assert not qemu_pids(MAC) and not link_exists(tap, net.LAN_NAMESPACE), "power off left QEMU or its tap"
        assert cmd.raw_command(netfn=0, command=2, data=[0])["code"] == 0  # off again: nothing to do
        assert whats(bmc)[-1] == "already off: nothing to do"

        # pyghmi "hd" arrives as "default": a disk boot, with no CD attached although the ISO is still inserted.
        cmd.set_bootdev("hd")
        cmd.set_power("on", wait=30)
        state = bmc.chassis_state()
        assert (state["boot"], state["boot_mode"], state["cdroms"]) == ("default", "disk", [])
        assert (state["power_on_count"], state["boots"]) == (2, 2)
        (pid,) = qemu_pids(MAC)
        assert b"media=cdrom" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        # The orphaned guest belongs to the BMC's reaper, not to ipmi_sim: its exit must not signal ipmi_sim while
        # ipmi_sim reads a chassis program's answer (bmclab.reaper says why).
        parent = _ppid(pid)
        assert bmc.process is not None and parent == bmc.process.pid, "the guest is not the reaper's child"
        assert Path(f"/proc/{parent}/comm").read_text().strip() != "ipmi_sim"
        console = wait_console(bmc, "boot mode=disk")  # then "no installed system found": the disk is blank
        assert "boot mode=cd" not in console

        cmd.set_power("off", wait=30)
        assert not qemu_pids(MAC)
    assert bmc.active_sessions() == 0
    assert bmc.boot_devices_set() == ["cdrom", "default"]
