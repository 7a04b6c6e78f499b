"""The MAAS provider's image mode against the MAAS region simulator (no QEMU here: tests/test_maas_lab.py boots).

The simulator (palette_provision.testing.maas) checks every OAuth field, runs machines through MAAS's statuses and
keeps a history the tests read: allocations per machine (ever), deploys, releases, uploads. Readiness stops at the
address rung here (no SSH), so each test is about MAAS: allocate, upload, deploy, release, and their failures.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from palette_provision.errors import AuthenticationError, ConfigurationError
from palette_provision.log import get_logger
from palette_provision.media_server import stop_media_server
from palette_provision.pipeline import Deployment
from palette_provision.plan import DeploymentPlan, parse_plan
from palette_provision.provider import Machine, ProviderContext
from palette_provision.registry import create_provider
from palette_provision.testing.contract import ProviderContract
from palette_provision.testing.maas import MaasSimulatorHandle, start_maas_simulator

KEY_ENV = "PP_MAAS_TEST_KEY"
IMAGE_SIZE = 3 * (1 << 20) + 12345  # not a multiple of the 4 MiB chunk... nor of anything
MACHINES = [
    {"hostname": f"rack{i}", "cpu_count": 8, "memory": 16384, "tags": ["palette"], "mac": f"52:54:00:5e:09:{i:02x}",
     "address": f"10.251.0.{180 + i}", "power_type": "ipmi",
     "power_parameters": {"power_address": "10.0.0.9", "power_user": "admin", "power_pass": "bmc-secret-9"}}
    for i in range(1, 4)
] + [{"hostname": "spare1", "cpu_count": 2, "memory": 2048, "tags": ["spare"], "mac": "52:54:00:5e:09:10"}]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MaasSimulatorHandle]:
    with start_maas_simulator(tmp_path_factory.mktemp("maas-sim"), machines=MACHINES,
                              knobs={"deploy_delay_s": 0.2}) as handle:  # fmt: skip
        os.environ[KEY_ENV] = handle.api_key
        yield handle


@pytest.fixture
def fresh(sim: MaasSimulatorHandle) -> MaasSimulatorHandle:
    sim.reset(deploy_delay_s=0.2)
    return sim


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("image") / "palette-appliance.raw"
    path.write_bytes(os.urandom(IMAGE_SIZE))
    return path


def plan_data(sim: MaasSimulatorHandle, image: Path, work: Path, **platform: Any) -> dict[str, Any]:
    iso = work / "unused.iso"
    work.mkdir(parents=True, exist_ok=True)
    iso.write_bytes(b"the image mode boots no ISO")
    os.environ.setdefault("PP_MAAS_NODE_PASSWORD", "maas-node-password-1")
    return {
        "name": "maas-test", "profile": "edge", "iso": {"source": str(iso)},
        "cluster": {"name": "m", "vip": "10.251.0.190", "dns": ["10.251.0.1"],
                    "node_account": {"password": "env:PP_MAAS_NODE_PASSWORD"}},
        "nodes": {"count": 2, "size": "small", "install_disk": "/dev/sda",
                  "network": {"mode": "static", "addresses": ["10.251.0.181/24", "10.251.0.182/24"],
                              "gateway": "10.251.0.1"}},
        "readiness": {"ssh": False, "local_api": False},
        "handoff": {"kind": "inventory", "output_dir": str(work / "out")},
        "timeouts": {"install": 30, "ready": 30},
        "platform": {"provider": "maas", "url": sim.url, "api_key": f"env:{KEY_ENV}", "mode": "image",
                     "image": {"name": "palette-test", "file": str(image)},
                     "constraints": {"tags": ["palette"], "cpu_count": 4}, **platform},
    }  # fmt: skip


def allocations(sim: MaasSimulatorHandle) -> dict[str, int]:
    return {k: v for k, v in sim.state()["allocations"].items() if v}


def test_apply_uploads_once_deploys_with_the_seed_and_destroy_releases(
    fresh: MaasSimulatorHandle, image: Path, tmp_path: Path
) -> None:
    with Deployment(parse_plan(plan_data(fresh, image, tmp_path)), state_dir=tmp_path / "state") as deployment:
        report = deployment.apply()
        assert report.ok, report.failures()
        state = fresh.state()
        deployed = [m for m in state["machines"].values() if m["status_name"] == "Deployed"]
        assert len(deployed) == 2 and allocations(fresh) == {m["system_id"]: 1 for m in deployed}
        for machine in deployed:
            assert (machine["osystem"], machine["distro_series"]) == ("custom", "palette-test")
            assert machine["agent_name"].startswith("palette-provision/maas-test/")
            assert machine["user_data"].startswith("#cloud-config\n") and "maas-node-password-1" not in machine[
                "user_data"], "the seed, with the password hashed"
        [resource] = [r for r in state["boot_resources"] if r["name"] == "custom/palette-test"]
        assert all(f["complete"] for f in resource["files"])
        uploads = state["uploads"]
        assert uploads["bytes"] == IMAGE_SIZE and uploads["completed"] == 1

        again = deployment.apply()
        assert again.ok
        assert fresh.state()["uploads"]["bytes"] == IMAGE_SIZE, "a re-run uploads nothing"
        assert allocations(fresh) == {m["system_id"]: 1 for m in deployed}, "and allocates nothing"

        deployment.destroy()
    after = fresh.state()
    assert all(m["status_name"] == "Ready" and not m["agent_name"] for m in after["machines"].values())
    assert [r["system_id"] for r in after["releases"]] and all(not r["erase"] for r in after["releases"])


def test_a_second_deployment_finds_the_image_and_uploads_nothing(
    fresh: MaasSimulatorHandle, image: Path, tmp_path: Path
) -> None:
    first = plan_data(fresh, image, tmp_path / "a")
    first["nodes"] = {**first["nodes"], "count": 1, "network": {**first["nodes"]["network"],
                                                                "addresses": ["10.251.0.181/24"]}}  # fmt: skip
    with Deployment(parse_plan(first), state_dir=tmp_path / "a" / "state") as deployment:
        assert deployment.apply().ok
    second = {**plan_data(fresh, image, tmp_path / "b"), "name": "maas-test-2"}
    second["nodes"] = {**second["nodes"], "count": 1, "network": {**second["nodes"]["network"],
                                                                  "addresses": ["10.251.0.183/24"]}}  # fmt: skip
    with Deployment(parse_plan(second), state_dir=tmp_path / "b" / "state") as deployment:
        assert deployment.apply().ok
    assert fresh.state()["uploads"]["bytes"] == IMAGE_SIZE, "the image was uploaded once for both"


def test_an_upload_cut_mid_way_resumes_where_maas_stopped(
    fresh: MaasSimulatorHandle, image: Path, tmp_path: Path
) -> None:
    fresh.set_knobs(drop_upload_next=1, drop_upload_after_bytes=1 << 20)
    with Deployment(parse_plan(plan_data(fresh, image, tmp_path)), state_dir=tmp_path / "state") as deployment:
        report = deployment.apply()
        assert report.ok, report.failures()
    uploads = fresh.state()["uploads"]
    assert uploads["dropped"] == 1 and uploads["completed"] == 1
    assert uploads["bytes"] < IMAGE_SIZE + (4 << 20), "resumed from what MAAS held, not from the start"


def test_a_wrong_api_key_is_refused_before_anything_changes(
    fresh: MaasSimulatorHandle, image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer, token, _ = fresh.api_key.split(":")
    monkeypatch.setenv("PP_MAAS_WRONG_KEY", f"{consumer}:{token}:not-the-secret-x")
    data = plan_data(fresh, image, tmp_path, api_key="env:PP_MAAS_WRONG_KEY")
    with Deployment(parse_plan(data), state_dir=tmp_path / "state") as deployment:
        with pytest.raises(AuthenticationError) as info:
            deployment.apply()
        assert deployment.journal.resources() == []
    assert "not-the-secret-x" not in str(info.value) and fresh.url.split("/MAAS")[0] in str(info.value)
    assert allocations(fresh) == {} and fresh.state()["uploads"]["bytes"] == 0


def test_constraints_no_machine_meets_are_named_at_preflight(
    fresh: MaasSimulatorHandle, image: Path, tmp_path: Path
) -> None:
    data = plan_data(fresh, image, tmp_path, constraints={"tags": ["palette"], "mem": 65536})
    deployment = Deployment(parse_plan(data), state_dir=tmp_path / "state")
    with deployment, pytest.raises(ConfigurationError) as info:
        deployment.apply()
    assert info.value.field == "platform.constraints" and "no Ready machine" in str(info.value)
    assert allocations(fresh) == {}, "a dry run allocates nothing"


def test_a_failed_deployment_stops_the_wait_with_maas_words(
    fresh: MaasSimulatorHandle, image: Path, tmp_path: Path
) -> None:
    fresh.set_knobs(fail_deploy=True, fail_deploy_message="Installation failed: curtin could not write the disk")
    data = plan_data(fresh, image, tmp_path)
    data["timeouts"]["install"] = 600  # the failure ends the wait, not the timeout
    with Deployment(parse_plan(data), state_dir=tmp_path / "state") as deployment:
        report = deployment.apply()
        deployment.destroy()
    assert [n.status for n in report.nodes] == ["failed", "failed"]
    error = report.nodes[0].error or ""
    assert "Failed deployment" in error and "curtin could not write the disk" in error
    assert "last event: Node installation failure" in error
    assert all(m["status_name"] == "Ready" for m in fresh.state()["machines"].values()), "destroy released them"


KILL_AFTER_PHASE = r"""
import os, signal, sys
from palette_provision.plan import load_plan
from palette_provision.pipeline import Deployment
phase, node = sys.argv[2], sys.argv[3]
def on_event(event):
    if event.status in ("done", "skipped") and event.phase == phase and event.node == node:
        os.kill(os.getpid(), signal.SIGKILL)
