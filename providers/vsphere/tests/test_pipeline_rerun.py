"""The whole pipeline on vcsim, then again in a fresh process: the re-run changes nothing and stays light."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import make_plan, remove_vms, settings_data
from palette_provision.pipeline import Deployment
from vcsim.lab import VcsimHandle

# A second apply in a new interpreter, as a user's re-run is: what it uploads, reports and has to import.
_RERUN = """
import json, sys
from palette_provision.pipeline import Deployment
from palette_provision.plan import parse_plan
spec = json.loads(sys.argv[1])
with Deployment(parse_plan(spec["plan"]), state_dir=__import__("pathlib").Path(spec["state"])) as d:
    report = d.apply(until="power_on")
    staged = d.journal.step("stage_media")
print(json.dumps({
    "ok": report.ok,
    "machines": sorted(n.machine_id for n in report.nodes),
    "uploaded": staged.data.get("uploaded_bytes") if staged else None,
    "loaded": sorted(m for m in ("httpx", "structlog", "yaml") if m in sys.modules),
}))
"""


def test_a_rerun_in_a_fresh_process_uploads_nothing_creates_nothing_and_loads_no_http_client(
    vcsim: VcsimHandle, unique: str, iso: Path, tmp_path: Path
) -> None:
    plan = make_plan(vcsim, unique, iso, count=2)
    state = tmp_path / "deployment"
    try:
        with Deployment(plan, state_dir=state) as d:
            first = d.apply(until="power_on")
        assert first.ok
        data = {
            "name": "demo",
            "profile": "edge",
            "iso": {"source": str(iso)},
            "cluster": {"name": "edge", "vip": "10.251.0.100", "dns": ["10.251.0.1"],
                        "node_account": {"password": "env:PP_TEST_NODE_PASSWORD"}},
            "nodes": {"count": 2, "cpus": 2, "memory_gb": 4, "install_disk_gb": 32, "storage_disk_gb": 16},
            "platform": {"provider": "vsphere", **settings_data(vcsim, unique)},
            "readiness": {"ssh": False},
            "handoff": {"kind": "none"},
        }  # fmt: skip
        out = subprocess.run(
            [sys.executable, "-c", _RERUN, json.dumps({"plan": data, "state": str(state)})],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        again = json.loads(out.stdout.strip().splitlines()[-1])
        assert again["ok"]
        assert again["machines"] == sorted(n.machine_id for n in first.nodes)  # the same VMs, none created
        assert again["uploaded"] == 0
        # Nothing to upload, a plan built in Python, no logging configured: none of these is needed, none is loaded.
        assert again["loaded"] == []
    finally:
        remove_vms(vcsim, f"{unique}-")
