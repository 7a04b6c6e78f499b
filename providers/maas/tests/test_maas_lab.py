"""The MAAS provider end to end on the lab: real QEMU boots behind the MAAS region simulator.

* **image mode**: MAAS "deploys" by running the simulator's on-deploy hook (``bmclab.maas_hook``), which writes the
  uploaded image onto the machine's disk and boots it in QEMU with the deployment's user-data as its seed. The
  readiness ladder then reaches an authenticated SSH session with the host key the seed carried; ``destroy``
  releases the machine, whose on-release hook stops the guest.
* **bmc mode**: the simulator's machine names the lab's Redfish BMC (sushy-tools' emulator) in its power
  parameters. The provider allocates through MAAS, then installs through that BMC exactly as on bare metal: the ISO
  and the seed from the media server by virtual media, one-time CD boot, install, disk boot, SSH. ``destroy`` ejects
  and clears the boot override through the BMC, then releases. The same machine, through MAAS's power parameters,
  is held to the core's provider contract (:class:`TestMaasBmcContract`).
* **bmc mode, IPMI**: the machine's power parameters name the lab's IPMI BMC (OpenIPMI's ipmi_sim, whose chassis
  program boots a QEMU guest) with the appliance ISO preinserted. The first ``apply`` allocates and stops at the
  seed, naming its path; the test plays the operator attaching it; the second installs through IPMI (CD once, power
  on, install, disk) and reaches SSH. ``destroy`` powers off and clears the boot override, then releases.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sushy  # type: ignore[import-untyped]
from bmclab.ipmi import IpmiBmc, NodeConfig
from bmclab.redfish import RedfishLab, RedfishNode
from palette_provision.log import get_logger
from palette_provision.media_server import find_media_server, stop_media_server
from palette_provision.pipeline import Deployment
from palette_provision.plan import DeploymentPlan, parse_plan
from palette_provision.provider import Machine, ProviderContext
from palette_provision.registry import create_provider
from palette_provision.testing.contract import ProviderContract
from palette_provision.testing.maas import MaasSimulatorHandle, start_maas_simulator
from pplab import net
from pplab.disk import create_disk, read_install_state, write_image
from sushy.auth import BasicAuth  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parents[3]
APPLIANCE_ISO = REPO / "lab" / "build" / "appliance.iso"
KEY_ENV, PASSWORD_ENV = "PP_MAAS_LAB_KEY", "PP_MAAS_LAB_NODE_PASSWORD"
# Not the other lab tests' guests (Redfish e2e :02:41-43, IPMI :03:31/:03:51, appliance :00:61).
IMAGE_NODE = ("maas-img1", "52:54:00:5e:04:61", "10.251.0.161")
BMC_NODE = ("maas-bmc1", "52:54:00:5e:04:62", "10.251.0.162")
IPMI_NODE = ("maas-ipmi1", "52:54:00:5e:04:63", "10.251.0.163")
IPMI_USER, IPMI_PASSWORD = "labadmin", "maas-ipmi-pw-3"

pytestmark = [pytest.mark.lab, pytest.mark.qemu]


def _plan(sim: MaasSimulatorHandle, work: Path, address: str, **platform: Any) -> dict[str, Any]:
    key = work / "id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    os.environ[KEY_ENV] = sim.api_key
    os.environ[PASSWORD_ENV] = "maas-lab-password-1"
    hosts = platform.pop("hosts", None)
    nodes: dict[str, Any] = {
        "count": 1, "size": "small", "install_disk": "/dev/sda",
        "network": {"mode": "static", "addresses": [f"{address}/24"], "gateway": "10.251.0.1"},
    }  # fmt: skip
    if hosts is not None:
        nodes = {"size": "small", "install_disk": "/dev/sda", "network": {"mode": "static", "gateway": "10.251.0.1"},
                 "hosts": hosts}  # fmt: skip
    return {
        "name": "maas-lab", "profile": "appliance", "iso": {"source": str(APPLIANCE_ISO)},
        "cluster": {"name": "ml", "vip": "10.251.0.160", "dns": ["10.251.0.1"],
                    "ssh_public_keys": [key.with_suffix(".pub").read_text().strip()],
                    "node_account": {"username": "kairos", "password": f"env:{PASSWORD_ENV}",
                                     "ssh_private_key": f"file:{key}"}},
        "nodes": nodes,
        "readiness": {"ssh": True, "local_api": False},
        "handoff": {"kind": "inventory", "output_dir": str(work / "out")},
        "timeouts": {"install": 600, "ready": 300},
        "platform": {"provider": "maas", "url": sim.url, "api_key": f"env:{KEY_ENV}", **platform},
    }  # fmt: skip


@pytest.fixture(scope="module")
def lab_ready() -> None:
    if os.geteuid() != 0:
        pytest.fail("the MAAS lab tests need root (QEMU guests on the lab LAN)", pytrace=False)
    assert APPLIANCE_ISO.is_file(), "the lab appliance ISO is built by ./dev setup (lab/install.sh)"
    net.ensure_lan()


def test_image_mode_deploys_a_qemu_guest_from_the_uploaded_image(lab_ready: None, tmp_path: Path) -> None:
    name, mac, address = IMAGE_NODE
    work = tmp_path / "guests"
    hook = {"argv": [sys.executable, "-m", "bmclab.maas_hook", "deploy"], "timeout_s": 400,
            "env": {"PPLAB_MAAS_ISO": str(APPLIANCE_ISO), "PPLAB_MAAS_WORK": str(work)}}  # fmt: skip
    config = {"machines": [{"hostname": name, "mac": mac, "address": address, "tags": ["palette"], "cpu_count": 4,
                            "memory": 8192}],
              "on_deploy": hook, "on_release": {**hook, "argv": [*hook["argv"][:-1], "release"], "timeout_s": 30}}
    image = write_image(tmp_path / "palette-appliance.raw")
    with start_maas_simulator(tmp_path / "sim", config=config, knobs={"deploy_delay_s": 0}) as sim:
        data = _plan(sim, tmp_path, address, mode="image", constraints={"tags": ["palette"]},
                     image={"name": "palette-lab", "file": str(image)})  # fmt: skip
        with Deployment(parse_plan(data), state_dir=tmp_path / "state") as deployment:
            report = deployment.apply()
            assert report.ok, report.failures()
            [node] = report.nodes
            assert node.address == address
            assert [e["rung"] for e in node.evidence][-4:] == ["address", "ssh_banner", "host_key", "ssh_session"]
            [machine] = sim.state()["machines"].values()
            assert machine["status_name"] == "Deployed" and machine["distro_series"] == "palette-lab"
            console = (work / f"{machine['system_id']}.console.log").read_text()
            assert "image: configured from the seed" in console, "the guest took MAAS's user-data as its seed"
            assert read_install_state(work / f"{machine['system_id']}.raw") is not None, "the image is on its disk"
            deployment.destroy()
        [machine] = sim.state()["machines"].values()
        assert machine["status_name"] == "Ready"
        assert not (work / f"{machine['system_id']}.guest.json").exists(), "the release stopped the guest"


#: The simulator's on-release hook in the bmc test: what the machine's BMC shows at the moment MAAS releases it.
BMC_AT_RELEASE = r"""
import json, os, sushy
from sushy.auth import BasicAuth
e = os.environ
root = sushy.Sushy(e["SNAP_URL"], auth=BasicAuth(e["SNAP_USER"], e["SNAP_PASS"]), verify=e["SNAP_CA"])
system = root.get_system(e["SNAP_SYSTEM"])
value = lambda v: str(getattr(v, "value", v))
with open(e["SNAP_OUT"], "w") as out:
    json.dump({"enabled": value(system.boot.enabled), "target": value(system.boot.target),
               "inserted": [m.identity for m in system.virtual_media.get_members() if m.inserted]}, out)
