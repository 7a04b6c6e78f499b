"""The bare-metal provider on the lab's IPMI BMC (OpenIPMI's ipmi_sim, whose chassis program boots a real QEMU guest).

IPMI has no virtual media, so an IPMI node takes ``media: preinserted``: the operator attaches the appliance ISO and
the node's seed. The first ``apply`` renders the seed and stops that node before anything reaches its BMC's power or
boot device, naming the seed's path; the test then plays the operator (``IpmiBmc.insert_media``: what the chassis
attaches at its next CD boot, a copy as on a USB stick). The second ``apply`` boots once from the CD, waits for the
installer to power the server off, boots from disk and climbs the readiness ladder to an authenticated SSH session
with the seeded host key; ``destroy`` leaves the server off with its boot override cleared, and the operator's media
where the operator put it. What reached the chassis is read from the chassis program's own log (ipmi_sim's
``get_bootdev`` always says ``default``); open sessions are counted on the BMC.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bmclab.ipmi import IpmiBmc, NodeConfig
from palette_provision.journal import Fact
from palette_provision.pipeline import Deployment
from palette_provision.plan import parse_plan
from pplab import net
from pplab.disk import create_disk, read_install_state
from structlog.testing import capture_logs

REPO = Path(__file__).resolve().parents[3]
APPLIANCE_ISO = REPO / "lab" / "build" / "appliance.iso"
# Not the other lab tests' guests (tests/lab :01:21, the Redfish e2e :02:41, the IPMI driver tests :03:31).
NODE, MAC, ADDRESS = "ipmi-e2e", "52:54:00:5e:03:51", "10.251.0.151"
USER, BMC_PASSWORD = "labadmin", "ipmi-e2e-pw-7"
PASSWORD_ENV, BMC_PASSWORD_ENV = "PP_IPMI_NODE_PASSWORD", "PP_IPMI_BMC_PASSWORD"

pytestmark = [pytest.mark.lab, pytest.mark.qemu]


@pytest.fixture(scope="module")
def bmc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpmiBmc]:
    if os.geteuid() != 0:
        pytest.fail("the IPMI lab needs root (the chassis program makes taps in a namespace)", pytrace=False)
    missing = [tool for tool in ("ipmi_sim", "ipmitool", "qemu-system-x86_64") if not shutil.which(tool)]
    if missing:
        pytest.fail(f"lab prerequisites missing: {', '.join(missing)}; run lab/install.sh", pytrace=False)
    assert APPLIANCE_ISO.is_file(), "the lab appliance ISO is built by ./dev setup (lab/install.sh)"
    net.ensure_lan()
    work = tmp_path_factory.mktemp("ipmi-e2e")
    node = NodeConfig(name=NODE, mac=MAC, disk=create_disk(work / "disk.raw", "300G"), install_delay_s=2,
                      console_dir=work / "console")  # fmt: skip
    with IpmiBmc(node, username=USER, password=BMC_PASSWORD, workdir=work / "bmc") as running:
        yield running
    assert not running.guest_running(), "the guest outlived its BMC"


@pytest.fixture(scope="module")
def plan_data(bmc: IpmiBmc, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("ipmi-plan")
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    os.environ[PASSWORD_ENV] = "ipmi-node-password-1"
    os.environ[BMC_PASSWORD_ENV] = BMC_PASSWORD
    return {
        "name": "ipmi-e2e",
        "profile": "appliance",
        "iso": {"source": str(APPLIANCE_ISO)},
        "cluster": {
            "name": "ipmi", "vip": "10.251.0.150", "dns": ["10.251.0.1"],
            "ssh_public_keys": [key.with_suffix(".pub").read_text().strip()],
            "node_account": {"username": "kairos", "password": f"env:{PASSWORD_ENV}",
                             "ssh_private_key": f"file:{key}"},
        },
        "nodes": {
            "size": "small", "install_disk": "/dev/sda",
            "network": {"mode": "static", "gateway": "10.251.0.1"},
            "hosts": [{
                "name": NODE, "address": f"{ADDRESS}/24", "media": "preinserted",
                "bmc": {"protocol": "ipmi", "address": bmc.address, "port": bmc.port, "username": USER,
                        "password": f"env:{BMC_PASSWORD_ENV}"},
            }],
        },
        "readiness": {"ssh": True, "local_api": False},
        "handoff": {"kind": "inventory", "output_dir": str(work / "out")},
        "timeouts": {"install": 600, "ready": 300},
        # Listening on every address with nothing to advertise: an IPMI-only deployment never starts a media server.
        "platform": {"provider": "baremetal", "media_server": {"bind": "0.0.0.0:0"}, "min_command_interval_s": 0.1},
    }  # fmt: skip


def chassis_events(bmc: IpmiBmc) -> list[str]:
    return [e["what"] for e in bmc.chassis_state()["events"]]


def _zombie_guests() -> list[str]:
    """PIDs of QEMU processes left as zombies (state ``Z`` in ``/proc/<pid>/stat``)."""
    zombies = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # ended meanwhile
        name, state = text[text.find("(") + 1 : text.rfind(")")], text[text.rfind(")") + 2 : text.rfind(")") + 3]
        if state == "Z" and name.startswith("qemu"):
            zombies.append(stat.parent.name)
    return zombies


def test_an_ipmi_node_installs_from_media_the_operator_attached(
    bmc: IpmiBmc, plan_data: dict[str, Any], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    plan = parse_plan(plan_data)
    with Deployment(plan, state_dir=state) as deployment:
        provider: Any = deployment.provider

        # 1. The seed is rendered, and the node stops before its boot, saying where the seed is.
        first = deployment.apply()
        [node] = first.nodes
        assert node.status == "failed" and node.phase == "insert_media", node
        message = node.error or ""
        assert "attach the appliance ISO and this node's seed" in message and "run apply again" in message
        seed = Path(message.split(" at ", 1)[1].split(":", 1)[0])
        assert seed.is_file() and seed.stat().st_mode & 0o077 == 0, "the seed is private to its owner"
        assert deployment.journal.fact(NODE, Fact.SEED_HANDED_OVER_AT) is not None
        assert bmc.chassis_state()["power_on_count"] == 0, "nothing was powered on before the operator acted"
        assert not any(e.startswith("set boot") for e in chassis_events(bmc)), "no boot device was set yet"
        assert not (state / "providers" / "baremetal" / "media-server").exists(), "no media server for IPMI"

        # 2. The operator attaches the ISO and a copy of the seed (a USB stick written with it).
        stick = tmp_path / "usb-seed.iso"
        shutil.copyfile(seed, stick)
        bmc.insert_media(APPLIANCE_ISO, stick)

        # 3. While the installer runs, the BMC answers two power reads with completion code 0xFF (firmware busy for
        #    a moment): the provider retries them, says so, and the install goes on.
        def fail_reads_during_the_install() -> None:
            deadline = time.monotonic() + 300
            while "seed found" not in bmc.console() and time.monotonic() < deadline:
                if applied.wait(0.2):
                    return  # the apply ended first (it failed): no fault may outlive it
            bmc.fail_next_reads(2)

        applied = threading.Event()
        injector = threading.Thread(target=fail_reads_during_the_install, daemon=True)
        injector.start()
        with capture_logs() as logged:
            try:
                report = deployment.apply()
            finally:
                applied.set()
        injector.join(10)
        assert bmc.reads_left_to_fail() == 0, "the BMC's failing reads came while the apply ran"
        waits = [(e["event"], e.get("node")) for e in logged if e["event"].startswith("wait_")]
        assert ("wait_failing", NODE) in waits and ("wait_answering_again", NODE) in waits, waits
        assert report.ok, report.failures()
        [node] = report.nodes
        assert (node.status, node.address) == ("ready", ADDRESS)
        assert [e["rung"] for e in node.evidence][-4:] == ["address", "ssh_banner", "host_key", "ssh_session"]
        installed = read_install_state(bmc.node.disk)
        assert installed is not None and (installed.count, installed.hostname) == (1, NODE)
        assert installed.device == "/dev/sda" and installed.config["NET_TYPE"] == "static"
        # What the machine did (the lab's own checks, folded in here: one boot pair proves both): boot 1 from the
        # CD found the operator's seed on the second CD, installed and powered itself off; ipmi_sim reaped it;
        # boot 2 from the disk found the installed system.
        consoles = {p.name.rsplit("-", 1)[-1]: p.read_text(errors="replace")
                    for p in sorted((bmc.node.console_dir or tmp_path).glob(f"{bmc.node.name}-boot*.log"))}  # fmt: skip
        assert sorted(consoles) == ["cd.log", "disk.log"], sorted(consoles)
        install = consoles["cd.log"]
        assert "seed found on /dev/sr1" in install and "install: complete #1" in install, install[-3000:]
        assert "install: powering off" in install and "RE-INSTALL" not in install
        assert "boot mode=disk" in consoles["disk.log"]
        assert "installed system found on /dev/sda" in consoles["disk.log"]
        assert "guest powered itself off" in chassis_events(bmc)
        assert not _zombie_guests(), "ipmi_sim (a subreaper) reaps a guest that powered itself off"
        sets = [e for e in chassis_events(bmc) if e.startswith("set boot")]
        assert sets[:2] == ["set boot cdrom", "set boot default"], f"once from the CD, then the disk: {sets}"
        chassis = bmc.chassis_state()
        assert chassis["power_on_count"] == 2 and chassis["boot_mode"] == "disk", chassis
        assert not seed.exists(), "once installed, our copy of the seed (its private host key) is gone"
        opened, closed = provider.sessions
        assert opened == closed > 0, "every BMC session was closed"
        assert bmc.active_sessions() == 0

        again = deployment.apply()
        assert again.ok
        assert read_install_state(bmc.node.disk).count == 1, "a re-run installs nothing"  # type: ignore[union-attr]

        destroyed = deployment.destroy()
        assert {e["result"] for e in destroyed} >= {"restored"}
    assert bmc.wait_guest_stopped(60), "destroy powers the server off"
    sets = [e for e in chassis_events(bmc) if e.startswith("set boot")]
    assert sets[-1] == "set boot none", f"destroy clears the boot override: {sets}"
    assert bmc.node.iso == APPLIANCE_ISO and bmc.node.seed == stick, "the operator's media is the operator's"
    assert bmc.active_sessions() == 0
