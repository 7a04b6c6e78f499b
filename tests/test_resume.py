"""The journal under SIGKILL: a killed apply resumes without repeating side effects, and destroy removes exactly
what was created. Each run is a real subprocess killed with SIGKILL, at phase boundaries and inside phases."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from palette_provision.testing.fake import read_state

from .conftest import PG_PASSWORD_ENV, base_plan, pg_journal
from .killer import KILL_AFTER_PHASE

# Kills at a phase boundary: right after the journal recorded the phase done (the event is emitted after commit).


BOUNDARIES = [
    ("preflight", "*"),
    ("stage_media", "*"),
    ("stage_seed", "palette-2"),
    ("acquire", "palette-2"),
    ("insert_media", "palette-2"),
    ("boot_once_from_cd", "palette-2"),
    ("power_on", "palette-2"),
    ("await_install", "palette-2"),
    ("boot_from_disk", "palette-2"),
    ("await_ready", "palette-2"),
]
INSIDE = [
    "stage_media:None",
    "stage_media:palette-2",
    "create_machine:palette-2",
    "insert_media:palette-2",
    "set_boot_device:palette-2",
    "power_on:palette-2",
    "eject_media:palette-2",
    "unstage_media:palette-2",
]


@pytest.fixture(params=["sqlite", "postgresql"])
def journal(request: pytest.FixtureRequest) -> dict[str, Any] | None:
    """The journal backend a killing test runs on: the SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return None
    return pg_journal(request.getfixturevalue("pg_cluster"))


def _plan(tmp: Path, journal: dict[str, Any] | None = None, **platform: Any) -> Path:
    data = base_plan(tmp)
    data["platform"].update(platform)
    if journal is not None:
        data["journal"] = journal
    path = tmp / "plan.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _apply(plan: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "palette_provision", "apply", str(plan), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def _ops(state: dict[str, Any]) -> collections.Counter[str]:
    return collections.Counter(f"{a['op']}:{a['node']}" for a in state["actions"])


def _final(state: dict[str, Any]) -> dict[str, Any]:
    return {
        "machines": sorted(state["machines"]),
        "installs": {n: m["installs"] for n, m in state["machines"].items()},
        "power": {n: m["power"] for n, m in state["machines"].items()},
        "media_roles": sorted(m["role"] for m in state["media"].values()),
    }


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("clean")
    proc = _apply(_plan(tmp))
    assert proc.returncode == 0, proc.stderr
    state = read_state(tmp / "platform.json")
    return {"ops": _ops(state), "final": _final(state), "report": json.loads(proc.stdout)}


def test_uninterrupted_run_is_the_reference(uninterrupted: dict[str, Any]) -> None:
    final = uninterrupted["final"]
    assert final["machines"] == ["palette-1", "palette-2", "palette-3"]
    assert final["installs"] == {"palette-1": 1, "palette-2": 1, "palette-3": 1}
    assert final["media_roles"] == ["appliance-iso"]  # seeds removed once installed
    assert uninterrupted["ops"]["create_machine:palette-2"] == 1
    assert uninterrupted["ops"]["power_on:palette-2"] == 2  # installer boot, then disk boot


def _assert_journal_backend(tmp: Path, journal: dict[str, Any] | None) -> None:
    """The run journaled where the plan said: the SQLite file, or (and then no such file) the PostgreSQL schema."""
    sqlite = tmp / ".palette-provision" / "test-deploy" / "journal.sqlite"
    if journal is None:
        assert sqlite.is_file()
        return
    assert not sqlite.exists(), "a PostgreSQL run wrote a SQLite journal"
    import psycopg

    schema = journal["schema"]
    with psycopg.connect(journal["url"], password=os.environ[PG_PASSWORD_ENV], connect_timeout=10) as conn:
        meta = conn.execute(f'SELECT count(*) FROM "{schema}".meta').fetchone()
        resources = conn.execute(f'SELECT count(*) FROM "{schema}".resources').fetchone()
    assert meta and meta[0] > 0 and resources and resources[0] > 0, "no rows in the deployment's schema"


def _assert_resumed_like_reference(
    tmp: Path, plan: Path, reference: dict[str, Any], journal: dict[str, Any] | None = None
) -> None:
    proc = _apply(plan)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_journal_backend(tmp, journal)
    state = read_state(tmp / "platform.json")
    assert _final(state) == reference["final"]
    assert _ops(state) == reference["ops"], "a side effect was repeated (or skipped) by the resumed run"
    report = json.loads(proc.stdout)
    assert [n["status"] for n in report["nodes"]] == ["ready"] * 3


@pytest.mark.parametrize(("phase", "node"), BOUNDARIES)
def test_sigkill_at_phase_boundary_resumes(
    tmp_path: Path, uninterrupted: dict[str, Any], phase: str, node: str, journal: dict[str, Any] | None
) -> None:
    plan = _plan(tmp_path, journal)
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_PHASE, str(plan), phase, node], capture_output=True, text=True, timeout=120
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    _assert_resumed_like_reference(tmp_path, plan, uninterrupted, journal)


