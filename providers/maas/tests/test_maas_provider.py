"""The MAAS provider's image mode against the MAAS region simulator (no QEMU here: tests/test_maas_lab.py boots).

The simulator (palette_provision.testing.maas) checks every OAuth field, runs machines through MAAS's statuses and
keeps a history the tests read: allocations per machine (ever), deploys, releases, uploads. Readiness stops at the
address rung here (no SSH), so each test is about MAAS: allocate, upload, deploy, release, and their failures.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from palette_provision.errors import AuthenticationError, ConfigurationError, PlanError, TLSVerificationError
from palette_provision.log import get_logger
from palette_provision.media_server import stop_media_server
from palette_provision.pipeline import Deployment
from palette_provision.plan import DeploymentPlan, parse_plan
from palette_provision.provider import Machine, ProviderContext
from palette_provision.registry import create_provider
from palette_provision.testing.contract import ProviderContract
from palette_provision.testing.maas import MaasSimulatorHandle, start_maas_simulator
from palette_provision.waiting import Backoff, wait_for
from structlog.testing import capture_logs

KEY_ENV = "PP_MAAS_TEST_KEY"
IMAGE_SIZE = 3 * (1 << 20) + 12345  # not a multiple of the 4 MiB chunk... nor of anything
CHUNK = 1 << 20  # the upload tests' image.chunk_size: IMAGE_SIZE is then four PUTs
PUTS = 4
STATIC = {"mode": "static", "gateway": "10.251.0.1"}
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


def _chunked(data: dict[str, Any]) -> dict[str, Any]:
    data["platform"]["image"]["chunk_size"] = CHUNK
    return data


def test_an_upload_cut_mid_way_resumes_where_maas_stopped(
    fresh: MaasSimulatorHandle, image: Path, tmp_path: Path
) -> None:
    # The third PUT's chunk is stored, then the connection is cut before MAAS answers: the client must ask MAAS how
    # much it holds and go on from there, neither re-sending that chunk nor starting again.
    fresh.set_knobs(drop_upload_skip=2, drop_upload_next=1, drop_upload_mode="after_append")
    data = _chunked(plan_data(fresh, image, tmp_path))
    with Deployment(parse_plan(data), state_dir=tmp_path / "state") as deployment:
        report = deployment.apply()
        assert report.ok, report.failures()
    uploads = fresh.state()["uploads"]
    assert uploads["dropped"] == 1 and uploads["completed"] == 1
    assert uploads["bytes"] == IMAGE_SIZE, "every byte stored once: nothing re-sent after the cut"
    assert uploads["puts"] == PUTS, "one PUT per chunk, the cut one included"


def _partial_upload(sim: MaasSimulatorHandle, image: Path, work: Path, chunks: int) -> None:
    """An earlier run's upload, stopped after ``chunks`` chunks: the resource exists, incomplete."""
    from palette_provision_maas._client import MaasClient

    head = work / "head.raw"
    head.write_bytes(image.read_bytes()[: chunks * CHUNK])
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    with MaasClient(sim.url, sim.api_key_secret()) as client:
        resource = client.create_boot_resource("custom/palette-test", "amd64/generic", filetype="ddraw",
                                               sha256=digest, size=IMAGE_SIZE)  # fmt: skip
        [pending] = [f for f in resource.files if f.upload_uri]
        client.upload_chunks(str(pending.upload_uri), head, chunk_size=CHUNK)


def test_an_earlier_runs_incomplete_upload_is_completed_not_restarted(
    fresh: MaasSimulatorHandle, image: Path, tmp_path: Path
) -> None:
    _partial_upload(fresh, image, tmp_path, chunks=2)
    before = fresh.state()["uploads"]
    assert (before["puts"], before["bytes"], before["completed"]) == (2, 2 * CHUNK, 0)
    with Deployment(parse_plan(_chunked(plan_data(fresh, image, tmp_path))),
                    state_dir=tmp_path / "state") as deployment:  # fmt: skip
        report = deployment.apply(until="deploy_image")
        assert report.ok, report.failures()
    uploads = fresh.state()["uploads"]
    assert uploads["completed"] == 1 and uploads["bytes"] == IMAGE_SIZE, "the rest sent, the first 2 MiB not again"
    assert uploads["puts"] == PUTS and len(fresh.state()["boot_resources"]) == 2, "the same resource, completed"


@pytest.mark.parametrize(("late", "file_after"), [(2, "replaced"), (3, "emptied")],
                         ids=["too-much-data", "sha-mismatch"])
