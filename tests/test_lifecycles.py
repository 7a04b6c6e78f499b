"""Machines we do not create: enrolled servers and allocated machines go through the same core, end to end.

The fake provider plays each lifecycle (see ``palette_provision.testing.fake``); these tests hold the core to what a
bare-metal or MAAS deployment needs before those providers exist: the right chain, the seed in the form the slot
takes, overrides and insertions journaled and undone by ``destroy``, machines released or restored, never deleted.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from palette_provision.errors import PlanError
from palette_provision.journal import Journal
from palette_provision.log import get_logger
from palette_provision.pipeline import Deployment
from palette_provision.plan import parse_plan
from palette_provision.provider import ProviderContext
from palette_provision.report import Event
from palette_provision.steps import NodeStep
from palette_provision.testing.fake import FakeProvider, read_state

from .conftest import base_plan


def plan_for(tmp: Path, lifecycle: str, **platform: Any) -> dict[str, Any]:
    data = base_plan(tmp)
    data["platform"].update(lifecycle=lifecycle, **platform)
    if lifecycle != "created":
        # Machines we do not build: the plan names their disks (the provider cannot).
        data["nodes"]["install_disk"] = "/dev/disk/by-path/pci-0000:00:1f.2-ata-1"
    if lifecycle == "enrolled":
        data["nodes"]["hosts"] = [
            {"name": f"palette-{i + 1}", "bmc": f"bmc-{i + 1}.lab", "bmc_password": "env:PP_TEST_NODE_PASSWORD"}
            for i in range(3)
        ]
    return data


def deploy(tmp: Path, data: dict[str, Any], **kwargs: Any) -> tuple[Any, list[Event], Deployment]:
    events: list[Event] = []
    deployment = Deployment(parse_plan(data, base_dir=tmp), state_dir=tmp / "state", on_event=events.append, **kwargs)
    with deployment:
        report = deployment.apply()
    return report, events, deployment


def ops(tmp: Path) -> list[tuple[str, str | None]]:
    return [(a["op"], a["node"]) for a in read_state(tmp / "platform.json")["actions"]]


# ------------------------------------------------------------------------------------------------- enrolled
def test_enrolled_servers_boot_the_iso_once_with_the_seed_on_a_removable_disk_and_are_restored(tmp_path: Path) -> None:
    report, events, _ = deploy(tmp_path, plan_for(tmp_path, "enrolled"))
    assert report.ok, report.failures()
    phases = [e.phase for e in events if e.node == "palette-2" and e.status == "done"]
    assert phases == ["stage_seed", "acquire", "insert_media", "boot_once_from_cd", "power_on", "await_install",
                      "boot_from_disk", "await_ready"]
    state = read_state(tmp_path / "platform.json")
    server = state["servers"]["bmc-2.lab"]
    assert server["installs"] == 1 and server["power"] == "on" and server["booted_from"] == "disk"
    assert server["slots"] == {"cd0": None, "usb0": None}, "the ISO and the seed were ejected after the install"
    seeds = [a for a in state["actions"] if a["op"] == "insert_media" and a["node"] == "palette-2"]
    assert seeds[0]["slots"] == ["cd0", "usb0"]
    # The seed went to the removable disk as a FAT image (the second slot is no CD).
    staged = [a["locator"] for a in state["actions"] if a["op"] == "stage_media" and a["node"] == "palette-2"]
    assert staged == ["fake://media/palette-2-seed.img"]
    # One-time CD boot, then disk: both recorded for destroy.
    with Journal.open_readonly(tmp_path / "state" / "journal.sqlite", deployment="test-deploy") as journal:
        live = {(r.kind, r.node) for r in journal.resources(live_only=True)}
        machines = [r.data for r in journal.resources() if r.kind == "machine"]
    assert ("boot_override", "palette-2") in live and ("media_insertion", "palette-2") not in live
    assert {m["lifecycle"] for m in machines} == {"enrolled"}

    with Deployment(parse_plan(plan_for(tmp_path, "enrolled"), base_dir=tmp_path), state_dir=tmp_path / "state") as d:
        results = d.destroy()
    by_kind = {(r["kind"], r["node"]): r["result"] for r in results}
    assert by_kind[("machine", "palette-2")] == "restored"
    assert by_kind[("boot_override", "palette-2")] == "cleared"
    after = read_state(tmp_path / "platform.json")
    assert set(after["servers"]) == {"bmc-1.lab", "bmc-2.lab", "bmc-3.lab"}, "enrolled servers are never deleted"
    assert all(s["power"] == "off" and s["boot"] == "disk" and not s["boot_once"] for s in after["servers"].values())
    assert not any(op in ("delete_machine", "release_machine") for op, _ in ops(tmp_path))


def test_an_operator_inserted_iso_is_used_and_never_ejected(tmp_path: Path) -> None:
    report, _, _ = deploy(tmp_path, plan_for(tmp_path, "enrolled", preinserted=["palette-1"]))
    assert report.ok, report.failures()
    state = read_state(tmp_path / "platform.json")
    inserted = [a for a in state["actions"] if a["op"] == "insert_media" and a["node"] == "palette-1"]
    assert [a["slots"] for a in inserted] == [["usb0"]], "only the seed was inserted"
    assert state["servers"]["bmc-1.lab"]["slots"]["cd0"] == {"locator": "operator://palette.iso", "role": "operator-iso"}
    assert state["servers"]["bmc-1.lab"]["installs"] == 1


def test_a_seed_the_platform_cannot_insert_is_handed_to_the_operator_once(tmp_path: Path) -> None:
    # As behind an IPMI BMC: the operator attaches the ISO and the seed. The first run stops that node before any
    # power or boot change, naming the seed's path; the next one goes on, taking the operator's word.
    data = plan_for(tmp_path, "enrolled", preinserted=["palette-1"], operator_seed=["palette-1"])
    report, _, _ = deploy(tmp_path, data)
    [first, *others] = report.nodes
    assert (first.status, first.phase) == ("failed", "insert_media")
    assert "attach the appliance ISO and this node's seed" in (first.error or "") and "run apply again" in (first.error or "")
    seed = Path((first.error or "").split(" at ", 1)[1].split(":", 1)[0])
    assert seed.is_file(), "the path the operator is given holds the seed"
    assert all(n.status == "ready" for n in others), "the other nodes do not wait for this one"
    touched = {a["op"] for a in read_state(tmp_path / "platform.json")["actions"] if a["node"] == "palette-1"}
    assert not touched & {"insert_media", "set_boot_device", "power_on"}, touched

    again, _, _ = deploy(tmp_path, data)
    assert again.ok, again.failures()
    state = read_state(tmp_path / "platform.json")
    assert not [a for a in state["actions"] if a["op"] == "insert_media" and a["node"] == "palette-1"]
    assert state["servers"]["bmc-1.lab"]["installs"] == 1
    assert not seed.exists(), "installed: our copy of the seed is gone"


def test_destroy_after_a_failure_mid_install_ejects_clears_and_powers_off(tmp_path: Path) -> None:
    data = plan_for(tmp_path, "enrolled", never_installs=["palette-3"])
    data["timeouts"]["install"] = 1.5
    report, _, _ = deploy(tmp_path, data)
    assert [n.status for n in report.nodes] == ["ready", "ready", "failed"]
    mid = read_state(tmp_path / "platform.json")["servers"]["bmc-3.lab"]
    assert mid["power"] == "on" and mid["slots"]["cd0"] is not None and mid["slots"]["usb0"] is not None
    with Deployment(parse_plan(data, base_dir=tmp_path), state_dir=tmp_path / "state") as d:
        results = d.destroy()
    undone = [(r["kind"], r["result"]) for r in results if r["node"] == "palette-3"]
    assert ("media_insertion", "ejected") in undone and ("boot_override", "cleared") in undone
    assert ("machine", "restored") in undone
    server = read_state(tmp_path / "platform.json")["servers"]["bmc-3.lab"]
    assert server["power"] == "off" and server["slots"] == {"cd0": None, "usb0": None} and server["boot"] == "disk"
    # Powered off once, before its first resource was undone (the one-time override was used up by the boot, so
    # clearing it changed nothing); each slot ejected; the seed removed from the platform too.
    assert [op for op, node in ops(tmp_path) if node == "palette-3"][-4:] == [
        "power_off", "eject_media", "eject_media", "unstage_media"
    ]


def test_enrolled_nodes_need_their_bmc_named_with_its_field_path(tmp_path: Path) -> None:
    data = plan_for(tmp_path, "enrolled")
    del data["nodes"]["hosts"][1]["bmc"]
    data["nodes"]["hosts"][2]["bmc_password"] = "plain-text"
    data["nodes"]["hosts"][0]["colour"] = "blue"
    with pytest.raises(PlanError) as info:
        parse_plan(data, base_dir=tmp_path)
    paths = {i.path for i in info.value.issues}
    assert {"nodes.hosts[2].bmc_password", "nodes.hosts[0].colour"} <= paths
    assert "plain-text" not in str(info.value)
    del data["nodes"]["hosts"][2]["bmc_password"], data["nodes"]["hosts"][0]["colour"]
    with pytest.raises(PlanError) as info, Deployment(parse_plan(data, base_dir=tmp_path), state_dir=tmp_path / "s") as d:
        d.check()
    assert [i.path for i in info.value.issues] == ["nodes.hosts[1].bmc"]
    assert not (tmp_path / "s").exists()


def test_per_node_settings_reach_the_provider_on_the_node(tmp_path: Path) -> None:
    data = plan_for(tmp_path, "enrolled")
    data["nodes"]["hosts"][1]["mac"] = "52:54:00:aa:bb:cc"
    data["nodes"]["hosts"][1]["address"] = "10.251.0.42/24"
    del data["nodes"]["network"]["addresses"]
    data["nodes"]["hosts"][0]["address"] = "10.251.0.41/24"
    data["nodes"]["hosts"][2]["address"] = "10.251.0.43/24"
    node = parse_plan(data, base_dir=tmp_path).node_specs()[1]
    assert (node.name, node.static_ip, node.settings.bmc, node.settings.mac) == (
        "palette-2", "10.251.0.42", "bmc-2.lab", "52:54:00:aa:bb:cc"
    )
    assert "env:" in repr(node.settings.bmc_password) or "***" in repr(node.settings.bmc_password)


# ------------------------------------------------------------------------------------------------- allocated
def test_allocated_machines_deploy_an_image_with_the_seed_as_user_data_and_are_released(tmp_path: Path) -> None:
    report, events, _ = deploy(tmp_path, plan_for(tmp_path, "allocated"))
    assert report.ok, report.failures()
    # A pool's machine is acquired before its seed is rendered (phases.ACQUIRE_FIRST).
    assert [e.phase for e in events if e.node == "palette-1" and e.status == "done"] == [
        "acquire", "stage_seed", "deploy_image", "await_deployed", "await_ready"
    ]
    assert not any(e.phase == "stage_media" for e in events), "deploy-image stages no ISO"
    state = read_state(tmp_path / "platform.json")
    ours = {mid: m for mid, m in state["pool"].items() if m.get("owner") == "test-deploy"}
    assert len(ours) == 3 and all(m["deploy"] == "deployed" and m["user_data_sha256"] for m in ours.values())
    assert state["media"] == {}, "user-data is handed over as text, never staged"
    assert not list((tmp_path / "state" / "seeds").glob("*")), "the seed is kept nowhere once deployed"

    with Deployment(parse_plan(plan_for(tmp_path, "allocated"), base_dir=tmp_path), state_dir=tmp_path / "state") as d:
        results = d.destroy()
    assert sorted(r["result"] for r in results if r["kind"] == "machine") == ["released"] * 3
    after = read_state(tmp_path / "platform.json")
    assert all(m.get("owner") is None and m["power"] == "off" for m in after["pool"].values())
    assert len(after["pool"]) == 8, "released, not deleted"


def test_a_failed_deployment_is_reported_with_the_platforms_own_state(tmp_path: Path) -> None:
    report, _, _ = deploy(tmp_path, plan_for(tmp_path, "allocated", deploy_fails=["palette-2"]))
    node = report.nodes[1]
    assert (node.status, node.phase, node.last_state) == ("failed", "await_deployed", "Failed deployment")
    assert "Failed deployment" in (node.error or "")
    assert [n.status for n in (report.nodes[0], report.nodes[2])] == ["ready", "ready"]


def test_a_platform_silent_during_a_deployment_fails_its_node_after_timeouts_unreachable_and_a_rerun_resumes(
    tmp_path: Path,
) -> None:
    data = plan_for(tmp_path, "allocated", unanswered={"palette-2": 3600})
    data["timeouts"]["unreachable"] = 1
    report, _, _ = deploy(tmp_path, data)
    node = report.nodes[1]
    assert (node.status, node.phase) == ("failed", "await_deployed")
    error = node.error or ""
    assert error.startswith("gave up after ") and "to be deployed: every look for 1 s failed" in error, error
    assert error.endswith("last error: TransientError: the fake platform did not answer for palette-2 (unanswered "
                          "knob)")  # fmt: skip
    assert [n.status for n in (report.nodes[0], report.nodes[2])] == ["ready", "ready"]
    # The platform answers again: the next apply waits for the same deployment, deploying and allocating nothing.
    del data["platform"]["unanswered"]
    again, _, _ = deploy(tmp_path, data)
    assert again.ok, again.failures()
    done = [op for op, node_name in ops(tmp_path) if node_name == "palette-2"]
    assert (done.count("allocate_machine"), done.count("deploy_image")) == (1, 1)


def test_a_rerun_finds_allocated_machines_by_the_journal_and_allocates_no_second_one(tmp_path: Path) -> None:
    data = plan_for(tmp_path, "allocated")
    deploy(tmp_path, data)
    report, events, _ = deploy(tmp_path, data)
    assert report.ok
    assert [op for op, _ in ops(tmp_path)].count("allocate_machine") == 3
    assert {e.status for e in events if e.phase == "acquire"} == {"skipped"}


def test_allocated_machines_can_boot_the_iso_instead(tmp_path: Path) -> None:
    data = plan_for(tmp_path, "allocated")
    data["install_method"] = "boot-from-media"
    report, events, _ = deploy(tmp_path, data)
    assert report.ok, report.failures()
    assert "insert_media" in {e.phase for e in events} and "deploy_image" not in {e.phase for e in events}


def test_an_install_method_the_provider_lacks_is_a_plan_problem(tmp_path: Path) -> None:
    data = base_plan(tmp_path)
    data["install_method"] = "deploy-image"
    with pytest.raises(PlanError) as info, Deployment(parse_plan(data, base_dir=tmp_path), state_dir=tmp_path / "s") as d:
        d.apply()
    assert [i.path for i in info.value.issues] == ["install_method"]
    assert not (tmp_path / "platform.json").exists() and not (tmp_path / "s").exists()


# ------------------------------------------------------------------------------------------------- the core
def test_a_node_step_may_anchor_to_any_phase_of_the_chain_even_before_the_machine_exists(tmp_path: Path) -> None:
    seen: list[tuple[str, Any]] = []
    steps = [
        NodeStep("note_seed", after="stage_seed", run=lambda ctx: seen.append((ctx.node.name, ctx.machine)) or None),
        NodeStep("note_deployed", after="await_deployed", run=lambda ctx: {"machine": ctx.machine.id}),
    ]
    report, _, _ = deploy(tmp_path, plan_for(tmp_path, "allocated"), node_steps=steps)
    assert report.ok, report.failures()
    # A pool's machine is acquired before its seed is rendered: the step after stage_seed sees it.
    assert sorted(name for name, machine in seen if machine is not None) == ["palette-1", "palette-2", "palette-3"]
    # A VM is created after its seed is staged: there, the same step sees no machine yet.
    seen.clear()
    (tmp_path / "created").mkdir()
    created, _, _ = deploy(tmp_path / "created", plan_for(tmp_path / "created", "created"), node_steps=steps[:1])
    assert created.ok, created.failures()
    assert sorted(seen) == [("palette-1", None), ("palette-2", None), ("palette-3", None)]
    with pytest.raises(PlanError) as info, Deployment(
        parse_plan(base_plan(tmp_path), base_dir=tmp_path), node_steps=steps[1:], state_dir=tmp_path / "y"
    ) as d:
        d.check()
    assert info.value.issues[0].path == "node_steps[0].after" and "boot-from-media" not in info.value.issues[0].message


def test_nodes_prepare_while_the_iso_uploads(tmp_path: Path) -> None:
    report, events, _ = deploy(tmp_path, plan_for(tmp_path, "created", iso_upload_seconds=1.5))
    assert report.ok
    staged = next(e.at for e in events if e.phase == "stage_media" and e.status == "done")
    acquired = [e.at for e in events if e.phase == "acquire" and e.status == "done"]
    inserted = [e.at for e in events if e.phase == "insert_media" and e.status == "done"]
    assert len(acquired) == 3 and max(acquired) < staged, "every machine was created during the upload"
    assert min(inserted) >= staged, "no node inserted media before the ISO was staged"


class _CountingFake(FakeProvider):
    """Counts how many acting calls are in flight at once (each held a little while)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.active = self.peak = 0
        self.count_lock = threading.Lock()

    def _op(self, op: str, node: str | None) -> None:
        if op == "discover_address" or node is None:  # await_ready's (a wait), the ISO's (deployment-wide)
            return super()._op(op, node)
        with self.count_lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            time.sleep(0.05)
            super()._op(op, node)
        finally:
            with self.count_lock:
                self.active -= 1


