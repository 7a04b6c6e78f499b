"""The examples work: the plain Python script deploys the fake rehearsal; the vSphere plan validates offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_deploy_script_on_the_fake_rehearsal_plan(tmp_path: Path) -> None:
    shutil.copy(EXAMPLES / "fake-appliance.yaml", tmp_path / "plan.yaml")
    (tmp_path / "fake-appliance.iso").write_bytes(b"\0" * 1024)
    env = {**os.environ, "PALETTE_NODE_PASSWORD": "rehearsal-password"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / "deploy.py"), str(tmp_path / "plan.yaml")],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and [n["status"] for n in report["nodes"]] == ["ready"] * 3
    assert (tmp_path / "rehearsal-out" / "inventory.yaml").exists()
    assert "rehearsal-password" not in proc.stdout + proc.stderr


def test_vsphere_example_plan_validates_offline(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("not used by validate\n")
    plan = (EXAMPLES / "vsphere-appliance.yaml").read_text().replace("~/.ssh/palette_ed25519", str(key))
    # validate checks that the local ISO and content bundle exist: give the example's paths real files.
    plan = plan.replace("/isos/", f"{tmp_path}/isos/")
    (tmp_path / "isos").mkdir()
    (tmp_path / "isos" / "packs").mkdir()
    for name in ("palette-management-appliance-4.9.iso", "palette-content-bundle-4.9.tar.zst",
                 "packs/edge-k8s-1.30.4.zst", "packs/cni-calico-3.28.0.zst"):
        (tmp_path / "isos" / name).write_bytes(b"\0" * 1024)
    (tmp_path / "plan.yaml").write_text(plan)
    env = {**os.environ, "NODE_PASSWORD": "n0de-pass", "VSPHERE_PASSWORD": "vc-pass", "OCI_REGISTRY_PASSWORD": "oci-pass-1",
           "CONSOLE_PASSWORD": "Console-Pass-2026!"}
    proc = subprocess.run([sys.executable, "-m", "palette_provision", "validate", str(tmp_path / "plan.yaml"), "--json"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["nodes"] == ["palette-1", "palette-2", "palette-3"]


def test_rack_server_example_applies_and_destroys_without_deleting_a_server(tmp_path: Path) -> None:
    shutil.copy(EXAMPLES / "fake-rack-servers.yaml", tmp_path / "plan.yaml")
    (tmp_path / "fake-appliance.iso").write_bytes(b"\0" * 1024)
    env = {**os.environ, "PALETTE_NODE_PASSWORD": "rehearsal-password", "BMC_PASSWORD": "bmc-secret-1"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "palette_provision", *args, str(tmp_path / "plan.yaml"), "--json"],
                              capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)

    applied = cli("apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert [n["name"] for n in json.loads(applied.stdout)["nodes"]] == ["rack-1", "rack-2", "rack-3"]
    destroyed = cli("destroy")
    assert destroyed.returncode == 0, destroyed.stderr
    machines = [r["result"] for r in json.loads(destroyed.stdout)["resources"] if r["kind"] == "machine"]
    assert machines == ["restored"] * 3
    state = json.loads((tmp_path / ".palette-provision" / "fake-rack-platform.json").read_text())
    assert len(state["servers"]) == 3 and all(s["power"] == "off" for s in state["servers"].values())
    for secret in ("rehearsal-password", "bmc-secret-1"):
        assert secret not in applied.stdout + applied.stderr + destroyed.stdout + destroyed.stderr