with Deployment(load_plan(sys.argv[1]), on_event=on_event) as d:
    d.apply()
"""


def test_killed_after_every_phase_one_allocation_per_node_ever(
    fresh: MaasSimulatorHandle, image: Path, tmp_path: Path
) -> None:
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(yaml.safe_dump(plan_data(fresh, image, tmp_path)))
    phases = [("preflight", "*"), ("acquire", "m-1"), ("stage_seed", "m-1"),
              ("deploy_image", "m-1"), ("await_deployed", "m-1"), ("await_ready", "m-1")]
    for phase, node in phases:
        killed = subprocess.run([sys.executable, "-c", KILL_AFTER_PHASE, str(plan_path), phase, node],
                                capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
        assert killed.returncode == -9, f"not killed after {phase}: {killed.stderr[-2000:]}"
    applied = subprocess.run([sys.executable, "-m", "palette_provision", "apply", str(plan_path), "--json"],
                             capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert applied.returncode == 0, applied.stdout[-2000:] + applied.stderr[-2000:]
    state = fresh.state()
    assert sorted(allocations(fresh).values()) == [1, 1], "one allocation per node, across seven runs"
    assert len([d for d in state["deploys"]]) == 2, "one deployment per node"
    destroyed = subprocess.run([sys.executable, "-m", "palette_provision", "destroy", str(plan_path)],
                               capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert destroyed.returncode == 0, destroyed.stderr[-2000:]


def test_a_machine_whose_journal_record_was_lost_is_found_by_its_agent_name(
    fresh: MaasSimulatorHandle, image: Path, tmp_path: Path
) -> None:
    plan = parse_plan(plan_data(fresh, image, tmp_path))
    with Deployment(plan, state_dir=tmp_path / "state") as deployment:
        first = deployment.apply(until="acquire")
        assert all(n.status == "ready" for n in first.nodes)
    held = dict(allocations(fresh))
    assert len(held) == 2
    # As if the run had died between MAAS's answer and the journal's write: no record of either machine.
    with sqlite3.connect(tmp_path / "state" / "journal.sqlite") as db:
        db.execute("DELETE FROM steps WHERE phase = 'acquire'")
        db.execute("DELETE FROM resources WHERE kind = 'machine'")
    with Deployment(plan, state_dir=tmp_path / "state") as deployment:
        report = deployment.apply()
        assert report.ok, report.failures()
        assert allocations(fresh) == held, "the same machines, found by agent_name; none allocated twice"
        deployment.destroy()
    assert all(m["status_name"] == "Ready" for m in fresh.state()["machines"].values())


def test_destroy_erases_when_asked(fresh: MaasSimulatorHandle, image: Path, tmp_path: Path) -> None:
    data = plan_data(fresh, image, tmp_path, erase_on_release=True)
    with Deployment(parse_plan(data), state_dir=tmp_path / "state") as deployment:
        assert deployment.apply(until="acquire").nodes
        deployment.destroy()
    releases = fresh.state()["releases"]
    assert len(releases) == 2 and all(r["erase"] and r["quick_erase"] for r in releases)


class TestMaasContract(ProviderContract):
    """The core's provider contract (allocated lifecycle, image deployment), on the MAAS region simulator."""

    @pytest.fixture
    def plan(self, fresh: MaasSimulatorHandle, image: Path, tmp_path: Path) -> DeploymentPlan:
        return parse_plan(plan_data(fresh, image, tmp_path))

    @pytest.fixture
    def make_provider(self, plan: DeploymentPlan, tmp_path: Path) -> Callable[[], object]:
        def build() -> object:
            context = ProviderContext(deployment=plan.name, state_dir=tmp_path / "provider",
                                      log=get_logger("palette_provision_maas"), nodes=tuple(plan.node_specs()))
            return create_provider("maas", plan.platform_settings, context)

        return build

    @pytest.fixture
    def media_file(self, tmp_path: Path) -> Path:
        path = tmp_path / "seed.iso"
        path.write_bytes(b"not staged by the image mode")
        return path

    @pytest.fixture
    def boot_device_of(self) -> Callable[[Machine], str | None]:
        return lambda machine: None


