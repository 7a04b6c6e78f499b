"""A content bundle larger than the client may hold in memory is streamed: the client's peak RSS barely moves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.handoff import rig
from tests.handoff.conftest import Simulate

RUNNER = Path(__file__).with_name("runner.py")
BUNDLE_BYTES = 1 << 30  # 1 GiB, sparse: no disk blocks on the client side
MAX_RSS_GROWTH_KIB = 48 * 1024


def test_a_1_gib_bundle_uploads_with_flat_client_memory(simulate: Simulate, tmp_path: Path) -> None:
    bundle = tmp_path / "big-bundle.tar.zst"
    with bundle.open("wb") as handle:
        handle.truncate(BUNDLE_BYTES)
    sim = simulate(1)
    rss_file = tmp_path / "rss.json"
    spec = rig.write_spec(
        tmp_path / "spec.json", plan=rig.plan_data(tmp_path, 1, content=bundle), journal=str(tmp_path / "j.sqlite"),
        sims=rig.sim_spec(sim), rss_file=str(rss_file),
    )
    done = subprocess.run([sys.executable, str(RUNNER), str(spec)], capture_output=True, text=True, timeout=300,
                          check=False)

    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert sim.leader.state()["content"]["sizeInBytes"] == BUNDLE_BYTES
    rss = json.loads(rss_file.read_text())
    growth = rss["after_kib"] - rss["before_kib"]
    assert growth < MAX_RSS_GROWTH_KIB, f"peak RSS grew by {growth} KiB while uploading 1 GiB"
    assert rss["after_kib"] < 160 * 1024
