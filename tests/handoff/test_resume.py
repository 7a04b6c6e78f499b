"""A hand-off killed with SIGKILL at any step boundary continues on the next run, without duplicating anything."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from palette_provision.journal import Journal
from tests.handoff import rig
from tests.handoff.conftest import Simulate

RUNNER = Path(__file__).with_name("runner.py")

#: Every step boundary of a 3-node formation, in the order a run reaches them. Each run is killed at the next one;
#: the run after it must pick up from the journal and the nodes' own state.
KILL_POINTS = [
    "handoff.link:begin",
    "handoff.link:node2:submitted",  # node2 got its token, node3 did not
    "handoff.link:node3:submitted",
    "handoff.link:done",
    "handoff.content:begin",
    "handoff.content:uploaded",  # the leader has the bundle, the journal does not know yet
    "handoff.cluster:begin",
    "handoff.cluster:created",  # the leader accepted the create, the journal does not know yet
]


def run(spec_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(RUNNER), str(spec_path)], capture_output=True, text=True, timeout=120,
                          check=False)


def test_a_rerun_after_sigkill_at_each_step_continues_without_duplicates(simulate: Simulate, tmp_path: Path, bundle: Path) -> None:
    sim = simulate(3)
    plan = rig.plan_data(tmp_path, 3, content=bundle)
    journal_path = tmp_path / "journal.sqlite"
    spec = {"plan": plan, "journal": str(journal_path), "sims": rig.sim_spec(sim)}

    for point in KILL_POINTS:
        killed = run(rig.write_spec(tmp_path / "spec.json", **spec, kill_at=point))
        assert killed.returncode == -signal.SIGKILL, f"{point}: {killed.stdout}{killed.stderr[-2000:]}"

    final = run(rig.write_spec(tmp_path / "spec.json", **spec))
    assert final.returncode == 0, final.stdout + final.stderr[-3000:]
    assert json.loads(final.stdout.splitlines()[-1])["cluster_state"] == "Running"

    leader = sim.leader.state()
    assert leader["stats"]["clustersCreated"] == 1
    assert leader["stats"]["clusterCreateAttempts"] == 1
    assert [u["result"] for u in leader["stats"]["uploads"]] == ["stored"]
    accepted = [a["follower"] for a in leader["stats"]["linkAttempts"] if a["result"] == "accepted"]
    assert sorted(accepted) == sorted(n.host_id for n in sim.followers)
    with Journal.open(journal_path, deployment="handoff-test") as journal:
        assert all(s.status == "done" for s in journal.steps())
        cluster_step = journal.step("handoff.cluster")
        assert cluster_step is not None and cluster_step.attempts == 3  # begun, killed at begin, killed after create, done