@pytest.mark.parametrize("point", INSIDE)
def test_sigkill_inside_a_phase_resumes(
    tmp_path: Path, uninterrupted: dict[str, Any], point: str, journal: dict[str, Any] | None
) -> None:
    flag = tmp_path / "killed.flag"
    plan = _plan(tmp_path, journal, kill_at=point, kill_once_file=str(flag))
    killed = _apply(plan)
    assert killed.returncode == -signal.SIGKILL and flag.exists(), killed.stderr
    _assert_resumed_like_reference(tmp_path, plan, uninterrupted, journal)


@pytest.mark.parametrize("point", ["create_machine:palette-2", "power_on:palette-2", "stage_media:palette-3"])
def test_destroy_after_partial_run_removes_exactly_what_was_created(
    tmp_path: Path, point: str, journal: dict[str, Any] | None
) -> None:
    flag = tmp_path / "killed.flag"
    plan = _plan(tmp_path, journal, kill_at=point, kill_once_file=str(flag))
    assert _apply(plan).returncode == -signal.SIGKILL
    before = read_state(tmp_path / "platform.json")
    created_machines = {a["node"] for a in before["actions"] if a["op"] == "create_machine"}
    assert "palette-2" in created_machines or point.startswith("stage_media")
    proc = subprocess.run(
        [sys.executable, "-m", "palette_provision", "destroy", str(plan), "--purge-media", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    after = read_state(tmp_path / "platform.json")
    assert after["machines"] == {} and after["media"] == {}
    deleted = {a["node"] for a in after["actions"] if a["op"] == "delete_machine"}
    assert deleted == created_machines
    _assert_journal_backend(tmp_path, journal)


def test_destroy_is_resumable(tmp_path: Path, journal: dict[str, Any] | None) -> None:
    plan = _plan(tmp_path, journal)
    assert _apply(plan).returncode == 0
    flag = tmp_path / "killed-destroy.flag"
    data = yaml.safe_load(plan.read_text())
    data["platform"].update(kill_at="delete_machine:palette-2", kill_once_file=str(flag))
    plan.write_text(yaml.safe_dump(data))
    first = subprocess.run(
        [sys.executable, "-m", "palette_provision", "destroy", str(plan)], capture_output=True, text=True, timeout=120
    )
    assert first.returncode == -signal.SIGKILL
    second = subprocess.run(
        [sys.executable, "-m", "palette_provision", "destroy", str(plan), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 0, second.stderr
    state = read_state(tmp_path / "platform.json")
    assert state["machines"] == {}
    assert collections.Counter(a["node"] for a in state["actions"] if a["op"] == "delete_machine") == {
        "palette-1": 1,
        "palette-2": 1,
        "palette-3": 1,
    }
    assert [m["role"] for m in state["media"].values()] == ["appliance-iso"]  # kept without --purge-media
    _assert_journal_backend(tmp_path, journal)


def test_ctrl_c_exits_130_and_a_rerun_resumes(tmp_path: Path, uninterrupted: dict[str, Any]) -> None:
    # A slow installer, so SIGINT lands while every node waits in await_install.
    plan = _plan(tmp_path, install_seconds=3.0)
    proc = subprocess.Popen([sys.executable, "-m", "palette_provision", "apply", str(plan)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    state_file = tmp_path / "platform.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = read_state(state_file)
        if sum(1 for a in state["actions"] if a["op"] == "power_on") == 3:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "re-run 'apply' to resume" in stderr
    _assert_resumed_like_reference(tmp_path, plan, uninterrupted)


@pytest.mark.parametrize("point", [
    "stage_media:palette-1", "create_machine:palette-1", "insert_media:palette-1", "set_boot_device:palette-1",
    "power_on:palette-1", "eject_media:palette-1",
])
def test_ctrl_c_begins_no_step_after_the_signal_exits_130_at_once_and_a_rerun_resumes(
    tmp_path: Path, uninterrupted: dict[str, Any], point: str
) -> None:
    # One node at a time, so two nodes are still queued when the signal lands; a slow installer, so a node in
    # await_install would wait long if the wait were not interrupted.
    flag = tmp_path / "interrupted.flag"
    data = base_plan(tmp_path)
    data["concurrency"] = 1
    data["platform"].update(interrupt_at=point, kill_once_file=str(flag), install_seconds=0.5)
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(data))
    proc = _apply(plan)
    ended = time.time()
    assert proc.returncode == 130, proc.stdout + proc.stderr
    signalled = float(flag.read_text())
    assert ended - signalled < 5, f"exit {ended - signalled:.1f} s after the signal"
    state = read_state(tmp_path / "platform.json")
    # Only the step in flight at the signal may finish its own platform calls; no other node acts.
    late_actions = [(a["op"], a["node"]) for a in state["actions"] if a["at"] > signalled]
    assert all(node == "palette-1" for _, node in late_actions), late_actions
    from palette_provision.journal import Journal

    with Journal.open_readonly(tmp_path / ".palette-provision" / "test-deploy" / "journal.sqlite",
                               deployment="test-deploy") as journal:
        late = [(s.phase, s.node) for s in journal.steps() if (s.started_at or 0) > signalled]
    assert late == [], f"steps began after the signal: {late}"
    _assert_resumed_like_reference(tmp_path, plan, uninterrupted)
