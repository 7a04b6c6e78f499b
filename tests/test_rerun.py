"""A re-run looks at the platform again: unchanged machines are reported as such, deleted ones are rebuilt."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from palette_provision.journal import Journal
from palette_provision.log import get_logger
from palette_provision.pipeline import Deployment
from palette_provision.plan import DeploymentPlan, NodeSpec, parse_plan
from palette_provision.provider import Machine, ProviderContext
from palette_provision.report import Event
from palette_provision.testing.fake import FakeProvider, read_state

from .conftest import base_plan


class ListingProvider(FakeProvider):
    """Answers find_machine from a cheap listing, without the MAC (as the vSphere provider does on a re-run)."""

    def find_machine(self, node: NodeSpec, record: Machine | None) -> Machine | None:
        found = super().find_machine(node, record)
        return None if found is None else Machine(found.node, found.id, found.name, {"listed": "yes"})


def _listing_provider(plan: DeploymentPlan, state: Path) -> ListingProvider:
    # What the core would hand it: every node's machine is this deployment's.
    context = ProviderContext(
        plan.name, state / "providers" / "fake", get_logger("tests"), dict.fromkeys(plan.node_names())
    )
    return ListingProvider(plan.platform_settings, context)


def _provision_rows(state: Path) -> dict[str, tuple[float | None, dict[str, Any]]]:
    with Journal.open(state / "journal.sqlite", deployment="test-deploy", create=False) as journal:
        return {s.node: (s.finished_at, s.data) for s in journal.steps() if s.phase == "acquire"}


def test_an_unchanged_machine_is_checked_not_rewritten_and_keeps_what_was_recorded(tmp_path: Path) -> None:
    plan = parse_plan(base_plan(tmp_path), base_dir=tmp_path)
    state = tmp_path / "state"
    with Deployment(plan, state_dir=state) as d:
        assert d.apply(until="power_on").ok
    before = _provision_rows(state)
    assert all(data["machine"]["attributes"].get("mac") for _, data in before.values())  # a MAC to lose

    events: list[Event] = []
    with Deployment(plan, state_dir=state, provider=_listing_provider(plan, state), on_event=events.append) as d:
        report = d.apply(until="power_on")
    assert report.ok
    checked = [e for e in events if e.phase == "acquire"]
    assert {e.status for e in checked} == {"skipped"} and len(checked) == 3
    assert all("still so on the platform" in e.message for e in checked)
    # Nothing rewritten: same finish time, same data, so the MAC the listing left out is still recorded, for the
    # address lookup and the inventory.
    assert _provision_rows(state) == before
    assert {n.name: n.machine_id for n in report.nodes} == {
        node: data["machine"]["id"] for node, (_, data) in before.items()
    }


def test_a_machine_deleted_behind_our_back_is_rebuilt_and_the_others_left_alone(tmp_path: Path) -> None:
    plan = parse_plan(base_plan(tmp_path), base_dir=tmp_path)
    state = tmp_path / "state"
    with Deployment(plan, state_dir=state) as d:
        assert d.apply(until="power_on").ok
    platform = tmp_path / "platform.json"
    data = read_state(platform)
    gone = sorted(data["machines"])[1]
    old_id = data["machines"].pop(gone)["id"]
    platform.write_text(json.dumps(data))

    events: list[Event] = []
    with Deployment(plan, state_dir=state, provider=_listing_provider(plan, state), on_event=events.append) as d:
        report = d.apply(until="power_on")
    assert report.ok
    redone = {e.node for e in events if e.phase == "acquire" and e.status == "done"}
    assert redone == {gone}
    rows = _provision_rows(state)
    assert rows[gone][1]["how"] == "created" and rows[gone][1]["machine"]["id"] != old_id
    after = read_state(platform)
    creates = [a for a in after["actions"] if a["op"] == "create_machine"]
    assert len(creates) == 4  # three on the first run, the deleted one again
    # The rebuilt machine went through the later phases again (media, power); the others did not.
    powered = [a["node"] for a in after["actions"] if a["op"] == "power_on"]
    assert sorted(powered) == sorted([*plan.node_names(), gone])


def test_a_node_whose_installed_machine_is_gone_starts_over_with_a_new_seed(tmp_path: Path) -> None:
    plan = parse_plan(base_plan(tmp_path), base_dir=tmp_path)
    state = tmp_path / "state"
    with Deployment(plan, state_dir=state) as d:
        assert d.apply().ok
        old_key = d.journal.fact("palette-2", "host_key_fingerprint")
    platform = tmp_path / "platform.json"
    data = read_state(platform)
    data["machines"].pop("palette-2")
    platform.write_text(json.dumps(data))

    with Deployment(plan, state_dir=state) as d:
        report = d.apply()
        new_key = d.journal.fact("palette-2", "host_key_fingerprint")
        live = [r for r in d.journal.resources(live_only=True) if r.kind == "machine"]
    assert report.ok and [n.status for n in report.nodes] == ["ready"] * 3
    # The installed node's seed was gone (deleted after its install): a new one, with a new host key, was staged.
    assert new_key and new_key != old_key
    staged = [a for a in read_state(platform)["actions"] if a["op"] == "stage_media" and a["node"] == "palette-2"]
    assert len(staged) == 2
    # destroy would remove exactly the three live machines, not the one that vanished.
    assert sorted(r.node for r in live) == ["palette-1", "palette-2", "palette-3"]