"""


def _boot_and_media(system: Any) -> dict[str, Any]:
    value = lambda v: str(getattr(v, "value", v))  # noqa: E731
    return {"enabled": value(system.boot.enabled), "target": value(system.boot.target),
            "inserted": [m.identity for m in system.virtual_media.get_members() if m.inserted]}  # fmt: skip


@pytest.fixture(scope="module")
def redfish(lab_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedfishLab]:
    name, mac, address = BMC_NODE
    with RedfishLab([RedfishNode(name, mac, address)], install_delay_s=2,
                    workdir=tmp_path_factory.mktemp("maas-redfish")) as running:  # fmt: skip
        yield running


def _redfish_machine(redfish: RedfishLab) -> dict[str, Any]:
    """The simulator's machine whose power parameters name the lab's Redfish BMC (as MAAS's redfish driver)."""
    name, mac, address = BMC_NODE
    bmc = redfish.bmc(name)
    port = int(bmc.url.rsplit(":", 1)[1])
    return {"hostname": "rack-r1", "mac": mac, "address": address, "tags": ["palette"], "power_type": "redfish",
            "power_parameters": {"power_address": f"127.0.0.1:{port}", "power_user": redfish.username,
                                 "power_pass": redfish.password, "node_id": bmc.system_id}}  # fmt: skip


def _redfish_hosts(redfish: RedfishLab) -> list[dict[str, Any]]:
    name, _, address = BMC_NODE
    return [{"name": name, "address": f"{address}/24", "hostname": "rack-r1", "bmc_fingerprint": redfish.fingerprint}]


def test_bmc_mode_allocates_through_maas_and_installs_through_the_bmc(redfish: RedfishLab, tmp_path: Path) -> None:
    name, mac, address = BMC_NODE
    bmc = redfish.bmc(name)
    machine = _redfish_machine(redfish)
    at_release = tmp_path / "bmc-at-release.json"
    snapshot = {"argv": [sys.executable, "-c", BMC_AT_RELEASE], "timeout_s": 60,
                "env": {"SNAP_URL": bmc.url, "SNAP_USER": bmc.username, "SNAP_PASS": bmc.password,
                        "SNAP_CA": str(bmc.cert_path), "SNAP_SYSTEM": bmc.system_path, "SNAP_OUT": str(at_release)}}
    config = {"machines": [machine], "on_release": snapshot}
    system = sushy.Sushy(bmc.url, auth=BasicAuth(bmc.username, bmc.password), verify=str(bmc.cert_path))
    with start_maas_simulator(tmp_path / "sim", config=config, knobs={"deploy_delay_s": 0}) as sim:
        data = _plan(sim, tmp_path, address, mode="bmc", hosts=_redfish_hosts(redfish),
                     media_server={"bind": "127.0.0.1:0"}, min_command_interval_s=0.1)  # fmt: skip
        with Deployment(parse_plan(data), state_dir=tmp_path / "state") as deployment:
            report = deployment.apply()
            assert report.ok, report.failures()
            [node] = report.nodes
            assert (node.status, node.address) == ("ready", address)
            assert [e["rung"] for e in node.evidence][-4:] == ["address", "ssh_banner", "host_key", "ssh_session"]
            [held] = sim.state()["machines"].values()
            assert held["status_name"] == "Allocated" and held["allocations"] == 1, "allocated, never deployed by MAAS"
            installed = read_install_state(redfish.disk(name))
            assert installed is not None and installed.count == 1
            deployment.destroy(purge_media=True)
        [held] = sim.state()["machines"].values()
        assert held["status_name"] == "Ready", "released"
        server = system.get_system(bmc.system_path)
        assert server.power_state == sushy.POWER_STATE_OFF
        assert _boot_and_media(server)["inserted"] == [], "media ejected"

        # Destroyed while the installer's boot is still set up (no QEMU boot: the machine stays off): the media
        # must be ejected and the override cleared through the BMC *before* MAAS releases the machine, which the
        # simulator's on-release hook reads off the BMC while the release is being answered.
        with Deployment(parse_plan(data), state_dir=tmp_path / "state-2") as deployment:
            report = deployment.apply(until="boot_once_from_cd")
            assert report.ok, report.failures()
            set_up = _boot_and_media(system.get_system(bmc.system_path))
            assert set_up["target"] == "Cd" and set_up["inserted"], set_up  # the emulator keeps a Once as Continuous
            at_release.unlink(missing_ok=True)
            deployment.destroy(purge_media=True)
        [held] = sim.state()["machines"].values()
        assert held["status_name"] == "Ready" and held["allocations"] == 2
    restored = _boot_and_media(system.get_system(bmc.system_path))
    # sushy-tools' emulator refuses "Disabled": the provider then sets the disk, continuously (see its Redfish BMC).
    assert restored["enabled"] in ("Disabled", "Continuous") and restored["target"] in ("None", "Hdd"), restored
    assert restored["inserted"] == [], "media ejected"
    assert json.loads(at_release.read_text()) == restored, "the BMC was restored only after MAAS released it"


# ------------------------------------------------------------------------------------------------ bmc mode, IPMI

#: The simulator's on-release hook in the IPMI test: what the machine's chassis shows at the moment MAAS releases it.
CHASSIS_AT_RELEASE = r"""
import json, os
from pathlib import Path
from bmclab import chassis
node = Path(os.environ["SNAP_NODE_DIR"])
with open(os.environ["SNAP_OUT"], "w") as out:
    json.dump({"running": chassis.guest_running(node), "boot": chassis.load_state(node).boot}, out)
"""


def test_bmc_mode_installs_an_ipmi_machine_from_media_the_operator_attached(lab_ready: None, tmp_path: Path) -> None:
    name, mac, address = IPMI_NODE
    # The operator racked the machine with the appliance ISO in its CD drive; the node's seed comes later.
    node = NodeConfig(name=name, mac=mac, disk=create_disk(tmp_path / "disk.raw", "300G"), install_delay_s=2,
                      console_dir=tmp_path / "console", iso=APPLIANCE_ISO)  # fmt: skip
    with IpmiBmc(node, username=IPMI_USER, password=IPMI_PASSWORD, workdir=tmp_path / "bmc") as bmc:

        def boot_sets() -> list[str]:
            return [e["what"] for e in bmc.chassis_state()["events"] if e["what"].startswith("set boot")]

        machine = {"hostname": "rack-i1", "mac": mac, "address": address, "tags": ["palette"], "power_type": "ipmi",
                   "power_parameters": {"power_address": f"{bmc.address}:{bmc.port}", "power_user": IPMI_USER,
                                        "power_pass": IPMI_PASSWORD, "power_driver": "LAN_2_0"}}  # fmt: skip
        at_release = tmp_path / "chassis-at-release.json"
        snapshot = {"argv": [sys.executable, "-c", CHASSIS_AT_RELEASE], "timeout_s": 30,
                    "env": {"SNAP_NODE_DIR": str(bmc.node_dir), "SNAP_OUT": str(at_release)}}  # fmt: skip
        state = tmp_path / "state"
        with start_maas_simulator(tmp_path / "sim", config={"machines": [machine], "on_release": snapshot},
                                  knobs={"deploy_delay_s": 0}) as sim:  # fmt: skip
            hosts = [{"name": name, "address": f"{address}/24", "hostname": "rack-i1", "media": "preinserted"}]
            data = _plan(sim, tmp_path, address, mode="bmc", hosts=hosts, media_server={"bind": "127.0.0.1:0"},
                         min_command_interval_s=0.1)  # fmt: skip
            with Deployment(parse_plan(data), state_dir=state) as deployment:
                # 1. Allocated through MAAS; the seed is rendered and the node stops before its BMC is touched.
                first = deployment.apply()
                [stopped] = first.nodes
                assert (stopped.status, stopped.phase) == ("failed", "insert_media"), stopped
                message = stopped.error or ""
                assert "attach the appliance ISO and this node's seed" in message, message
                assert "run apply again" in message
                seed = Path(message.split(" at ", 1)[1].split(":", 1)[0])
                assert seed.is_file()
                [held] = sim.state()["machines"].values()
                assert held["status_name"] == "Allocated" and held["allocations"] == 1
                assert bmc.chassis_state()["power_on_count"] == 0 and boot_sets() == [], "the BMC was not touched"

                # 2. The operator attaches the seed (a USB stick written with it) next to the ISO.
                stick = tmp_path / "usb-seed.iso"
                stick.write_bytes(seed.read_bytes())
                bmc.insert_media(APPLIANCE_ISO, stick)
                report = deployment.apply()
                assert report.ok, report.failures()
                [ready] = report.nodes
                assert (ready.status, ready.address) == ("ready", address)
                assert [e["rung"] for e in ready.evidence][-4:] == ["address", "ssh_banner", "host_key", "ssh_session"]
                [held] = sim.state()["machines"].values()
                assert (held["status_name"], held["allocations"]) == ("Allocated", 1), "the same, never deployed"
                installed = read_install_state(node.disk)
                assert installed is not None and (installed.count, installed.hostname) == (1, name)
                consoles = sorted(p.name for p in (tmp_path / "console").glob(f"{name}-boot*.log"))
                assert [c.rsplit("-", 1)[-1] for c in consoles] == ["cd.log", "disk.log"], consoles
                assert boot_sets()[:2] == ["set boot cdrom", "set boot default"], "once from the CD, then the disk"
                chassis = bmc.chassis_state()
                assert chassis["power_on_count"] == 2 and chassis["boot_mode"] == "disk", chassis
                assert bmc.active_sessions() == 0, "every IPMI session was closed"

                deployment.destroy()
            [held] = sim.state()["machines"].values()
            assert held["status_name"] == "Ready" and held["allocations"] == 1, "released, allocated once ever"
            assert find_media_server(state / "providers" / "maas" / "bmc" / "media-server") is None
        # Left as found: off, no boot override, the operator's media where the operator put it, no session open;
        # and so already when MAAS released the machine (the on-release hook's reading).
        assert bmc.wait_guest_stopped(60), "destroy powers the machine off"
        assert boot_sets()[-1] == "set boot none", boot_sets()
        assert json.loads(at_release.read_text()) == {"running": False, "boot": "none"}, "restored before release"
        assert (bmc.node.iso, bmc.node.seed) == (APPLIANCE_ISO, stick)
        assert bmc.active_sessions() == 0
        assert read_install_state(node.disk).count == 1  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------------ the contract


@pytest.fixture(scope="module")
def redfish_maas(redfish: RedfishLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MaasSimulatorHandle]:
    """One simulator for the contract's tests, its machine the lab's Redfish server (reset before each test)."""
    with start_maas_simulator(tmp_path_factory.mktemp("maas-contract"), machines=[_redfish_machine(redfish)],
                              knobs={"deploy_delay_s": 0}) as sim:  # fmt: skip
        yield sim


class TestMaasBmcContract(ProviderContract):
    """The core's provider contract for the bmc mode (allocated lifecycle, boot from media): allocation and release
    through MAAS, power, the boot override and virtual media through the Redfish BMC MAAS's power parameters name."""

    @pytest.fixture
    def plan(self, redfish: RedfishLab, redfish_maas: MaasSimulatorHandle, tmp_path: Path) -> DeploymentPlan:
        redfish_maas.reset(deploy_delay_s=0)
        _, _, address = BMC_NODE
        return parse_plan(_plan(redfish_maas, tmp_path, address, mode="bmc", hosts=_redfish_hosts(redfish),
                                media_server={"bind": "127.0.0.1:0"}, min_command_interval_s=0.1))  # fmt: skip

    @pytest.fixture
    def make_provider(self, plan: DeploymentPlan, tmp_path: Path) -> Iterator[Callable[[], object]]:
        def build() -> object:
            context = ProviderContext(deployment=plan.name, state_dir=tmp_path / "provider",
                                      log=get_logger("palette_provision_maas"), nodes=tuple(plan.node_specs()))
            return create_provider("maas", plan.platform_settings, context)

        yield build
        stop_media_server(tmp_path / "provider" / "bmc" / "media-server")  # a test that failed midway

    @pytest.fixture
    def boot_device_of(self, redfish: RedfishLab) -> Callable[[Machine], str | None]:
        """What the BMC says the next boot uses."""
        bmc = redfish.bmc(BMC_NODE[0])
        return lambda machine: bmc.next_boot()
