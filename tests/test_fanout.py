"""Fan-out: nodes proceed in parallel; one node's failure is reported exactly while the others finish."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from palette_provision.pipeline import Deployment
from palette_provision.plan import parse_plan
from palette_provision.report import Event
from palette_provision.testing.fake import read_state

from .conftest import base_plan


def _deploy(tmp: Path, count: int = 3, profile: str = "appliance", **platform: Any) -> tuple[Any, list[Event]]:
    data = base_plan(tmp, count)
    data["profile"] = profile
    data["platform"].update(platform)
    events: list[Event] = []
    with Deployment(parse_plan(data, base_dir=tmp), state_dir=tmp / "state", on_event=events.append) as d:
        return d.apply(), events


def test_one_node_failing_leaves_the_others_finished(tmp_path: Path) -> None:
    report, events = _deploy(tmp_path, fail={"palette-2": "power_on"})
    by_name = {n.name: n for n in report.nodes}
    assert by_name["palette-1"].status == "ready" and by_name["palette-3"].status == "ready"
    failed = by_name["palette-2"]
    assert (failed.status, failed.phase) == ("failed", "power_on")
    assert failed.error == "fake platform refused power_on for palette-2 (fault knob)"
    assert not report.ok and report.handoff is None  # no hand-off with a node missing
    assert report.failures() == [
        "palette-2 failed in power_on: fake platform refused power_on for palette-2 (fault knob)",
        "palette-2: its seed (private SSH host key, password hash) stays at fake://media/palette-2-seed.iso until "
        "'destroy --seeds-only' or 'destroy'",
    ]
    assert any(e.node == "palette-2" and e.status == "failed" and e.phase == "power_on" for e in events)
    state = read_state(tmp_path / "platform.json")
    assert state["machines"]["palette-1"]["installs"] == 1 and state["machines"]["palette-2"]["installs"] == 0


def test_timeout_reports_last_state(tmp_path: Path) -> None:
    data = base_plan(tmp_path)
    data["platform"]["never_installs"] = ["palette-3"]
    data["timeouts"]["install"] = 2
    with Deployment(parse_plan(data, base_dir=tmp_path), state_dir=tmp_path / "state") as d:
        report = d.apply()
    node = report.nodes[2]
    assert (node.status, node.phase, node.last_state) == ("failed", "await_install", "on")
    assert "timed out after" in (node.error or "") and "power it off" in (node.error or "")
    assert [n.status for n in report.nodes[:2]] == ["ready", "ready"]


def test_reinstall_loop_is_a_failure_not_progress(tmp_path: Path) -> None:
    # palette-1's "BMC" ignores the eject, so booting "from disk" runs the installer again; its calls are slow
    # enough that the second install powers it off while the readiness ladder is still climbing.
    report, _ = _deploy(tmp_path, ignores_eject=["palette-1"], slow={"palette-1": 0.4})
    node = report.nodes[0]
    assert (node.status, node.phase) == ("failed", "await_ready")
    assert "powered off again" in (node.error or "")


def test_nodes_run_in_parallel(tmp_path: Path) -> None:
    # Each node's every call takes 0.3 s: serial work would interleave nothing; parallel work overlaps phases.
    report, events = _deploy(tmp_path, count=4, profile="edge", slow={f"palette-{i}": 0.3 for i in range(1, 5)})
    assert report.ok
    starts = [e for e in events if e.phase == "acquire" and e.status == "started"]
    dones = [e for e in events if e.phase == "acquire" and e.status == "done"]
    assert max(s.at for s in starts) < min(d.at for d in dones), "provisioning did not overlap across nodes"


def test_flaky_power_is_retried_or_reported_per_node(tmp_path: Path) -> None:
    report, _ = _deploy(tmp_path, flaky_power=1.0)
    assert all(n.status == "failed" and n.phase == "power_on" for n in report.nodes)
    assert all("flaky_power" in (n.error or "") for n in report.nodes)


def test_a_platform_that_stops_answering_during_the_install_is_waited_out_and_the_log_says_so(tmp_path: Path) -> None:
    # palette-2's BMC answers no power read for 2.5 s from its CD boot (the install takes 0.5 s of it).
    with capture_logs() as logged:
        report, _ = _deploy(tmp_path, unanswered={"palette-2": 2.5})
    assert report.ok, report.failures()
    waits = [(e["log_level"], e["event"], e.get("node")) for e in logged if e["event"].startswith("wait_")]
    assert waits == [("warning", "wait_failing", "palette-2"), ("info", "wait_answering_again", "palette-2")]
    failing = next(e for e in logged if e["event"] == "wait_failing")
    assert "power it off" in failing["what"] and failing["error"] == (
        "TransientError: the fake platform did not answer for palette-2 (unanswered knob)")
    assert read_state(tmp_path / "platform.json")["machines"]["palette-2"]["installs"] == 1


def test_a_platform_silent_past_timeouts_unreachable_fails_the_node_and_the_next_apply_resumes(tmp_path: Path) -> None:
    data = base_plan(tmp_path)
    data["platform"]["unanswered"] = {"palette-2": 3600}
    data["timeouts"]["unreachable"] = 1
    with Deployment(parse_plan(data, base_dir=tmp_path), state_dir=tmp_path / "state") as d:
        report = d.apply()
    by_name = {n.name: n for n in report.nodes}
    assert [by_name[n].status for n in ("palette-1", "palette-3")] == ["ready", "ready"]
    failed = by_name["palette-2"]
    assert (failed.status, failed.phase) == ("failed", "await_install")
    error = failed.error or ""
    assert error.startswith("gave up after ") and "power it off: every look for 1 s failed" in error, error
    assert error.endswith("last error: TransientError: the fake platform did not answer for palette-2 (unanswered knob)")
    # The BMC answers again: the next apply resumes the wait (no second install, no second power-on).
    del data["platform"]["unanswered"]
    with Deployment(parse_plan(data, base_dir=tmp_path), state_dir=tmp_path / "state") as d:
        again = d.apply()
    assert again.ok, again.failures()
    state = read_state(tmp_path / "platform.json")
    assert state["machines"]["palette-2"]["installs"] == 1
    assert sum(1 for a in state["actions"] if a["op"] == "power_on" and a["node"] == "palette-2") == 2  # CD, disk


def test_dry_run_lists_actions_without_side_effects(tmp_path: Path) -> None:
    data = base_plan(tmp_path)
    with Deployment(parse_plan(data, base_dir=tmp_path), state_dir=tmp_path / "state") as d:
        actions = d.actions()
    assert not (tmp_path / "platform.json").exists()
    assert not (tmp_path / "state").exists(), "the dry run creates no journal and no state folder"
    assert [a.phase for a in actions[:3]] == ["preflight", "stage_media", "stage_seed"]
    assert {a.state for a in actions} == {"pending"}
    assert [a.phase for a in actions if a.node == "palette-1"] == [
        "stage_seed", "acquire", "insert_media", "boot_once_from_cd", "power_on", "await_install", "boot_from_disk",
        "await_ready",
    ]
    # The hand-off and its journaled sub-steps are in the dry run too.
    assert [a.phase for a in actions[-2:]] == ["handoff", "handoff.inventory"] and "inventory" in actions[-2].action
    assert len(actions) == 2 + 3 * 8 + 2


def test_until_stops_every_node_after_that_phase_and_a_later_apply_continues(tmp_path: Path) -> None:
    plan = parse_plan(base_plan(tmp_path), base_dir=tmp_path)
    with Deployment(plan, state_dir=tmp_path / "state") as d:
        partial = d.apply(until="acquire")
    assert [(n.status, n.phase) for n in partial.nodes] == [("ready", "acquire")] * 3
    assert partial.handoff is None
    state = read_state(tmp_path / "platform.json")
    assert len(state["machines"]) == 3 and all(m["power"] == "off" for m in state["machines"].values())
    with Deployment(plan, state_dir=tmp_path / "state") as d:
        full = d.apply()
    assert full.ok and full.handoff is not None
    assert [n.phase for n in full.nodes] == ["await_ready"] * 3
    assert sum(1 for a in read_state(tmp_path / "platform.json")["actions"] if a["op"] == "create_machine") == 3


def test_iso_staging_reports_progress_with_bytes_and_rate(tmp_path: Path) -> None:
    data = base_plan(tmp_path, 1)
    iso = tmp_path / "big.iso"
    iso.write_bytes(b"\1" * (3 << 20))  # the fake provider hashes it in 1 MiB chunks, reporting each
    data["iso"] = {"source": str(iso)}
    events: list[Event] = []
    with Deployment(parse_plan(data, base_dir=tmp_path), state_dir=tmp_path / "s", on_event=events.append) as d:
        assert d.apply().ok
    progress = [e for e in events if e.phase == "stage_media" and e.status == "progress"]
    assert progress and progress[-1].data["bytes"] == progress[-1].data["total"] == 3 << 20
    assert progress[-1].data["rate_mib_s"] > 0