# ------------------------------------------------------------------------------------------------ bmc mode preflight


def bmc_plan(sim: MaasSimulatorHandle, image: Path, work: Path, **host: Any) -> dict[str, Any]:
    data = plan_data(sim, image, work)
    data["nodes"] = {"size": "small", "install_disk": "/dev/sda",
                     "network": {"mode": "static", "gateway": "10.251.0.1"},
                     "hosts": [{"name": "m-1", "address": "10.251.0.181/24", **host}]}  # fmt: skip
    platform = {k: v for k, v in data["platform"].items() if k not in ("image", "mode")}
    data["platform"] = {**platform, "mode": "bmc", "media_server": {"bind": "127.0.0.1:0"}}
    return data


def test_bmc_mode_refuses_a_machine_whose_power_driver_it_cannot_drive(
    fresh: MaasSimulatorHandle, image: Path, tmp_path: Path
) -> None:
    data = bmc_plan(fresh, image, tmp_path, hostname="spare1")  # MAAS's "manual" power driver
    data["platform"]["constraints"] = {}
    deployment = Deployment(parse_plan(data), state_dir=tmp_path / "state")
    with deployment, pytest.raises(ConfigurationError) as info:
        deployment.apply()
    assert info.value.field == "nodes.hosts[0]" and "powered through its manual driver" in str(info.value)
    assert allocations(fresh) == {}