def test_a_killed_runs_chunk_landing_after_the_resume_was_read_restarts_the_upload(
    fresh: MaasSimulatorHandle, image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, late: int,
    file_after: str,
) -> None:
    # A PUT appends at MAAS's end of file and names no offset: a chunk an earlier, killed run had in flight can land
    # after this run read where to resume. Chunk 3 landing late makes this run's chunk 3 too much data; the tail
    # landing late fills the file to its size in the wrong order (SHA-256 mismatch, MAAS empties the file).
    from palette_provision_maas._client import MaasClient

    _partial_upload(fresh, image, tmp_path, chunks=2)
    orphan = tmp_path / "orphan.raw"
    orphan.write_bytes(image.read_bytes()[late * CHUNK:(late + 1) * CHUNK])
    original = MaasClient.upload_chunks
    landed: list[int] = []

    def late_chunk_first(self: MaasClient, upload_uri: str, path: Path, **kwargs: Any) -> int:
        if not landed:
            landed.append(original(self, upload_uri, orphan, chunk_size=CHUNK))
        return original(self, upload_uri, path, **kwargs)

    monkeypatch.setattr(MaasClient, "upload_chunks", late_chunk_first)
    with capture_logs() as events, Deployment(parse_plan(_chunked(plan_data(fresh, image, tmp_path))),
                                              state_dir=tmp_path / "state") as deployment:  # fmt: skip
        report = deployment.apply(until="deploy_image")
    assert report.ok, report.failures()
    assert landed, "the late chunk was sent"
    [restart] = [e for e in events if e["event"] == "maas_image_upload_restart"]
    assert restart["file"] == file_after and restart["log_level"] == "warning"
    state = fresh.state()
    assert state["uploads"]["completed"] == 1 and state["uploads"]["sha_mismatches"] == (file_after == "emptied")
    uploaded = [r for r in state["boot_resources"] if r["name"] == "custom/palette-test"]
    assert len(uploaded) == 1 and uploaded[0]["files"][-1]["complete"], "one resource, complete"
    assert len(state["deploys"]) == 2, "both machines deployed from it"


def test_a_dhcp_node_takes_the_address_maas_reports(fresh: MaasSimulatorHandle, image: Path, tmp_path: Path) -> None:
    data = plan_data(fresh, image, tmp_path)
    data["nodes"] = {**data["nodes"], "count": 1, "network": {"mode": "dhcp"}}
    with Deployment(parse_plan(data), state_dir=tmp_path / "state") as deployment:
        report = deployment.apply()
        assert report.ok, report.failures()
    [node] = report.nodes
    [machine] = [m for m in fresh.state()["machines"].values() if m["status_name"] == "Deployed"]
    assert machine["ip_addresses"] == [machine["address"]] and node.address == machine["address"]
    assert node.address_source == "platform", "MAAS's ip_addresses, not the plan"


# --------------------------------------------------------------------------------------------- the image, checked


def test_an_image_file_that_is_not_there_is_named_by_validate(
    fresh: MaasSimulatorHandle, image: Path, tmp_path: Path
) -> None:
    data = plan_data(fresh, image, tmp_path)
    data["platform"]["image"]["file"] = str(tmp_path / "no-such-image.raw")
    with Deployment(parse_plan(data), state_dir=tmp_path / "state") as deployment, pytest.raises(PlanError) as info:
        deployment.apply()
    assert [(i.path, "no-such-image.raw" in i.message) for i in info.value.issues] == [("platform.image.file", True)]
    assert fresh.state()["requests"] == {}, "found offline: MAAS was not asked anything"


def test_no_file_and_no_image_in_maas_is_a_preflight_error_naming_the_image(
    fresh: MaasSimulatorHandle, image: Path, tmp_path: Path
) -> None:
    data = plan_data(fresh, image, tmp_path)
    data["platform"]["image"] = {"name": "palette-missing"}
    deployment = Deployment(parse_plan(data), state_dir=tmp_path / "state")
    with deployment, pytest.raises(ConfigurationError) as info:
        deployment.apply()
    assert info.value.field == "platform.image.file" and "custom/palette-missing" in str(info.value)
    assert allocations(fresh) == {}


def test_a_complete_image_of_that_name_with_another_digest_stops_before_allocating(
    fresh: MaasSimulatorHandle, image: Path, tmp_path: Path
) -> None:
    from palette_provision_maas._client import MaasClient

    other = tmp_path / "someone-elses.raw"
    other.write_bytes(os.urandom(70_000))
    with MaasClient(fresh.url, fresh.api_key_secret()) as client:
        resource = client.create_boot_resource("custom/palette-test", "amd64/generic", filetype="ddraw",
                                               sha256=hashlib.sha256(other.read_bytes()).hexdigest(), size=70_000)
        client.upload_chunks(str(resource.files[0].upload_uri), other)
    deployment = Deployment(parse_plan(plan_data(fresh, image, tmp_path)), state_dir=tmp_path / "state")
    with deployment, pytest.raises(ConfigurationError) as info:
        deployment.apply()
    message = str(info.value)
    assert info.value.field == "platform.image.name"
    assert "another image" in message and "rename platform.image.name, or delete it in MAAS" in message
    assert hashlib.sha256(image.read_bytes()).hexdigest() in message, "the plan's digest, to compare with MAAS's"
    assert allocations(fresh) == {} and fresh.state()["uploads"]["completed"] == 1, "nothing allocated or replaced"


