"""SIGKILL at every phase of the enrolled and allocated lifecycles: a re-run resumes without repeating a side effect,
and ``destroy`` then restores enrolled servers and releases allocated machines. Real subprocesses, as in
``test_resume.py`` (the created lifecycle)."""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from palette_provision.testing.fake import read_state

from .killer import KILL_AFTER_PHASE
from .test_lifecycles import plan_for
from .test_resume import _apply

CHAINS = {
    "enrolled": ["stage_seed", "acquire", "insert_media", "boot_once_from_cd", "power_on", "await_install",
                 "boot_from_disk", "await_ready"],
    "allocated": ["stage_seed", "acquire", "deploy_image", "await_deployed", "await_ready"],
}
INSIDE = {
    # "#2": the second call, inside boot_from_disk (the override to disk, then the power-on after the install).
    "enrolled": ["insert_media:palette-2", "set_boot_device:palette-2", "power_on:palette-2", "eject_media:palette-2",
                 "set_boot_device:palette-2#2", "power_on:palette-2#2"],
    "allocated": ["allocate_machine:palette-2", "deploy_image:palette-2"],
}
CASES = [(lc, ("boundary", p)) for lc, phases in CHAINS.items() for p in phases] + [
    (lc, ("inside", p)) for lc, points in INSIDE.items() for p in points
]


def _plan(tmp: Path, lifecycle: str, **platform: Any) -> Path:
    path = tmp / "plan.yaml"
    path.write_text(yaml.safe_dump(plan_for(tmp, lifecycle, **platform)))
    return path


def _ops(state: dict[str, Any]) -> collections.Counter[str]:
    # Enrolling is looking, not acting: a re-run may look again.
    return collections.Counter(f"{a['op']}:{a['node']}" for a in state["actions"] if a["op"] != "enroll_machine")


def _final(state: dict[str, Any]) -> dict[str, Any]:
    servers = {k: (m["installs"], m["power"], m["slots"], m["boot"]) for k, m in state["servers"].items()}
    pool = sorted((m.get("node"), m.get("deploy"), m["power"]) for m in state["pool"].values() if m.get("owner"))
    return {"servers": servers, "pool": pool, "media": sorted(m["role"] for m in state["media"].values())}


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = {}
    for lifecycle in CHAINS:
        tmp = tmp_path_factory.mktemp(lifecycle)
        proc = _apply(_plan(tmp, lifecycle))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        state = read_state(tmp / "platform.json")
        out[lifecycle] = {"ops": _ops(state), "final": _final(state)}
    return out


@pytest.mark.parametrize(("lifecycle", "kill"), CASES, ids=[f"{lc}-{k[0]}-{k[1]}" for lc, k in CASES])
def test_sigkill_anywhere_resumes_like_an_uninterrupted_run(
    tmp_path: Path, references: dict[str, dict[str, Any]], lifecycle: str, kill: tuple[str, str]
) -> None:
    where, point = kill
    if where == "boundary":
        plan = _plan(tmp_path, lifecycle)
        killed = subprocess.run([sys.executable, "-c", KILL_AFTER_PHASE, str(plan), point, "palette-2"],
                                capture_output=True, text=True, timeout=120)
    else:
        plan = _plan(tmp_path, lifecycle, kill_at=point, kill_once_file=str(tmp_path / "killed.flag"))
        killed = _apply(plan)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = _apply(plan)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    state = read_state(tmp_path / "platform.json")
    assert _final(state) == references[lifecycle]["final"]
    assert _ops(state) == references[lifecycle]["ops"], "a side effect was repeated (or skipped) by the resumed run"


@pytest.mark.parametrize("lifecycle", list(CHAINS))
def test_destroy_after_a_kill_restores_or_releases_from_the_journal(tmp_path: Path, lifecycle: str) -> None:
    point = INSIDE[lifecycle][0]
    plan = _plan(tmp_path, lifecycle, kill_at=point, kill_once_file=str(tmp_path / "killed.flag"))
    assert _apply(plan).returncode == -signal.SIGKILL
    servers_before = set(read_state(tmp_path / "platform.json")["servers"])
    proc = subprocess.run([sys.executable, "-m", "palette_provision", "destroy", str(plan), "--purge-media", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    state = read_state(tmp_path / "platform.json")
    assert state["media"] == {}
    if lifecycle == "enrolled":
        assert "bmc-2.lab" in servers_before and set(state["servers"]) == servers_before, "servers are never deleted"
        assert all(s["slots"] == {"cd0": None, "usb0": None} and s["power"] == "off" and s["boot"] == "disk"
                   for s in state["servers"].values())
    else:
        # Killed right after palette-2's allocation, before the journal knew: found by its mark and released.
        assert not [m for m in state["pool"].values() if m.get("owner")]
        released = {a["node"] for a in state["actions"] if a["op"] == "release_machine"}
        allocated = {a["node"] for a in state["actions"] if a["op"] == "allocate_machine"}
        assert released == allocated and "palette-2" in released