def test_bmc_mode_wants_an_ipmi_machines_media_attached_by_hand(
    fresh: MaasSimulatorHandle, image: Path, tmp_path: Path
) -> None:
    deployment = Deployment(parse_plan(bmc_plan(fresh, image, tmp_path)), state_dir=tmp_path / "state")
    with deployment, pytest.raises(ConfigurationError) as info:
        deployment.apply()
    assert info.value.field == "nodes.hosts[0].media" and "media: preinserted" in str(info.value)
    assert allocations(fresh) == {}
    stop_media_server(tmp_path / "state" / "providers" / "maas" / "bmc" / "media-server")


def test_bmc_power_parameters_become_bmc_settings_with_the_password_kept_secret() -> None:
    from palette_provision.secrets import Secret

    from palette_provision_maas._bmc import bmc_settings
    from palette_provision_maas._settings import MaasNodeSettings, MaasSettings

    settings = MaasSettings.model_validate({"url": "http://maas:5240/MAAS", "api_key": Secret("a:b:c", source="t"),
                                            "mode": "bmc"})  # fmt: skip
    params = {"power_address": "https://10.0.0.7:8443", "power_user": "admin",
              "power_pass": Secret("bmc-pass-7", source="t"), "node_id": "/redfish/v1/Systems/1"}  # fmt: skip
    bmc = bmc_settings("redfish", params, settings=settings, node=MaasNodeSettings(bmc_fingerprint="ab" * 32),
                       where="rack-7")  # fmt: skip
    assert (bmc.protocol, bmc.address, bmc.port) == ("redfish", "10.0.0.7", 8443)
    assert bmc.system_id == "/redfish/v1/Systems/1"
    assert bmc.fingerprint == "ab" * 32 and "bmc-pass-7" not in repr(bmc)
    ipmi = bmc_settings("ipmi", {**params, "power_address": "10.0.0.8"}, settings=settings, node=MaasNodeSettings(),
                        where="rack-8")  # fmt: skip
    assert (ipmi.protocol, ipmi.address, ipmi.port) == ("ipmi", "10.0.0.8", 623)
    with pytest.raises(ConfigurationError, match="virsh driver"):
        bmc_settings("virsh", params, settings=settings, node=MaasNodeSettings(), where="vm-1")
