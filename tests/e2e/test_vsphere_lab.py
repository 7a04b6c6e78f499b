"""End to end on the offline lab: vcsim, QEMU guests of the test appliance, Local API simulators at the nodes'
addresses. One deployment proves the whole chain: the library's seed boots the appliance, the installer powers
the VM off, the library detaches the media and boots from disk, the readiness ladder reaches an authenticated SSH
session with the pre-seeded host key pinned and the Local API, the cluster is formed, and destroy cleans up.
The same deployment is killed (SIGKILL) after every phase and resumed each time, without any side effect repeated.
The lab's watcher (which boots powered-on VMs in QEMU) is proven here too: the address and host name it reports to
vcsim, the guest and its disk gone with the VM, and a clean stop on SIGTERM.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from palette_provision.journal import Journal

from ..killer import KILL_AFTER_PHASE

pytestmark = [pytest.mark.lab, pytest.mark.qemu]

LAB = Path(__file__).resolve().parents[2] / "lab"




def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(LAB), os.environ.get("PYTHONPATH")]))}


def _cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "palette_provision", *args], capture_output=True, text=True,
                          timeout=timeout, env=_env(), stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if os.geteuid() != 0:
        pytest.fail("the lab needs root (network namespaces, taps): run the suite through ./dev test")
    sys.path.insert(0, str(LAB))
    from vcsim.stack import VsphereLab

    lab = VsphereLab(tmp_path_factory.mktemp("vsphere-lab"), nodes=1, name="e2e-one")
    lab.up()
    try:
        yield lab
    finally:
        lab.down()
    # The watcher stopped on SIGTERM as users stop it: every guest stopped, then a clean exit (not a SIGKILL).
    watcher_log = (lab.vcsim_dir / "watcher.log").read_text(errors="replace")
    assert "signal_received signal=SIGTERM" in watcher_log and "watcher_stopped" in watcher_log, watcher_log[-3000:]


def _vcsim_guests(lab: Any) -> dict[str, tuple[str, str | None, str | None]]:
    """The lab's VMs in vcsim: name -> (power state, guest.ipAddress, guest.hostName)."""
    from vcsim.lab import connect_to, disconnect

    si = connect_to(lab.state["host"], lab.state["port"], lab.state["username"],
                    (lab.workdir / "vcsim-password").read_text().strip(), Path(lab.state["cert_path"]))
    try:
        content = si.RetrieveContent()
        from pyVmomi import vim

        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
        return {vm.name: (vm.runtime.powerState, vm.guest.ipAddress, vm.guest.hostName)
                for vm in view.view if vm.name.startswith("lab-")}  # fmt: skip
    finally:
        disconnect(si)


def _vcsim_vms(lab: Any) -> list[str]:
    return sorted(_vcsim_guests(lab))


def _sim_state(lab: Any, node: str = "node1") -> dict[str, Any]:
    state_files = list((lab.workdir / "local-api" / node).glob("*.json"))
    assert state_files, "the simulator persisted no state"
    data: dict[str, Any] = json.loads(state_files[0].read_text())
    return data


def _datastore_files(lab: Any) -> list[str]:
    root = Path(lab.state["datastore_dir"])
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "palette-provision" in str(p))


PHASES = [("preflight", "*"), ("stage_media", "*"), ("stage_seed", "n"), ("acquire", "n"),
          ("insert_media", "n"), ("boot_once_from_cd", "n"), ("power_on", "n"), ("await_install", "n"),
          ("boot_from_disk", "n"), ("await_ready", "n")]