@pytest.mark.parametrize(("limit", "peak"), [(1, 1), (None, 3)])
def test_the_providers_concurrency_limit_holds_across_the_fan_out(tmp_path: Path, limit: int | None, peak: int) -> None:
    plan = parse_plan(plan_for(tmp_path, "created", concurrency_limit=limit), base_dir=tmp_path)
    context = ProviderContext(plan.name, tmp_path / "state" / "providers", get_logger("test"))
    provider = _CountingFake(plan.platform_settings, context)
    with Deployment(plan, state_dir=tmp_path / "state", provider=provider) as d:
        assert d.apply().ok
    assert provider.peak == peak


def test_validate_plan_and_status_touch_nothing_and_status_works_while_apply_runs(tmp_path: Path) -> None:
    data = plan_for(tmp_path, "created", install_seconds=3)
    plan = parse_plan(data, base_dir=tmp_path)
    with Deployment(plan, state_dir=tmp_path / "state") as d:
        d.check()
        d.actions()
        assert d.status()["steps"] == []
    assert not (tmp_path / "state").exists()

    running = Deployment(plan, state_dir=tmp_path / "state")
    worker = threading.Thread(target=running.apply)
    worker.start()
    try:
        seen: list[int] = []
        while worker.is_alive() and len(seen) < 5:
            with Deployment(plan, state_dir=tmp_path / "state") as reader:
                seen.append(len(reader.status()["steps"]))
                assert reader.actions()
            worker.join(0.3)
        assert max(seen) > 0, "status saw the running apply's steps"
    finally:
        worker.join()
        running.close()


def test_the_report_says_where_each_address_came_from(tmp_path: Path) -> None:
    # palette-1's address is what the platform reports (as VMware Tools would); the others' the plan's.
    data = plan_for(tmp_path, "created", addresses={"palette-1": "10.251.0.11"})
    report, _, _ = deploy(tmp_path, data)
    assert report.ok, report.failures()
    assert [(n.name, n.address_source) for n in report.nodes] == [
        ("palette-1", "platform"), ("palette-2", "plan"), ("palette-3", "plan")]