# --------------------------------------------------------------------------------------------- which machines


def test_an_explicit_machine_and_merged_constraints_pick_those_machines_marked_as_ours(
    fresh: MaasSimulatorHandle, image: Path, tmp_path: Path
) -> None:
    fresh.add_machine(hostname="spare2", cpu_count=2, memory=4096, tags=["spare"], mac="52:54:00:5e:09:11")
    rack3 = fresh.machine("rack3")["system_id"]
    data = plan_data(fresh, image, tmp_path, constraints={"tags": ["palette"], "cpu_count": 4, "mem": 4096})
    # m-2's own constraints over the platform's: its tag and CPU count, the platform's memory. Alone, its
    # constraints would take spare1 (2 GiB); the platform's alone, rack1.
    data["nodes"] = {"size": "small", "install_disk": "/dev/sda", "network": STATIC,
                     "hosts": [{"name": "m-1", "address": "10.251.0.181/24", "system_id": rack3},
                               {"name": "m-2", "address": "10.251.0.182/24",
                                "constraints": {"tags": ["spare"], "cpu_count": 2}}]}  # fmt: skip
    with Deployment(parse_plan(data), state_dir=tmp_path / "state") as deployment:
        assert deployment.apply(until="acquire").ok
        log = fresh.state()["allocation_log"]
        deployment.destroy()
    assert sorted((e["agent_name"], e["hostname"]) for e in log) == [
        ("palette-provision/maas-test/m-1", "rack3"), ("palette-provision/maas-test/m-2", "spare2")]
    assert all(e["comment"].startswith("palette-provision deployment maas-test: node m-") for e in log), log


def test_a_machine_named_by_two_hosts_is_refused_offline(
    fresh: MaasSimulatorHandle, image: Path, tmp_path: Path
) -> None:
    data = plan_data(fresh, image, tmp_path)
    rack1 = fresh.machine("rack1")["system_id"]
    data["nodes"] = {"size": "small", "install_disk": "/dev/sda", "network": STATIC,
                     "hosts": [{"name": "m-1", "address": "10.251.0.181/24", "hostname": "rack2"},
                               {"name": "m-2", "address": "10.251.0.182/24", "system_id": rack1},
                               {"name": "m-3", "address": "10.251.0.183/24", "hostname": "rack2"},
                               {"name": "m-4", "address": "10.251.0.184/24", "system_id": rack1}]}  # fmt: skip
    with Deployment(parse_plan(data), state_dir=tmp_path / "state") as deployment, pytest.raises(PlanError) as info:
        deployment.apply()
    found = [(i.path, i.message) for i in info.value.issues]
    assert found == [("nodes.hosts[2]", "rack2 is named by nodes.hosts[0] too"),
                     ("nodes.hosts[3]", f"{rack1} is named by nodes.hosts[1] too")], found  # fmt: skip
    assert fresh.state()["requests"] == {}


# --------------------------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MaasSimulatorHandle]:
    with start_maas_simulator(tmp_path_factory.mktemp("maas-tls"), machines=MACHINES[:2], tls=True) as handle:
        yield handle


def _tls_plan(sim: MaasSimulatorHandle, image: Path, work: Path, **platform: Any) -> DeploymentPlan:
    os.environ["PP_MAAS_TLS_KEY"] = sim.api_key
    data = plan_data(sim, image, work, api_key="env:PP_MAAS_TLS_KEY", **platform)
    data["nodes"] = {**data["nodes"], "count": 1, "network": {**data["nodes"]["network"],
                                                              "addresses": ["10.251.0.181/24"]}}  # fmt: skip
    return parse_plan(data)


def test_tls_insecure_is_logged_and_a_pinned_fingerprint_is_checked(
    tls_sim: MaasSimulatorHandle, image: Path, tmp_path: Path
) -> None:
    assert tls_sim.scheme == "https" and tls_sim.cert_sha256
    with capture_logs() as events, Deployment(_tls_plan(tls_sim, image, tmp_path / "a", tls="insecure"),
                                              state_dir=tmp_path / "a" / "state") as deployment:  # fmt: skip
        assert deployment.apply(until="acquire").ok
        deployment.destroy()
    assert [e.get("url") for e in events if e["event"] == "maas_tls_insecure"] == [tls_sim.url]

    with Deployment(_tls_plan(tls_sim, image, tmp_path / "b", fingerprint=tls_sim.cert_sha256),
                    state_dir=tmp_path / "b" / "state") as deployment:  # fmt: skip
        assert deployment.apply(until="acquire").ok, "the pinned certificate is the region's"
        deployment.destroy()

    requests = sum(tls_sim.state()["requests"].values())
    wrong = "".join(reversed(tls_sim.cert_sha256))
    with Deployment(_tls_plan(tls_sim, image, tmp_path / "c", fingerprint=wrong),
                    state_dir=tmp_path / "c" / "state") as deployment:  # fmt: skip
        with pytest.raises(TLSVerificationError) as info:
            deployment.apply()
        assert deployment.journal.resources() == []
    assert "MAAS" in str(info.value)
    assert sum(tls_sim.state()["requests"].values()) == requests, "refused in the handshake: no request reached MAAS"


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


