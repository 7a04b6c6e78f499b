"""The MAAS provider end to end on the lab: real QEMU boots behind the MAAS region simulator.

* **image mode**: MAAS "deploys" by running the simulator's on-deploy hook (``bmclab.maas_hook``), which writes the
  uploaded image onto the machine's disk and boots it in QEMU with the deployment's user-data as its seed. The
  readiness ladder then reaches an authenticated SSH session with the host key the seed carried; ``destroy``
  releases the machine, whose on-release hook stops the guest.
* **bmc mode**: the simulator's machine names the lab's Redfish BMC (sushy-tools' emulator) in its power
  parameters. The provider allocates through MAAS, then installs through that BMC exactly as on bare metal: the ISO
  and the seed from the media server by virtual media, one-time CD boot, install, disk boot, SSH. ``destroy`` ejects
  and clears the boot override through the BMC, then releases.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sushy  # type: ignore[import-untyped]
from bmclab.redfish import RedfishLab, RedfishNode
from palette_provision.pipeline import Deployment
from palette_provision.plan import parse_plan
from palette_provision.testing.maas import MaasSimulatorHandle, start_maas_simulator
from pplab import net
from pplab.disk import read_install_state, write_image
from sushy.auth import BasicAuth  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parents[3]
APPLIANCE_ISO = REPO / "lab" / "build" / "appliance.iso"
KEY_ENV, PASSWORD_ENV = "PP_MAAS_LAB_KEY", "PP_MAAS_LAB_NODE_PASSWORD"
# Not the other lab tests' guests (Redfish e2e :02:41-43, IPMI :03:31/:03:51, appliance :00:61).
IMAGE_NODE = ("maas-img1", "52:54:00:5e:04:61", "10.251.0.161")
BMC_NODE = ("maas-bmc1", "52:54:00:5e:04:62", "10.251.0.162")

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


def test_bmc_mode_allocates_through_maas_and_installs_through_the_bmc(redfish: RedfishLab, tmp_path: Path) -> None:
    name, mac, address = BMC_NODE
    bmc = redfish.bmc(name)
    port = int(bmc.url.rsplit(":", 1)[1])
    machine = {"hostname": "rack-r1", "mac": mac, "address": address, "tags": ["palette"], "power_type": "redfish",
               "power_parameters": {"power_address": f"127.0.0.1:{port}", "power_user": redfish.username,
                                    "power_pass": redfish.password, "node_id": bmc.system_id}}  # fmt: skip
    at_release = tmp_path / "bmc-at-release.json"
    snapshot = {"argv": [sys.executable, "-c", BMC_AT_RELEASE], "timeout_s": 60,
                "env": {"SNAP_URL": bmc.url, "SNAP_USER": bmc.username, "SNAP_PASS": bmc.password,
                        "SNAP_CA": str(bmc.cert_path), "SNAP_SYSTEM": bmc.system_path, "SNAP_OUT": str(at_release)}}
    config = {"machines": [machine], "on_release": snapshot}
    system = sushy.Sushy(bmc.url, auth=BasicAuth(bmc.username, bmc.password), verify=str(bmc.cert_path))
    with start_maas_simulator(tmp_path / "sim", config=config, knobs={"deploy_delay_s": 0}) as sim:
        hosts = [{"name": name, "address": f"{address}/24", "hostname": "rack-r1",
                  "bmc_fingerprint": redfish.fingerprint}]  # fmt: skip
        data = _plan(sim, tmp_path, address, mode="bmc", hosts=hosts, media_server={"bind": "127.0.0.1:0"},
                     min_command_interval_s=0.1)  # fmt: skip
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