def test_killed_after_every_phase_resumes_to_a_formed_cluster(lab: Any) -> None:
    node = "palette-lab-1"
    for phase, who in PHASES:
        killed = subprocess.run([sys.executable, "-c", KILL_AFTER_PHASE, str(lab.plan_path), phase,
                                 node if who == "n" else "*"], capture_output=True, text=True, timeout=900, env=_env())
        assert killed.returncode == -signal.SIGKILL, f"not killed after {phase}: {killed.stderr[-3000:]}"
        assert _vcsim_vms(lab) in ([], ["lab-palette-lab-1"]), "a second VM was created on resume"
    applied = _cli("apply", str(lab.plan_path), "--json")
    assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]
    report = json.loads(applied.stdout)
    [result] = report["nodes"]
    assert (result["status"], result["address"]) == ("ready", "10.251.0.11")
    rungs = [e["rung"] for e in result["evidence"]]
    assert rungs[-5:] == ["address", "ssh_banner", "host_key", "ssh_session", "local_api"]
    assert report["handoff"]["cluster_state"] == "Running"
    # Validated as the documentation does, through the VIP (the console and the Kubernetes API, DNATed).
    checks = [e["check"] for e in report["handoff"]["details"]["validation"]]
    assert checks == ["validate.cluster", "validate.applications", "validate.pods", "validate.console_password",
                      "validate.console_health", "packs.upload:edge-k8s-1.30.4.zst",
                      "packs.upload:cni-calico-3.28.0.zst", "packs.sync"]
    assert "2 pack(s) found" in report["handoff"]["details"]["validation"][-1]["answered"]
    assert _sim_state(lab)["cluster"]["console"]["passwordReset"] is True, "admin/admin rotated"
    kubeconfig = Path(report["handoff"]["kubeconfig"])
    assert kubeconfig.stat().st_mode & 0o777 == 0o600

    # The pinned host key is the one the library generated and put in the seed.
    with Journal.open(lab.workdir / ".palette-provision" / "e2e-one" / "journal.sqlite", deployment="e2e-one") as j:
        assert result["host_key_fingerprint"] == j.fact(node, "host_key_fingerprint")
        session = next(e for e in result["evidence"] if e["rung"] == "ssh_session")
        assert session["rung"] == "ssh_session"
    # No side effect repeated across eleven runs: one VM, one install, one upload, one cluster. What vcsim says of the
    # guest is what the watcher read from the booted disk: the seed's address and the appliance's own host name.
    assert _vcsim_guests(lab) == {"lab-palette-lab-1": ("poweredOn", "10.251.0.11", "palette-lab-1")}
    consoles = sorted(p.name for p in (lab.vcsim_dir / "watcher").rglob("*console*-cd.log"))
    assert len(consoles) == 1, f"the installer ran more than once: {consoles}"
    # The seed named the install disk by its by-path name (PVSCSI unit 0), not the larger storage-pool disk the
    # guest also had, and the appliance named itself from stylus.site.hostName.
    [install_log] = (lab.vcsim_dir / "watcher").rglob("*console*-cd.log")
    console = install_log.read_text(errors="replace")
    resolved = re.search(r"install: /dev/disk/by-path/pci-0000:03:00\.0-scsi-0:0:0:0 is (/dev/sd[ab])\b", console)
    assert resolved, console[-3000:]
    assert f"install: start #1 onto {resolved.group(1)}" in console, console[-3000:]
    assert "hostname=palette-lab-1" in console, console[-3000:]
    assert list((lab.vcsim_dir / "watcher").rglob("storage.img")), "the VM's storage-pool disk reached the guest"
    sim = _sim_state(lab)
    assert sim["stats"]["clustersCreated"] == 1
    uploaded = sorted(u["fileName"] for u in sim["stats"]["uploads"] if u.get("result") != "rejected")
    assert uploaded == ["cni-calico-3.28.0.zst", "content-bundle.tar.zst", "edge-k8s-1.30.4.zst"], "each file once"
    # The seed (private host key, password hash) is gone from the datastore and from the state folder.
    assert not any("seed" in f for f in _datastore_files(lab))
    assert not list((lab.workdir / ".palette-provision").rglob("*.iso"))
    # No secret anywhere the run wrote: journal, outputs, report, logs.
    secrets = [(lab.workdir / name).read_text().strip()
               for name in ("node-password", "vcsim-password", "console-password")]  # fmt: skip
    written = [p for p in (lab.workdir / ".palette-provision").rglob("*") if p.is_file()]
    written += [p for p in (lab.workdir / "out").rglob("*") if p.is_file()]
    blobs = [p.read_bytes() for p in written] + [applied.stdout.encode(), applied.stderr.encode()]
    for secret in secrets:
        assert not any(secret.encode() in blob for blob in blobs), "a secret reached the journal, outputs or logs"


def test_rerun_after_success_changes_nothing(lab: Any) -> None:
    before = _vcsim_vms(lab)
    applied = _cli("apply", str(lab.plan_path), "--json")
    assert applied.returncode == 0, applied.stderr[-3000:]
    with Journal.open(lab.workdir / ".palette-provision" / "e2e-one" / "journal.sqlite", deployment="e2e-one") as j:
        staged = j.step("stage_media")
        assert staged is not None and staged.data["uploaded_bytes"] == 0
    assert _vcsim_vms(lab) == before
    assert _sim_state(lab)["stats"]["clustersCreated"] == 1
    # On its own against the installed Palette: the checks again (no second rotation), the packs moving 0 bytes.
    validated = _cli("validate-install", str(lab.plan_path), "--json")
    assert validated.returncode == 0, validated.stderr[-3000:]
    checks = [e["check"] for e in json.loads(validated.stdout)["validation"]]
    assert checks[:3] == ["validate.cluster", "validate.applications", "validate.pods"]
    assert "validate.console_health" in checks and not any(c.startswith("packs.") for c in checks), "no pack step"
    pushed = _cli("push-packs", str(lab.plan_path), "--json")
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    said = json.loads(pushed.stdout)["validation"]
    assert [e["check"] for e in said] == ["packs.upload:edge-k8s-1.30.4.zst", "packs.upload:cni-calico-3.28.0.zst"]
    assert all("0 bytes sent" in e["answered"] for e in said), "0 bytes, no sync, no validate.* step"
    assert len(_sim_state(lab)["cluster"]["console"]["passwordChanges"]) == 1, "rotated once, ever"


def test_destroy_removes_vms_and_seeds_and_keeps_the_iso_unless_purged(lab: Any) -> None:
    guest_disks = list((lab.vcsim_dir / "watcher").glob("vm-*/disk.img"))
    assert len(guest_disks) == 1, guest_disks
    destroyed = _cli("destroy", str(lab.plan_path), "--json")
    assert destroyed.returncode == 0, destroyed.stderr[-3000:]
    assert _vcsim_vms(lab) == []
    # The watcher followed the VM: its QEMU guest stopped (nothing answers SSH at its address) and its disk is gone.
    from vcsim.watcher import _ssh_banner

    from palette_provision.waiting import wait_for

    wait_for(lambda: not _ssh_banner("10.251.0.11", 22, timeout=1.0) and not guest_disks[0].exists(),
             what="the watcher to stop the destroyed VM's guest and delete its disk", timeout=60)
    files = _datastore_files(lab)
    assert any(f.endswith("appliance.iso") for f in files)
    purged = _cli("destroy", str(lab.plan_path), "--purge-media", "--json")
    assert purged.returncode == 0
    # The ISO record was kept by the first destroy, so the purge finds and removes it.
    assert not any(f.endswith(".iso") for f in _datastore_files(lab))