def test_constraints_maas_cannot_read_are_named_at_preflight(
    fresh: MaasSimulatorHandle, image: Path, tmp_path: Path
) -> None:
    # MAAS answers 400 to a tag (zone, pool) it does not have: the plan's field is named, nothing is allocated.
    data = plan_data(fresh, image, tmp_path, constraints={"tags": ["no-such-tag"]})
    deployment = Deployment(parse_plan(data), state_dir=tmp_path / "state")
    with deployment, pytest.raises(ConfigurationError) as info:
        deployment.apply()
    assert info.value.field == "platform.constraints" and "No such tag" in str(info.value), str(info.value)
    assert allocations(fresh) == {}


def test_too_few_machines_for_all_nodes_at_once_are_named_at_preflight(
    fresh: MaasSimulatorHandle, image: Path, tmp_path: Path
) -> None:
    # Each node's dry run alone finds a machine (rack1, every time); the three racks cannot serve four nodes.
    data = plan_data(fresh, image, tmp_path)
    data["nodes"] = {**data["nodes"], "count": 4, "network": {
        **data["nodes"]["network"], "addresses": [f"10.251.0.{181 + i}/24" for i in range(4)]}}  # fmt: skip
    deployment = Deployment(parse_plan(data), state_dir=tmp_path / "state")
    with deployment, pytest.raises(ConfigurationError) as info:
        deployment.apply()
    assert info.value.field == "platform.constraints"
    assert "for 3 of the 4 nodes to allocate: m-4 would get none" in str(info.value)
    assert allocations(fresh) == {}, "found before any machine was taken"


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


def test_killed_during_the_image_upload_the_rerun_sends_only_the_rest(
    fresh: MaasSimulatorHandle, image: Path, tmp_path: Path
) -> None:
    # Each PUT waits 0.5 s at MAAS: the run is SIGKILLed once MAAS stored a chunk, in the middle of the upload.
    fresh.set_knobs(latency_s=0.5, latency_prefix="/MAAS/api/2.0/boot-resources/100/upload/")
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(yaml.safe_dump(_chunked(plan_data(fresh, image, tmp_path))))
    run = subprocess.Popen([sys.executable, "-m", "palette_provision", "apply", str(plan_path)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(lambda: fresh.state()["uploads"]["puts"], what="MAAS to store a first chunk", timeout=60,
                 until=lambda puts: puts >= 1, backoff=Backoff(initial=0.05, maximum=0.05, jitter=0.0))  # fmt: skip
    finally:
        run.kill()
        run.wait(timeout=30)
    # The PUT in flight at the kill may still land (MAAS had its body): this test is about what the re-run sends once
    # it has, so it waits until MAAS's count stops moving. One landing after the re-run read where to resume is
    # test_a_killed_runs_chunk_landing_after_the_resume_was_read_restarts_the_upload.
    seen: list[int] = []

    def unchanged(puts: int) -> bool:
        seen.append(puts)
        return len(seen) >= 2 and seen[-1] == seen[-2]

    wait_for(lambda: fresh.state()["uploads"]["puts"], what="the PUT in flight at the kill to land", timeout=30,
             until=unchanged, backoff=Backoff(initial=0.75, maximum=0.75, jitter=0.0))  # fmt: skip
    cut = fresh.state()["uploads"]
    assert cut["completed"] == 0 and 1 <= cut["puts"] < PUTS, f"not killed mid-upload: {cut}"
    fresh.set_knobs(latency_s=0.0)
    applied = subprocess.run([sys.executable, "-m", "palette_provision", "apply", str(plan_path)],
                             capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert applied.returncode == 0, applied.stdout[-2000:] + applied.stderr[-2000:]
    state = fresh.state()
    assert sorted(allocations(fresh).values()) == [1, 1], "one allocation per node, across both runs"
    uploads = state["uploads"]
    assert uploads["completed"] == 1 and uploads["bytes"] == IMAGE_SIZE, "no stored byte sent twice"
    assert uploads["puts"] <= PUTS + 1, "at most the chunk in flight at the kill sent again"
    assert len(state["deploys"]) == 2
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
