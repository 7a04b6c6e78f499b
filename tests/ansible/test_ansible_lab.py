"""The runbook's vCenter-lab variant end to end on the offline lab (vcsim, a QEMU guest of the test appliance, a
Local API simulator at the node's address): one site of one node deployed and formed through the Local API, the
node read back by the inventory plugin from the journal and configured over SSH with its pinned host key, a re-run
that changes nothing, destroy. About a minute on two cores, most of it the guest's install and boot."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO, ansible_env, recap, run

pytestmark = [pytest.mark.lab, pytest.mark.qemu]

LAB = REPO / "lab"


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Any]:
    if os.geteuid() != 0:
        pytest.fail("the lab needs root (network namespaces, taps): run the suite through ./dev test")
    if str(LAB) not in sys.path:
        sys.path.insert(0, str(LAB))
    from vcsim.stack import VsphereLab

    lab = VsphereLab(tmp_path / "lab", nodes=1, name="ansible-lab")
    lab.up()
    try:
        yield lab
    finally:
        lab.down()


def test_runbook_on_the_vcenter_lab(lab: Any, tmp_path: Path) -> None:
    book = tmp_path / "book"
    shutil.copytree(REPO / "examples" / "ansible", book, ignore=shutil.ignore_patterns("work", "__pycache__"))
    env = ansible_env(tmp_path, ANSIBLE_CONFIG=str(book / "ansible.cfg"), PPLAB_WORKDIR=str(lab.workdir),
                      PPLAB_ROOT=str(LAB))
    first = run(["ansible-playbook", "-i", "inventory/vcenter-lab", "site.yml"], env, book, timeout=1500)
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-2000:]
    hosts = recap(first.stdout)
    assert hosts["lab-site"]["failed"] == 0 and hosts["palette-lab-1"]["failed"] == 0
    work = book / "work" / "lab-site"
    report = json.loads((work / "report.json").read_text())
    assert report["ok"] is True and report["handoff"]["cluster_state"] == "Running"
    [node] = report["nodes"]
    configured = json.loads((work / "configured" / "palette-lab-1.json").read_text())
    # Reached over SSH (raw uname on the guest), with the host key the deployment pinned.
    assert configured["kernel"].startswith("Linux palette-lab-1 ")
    assert configured["host_key_fingerprint"] == node["host_key_fingerprint"]
    known_hosts = work / ".palette-provision" / "lab-site" / "known_hosts"
    assert known_hosts.read_text().startswith("10.251.0.11 ssh-ed25519 ")

    again = run(["ansible-playbook", "-i", "inventory/vcenter-lab", "site.yml"], env, book, timeout=600)
    assert again.returncode == 0, again.stdout[-4000:]
    assert all(r["changed"] == 0 for r in recap(again.stdout).values()), again.stdout[-3000:]

    destroyed = run(["ansible-playbook", "-i", "inventory/vcenter-lab", "destroy.yml", "-e", "palette_purge_media=true"],
                    env, book, timeout=600)
    assert destroyed.returncode == 0, destroyed.stdout[-4000:]
    assert recap(destroyed.stdout)["lab-site"]["changed"] == 1
    assert lab.node_password not in first.stdout + first.stderr + again.stdout + destroyed.stdout
