"""End to end on the offline vCenter lab with a DHCP plan (``nodes.network: {mode: dhcp}``, no address anywhere in
the plan or the seed): the lab serves DHCP on its LAN from a pool, the guest takes a lease, the watcher reports it
to vcsim as VMware Tools would (``guest.ipAddress``), the library discovers it through vSphere, and each node's Local
API simulator answers at its lease (DNATed once the lease is known). Three nodes (they cost little more than one
here, ~70 s in all on 2 cores), so the followers link to the leader at its lease too. Apply reaches a formed
cluster; destroy cleans up.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.qemu]

LAB = Path(__file__).resolve().parents[2] / "lab"
NODES = 3


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(LAB), os.environ.get("PYTHONPATH")]))}


def _cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "palette_provision", *args], capture_output=True, text=True,
                          timeout=timeout, env=_env(), stdin=subprocess.DEVNULL)


def test_a_failed_up_stops_the_dhcp_server_it_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A DHCP server left behind answers every later guest on the LAN from its pool (a QEMU test's guest once leased
    # 10.251.0.209 from one, instead of its own server's static lease). Runs before the module's lab is up.
    if os.geteuid() != 0:
        pytest.fail("the lab needs root (network namespaces, taps): run the suite through ./dev test")
    sys.path.insert(0, str(LAB))
    from vcsim.stack import VsphereLab

    def vcsim_fails(self: Any) -> None:
        assert (self.workdir / "dhcp.pid").exists(), "the DHCP server was started first"
        raise RuntimeError("vcsim.lab up failed: (injected)")

    monkeypatch.setattr(VsphereLab, "_start_vcsim", vcsim_fails)
    workdir = tmp_path / "failing-lab"
    with pytest.raises(RuntimeError, match="injected"):
        VsphereLab(workdir, nodes=1, name="e2e-failed-up", dhcp=True).up()
    conf = str(workdir / "dhcp" / "udhcpd.conf").encode()
    running = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if conf in (proc / "cmdline").read_bytes().split(b"\0"):
                    running.append(proc.name)
            except OSError:
                continue
    assert running == [], "udhcpd outlived the failed up"
    assert not (workdir / "dhcp.pid").exists()


@pytest.fixture(scope="module")
def dhcp_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if os.geteuid() != 0:
        pytest.fail("the lab needs root (network namespaces, taps): run the suite through ./dev test")
    sys.path.insert(0, str(LAB))
    from vcsim.stack import VsphereLab

    lab = VsphereLab(tmp_path_factory.mktemp("vsphere-lab-dhcp"), nodes=NODES, name="e2e-dhcp", dhcp=True)
    lab.up()
    try:
        yield lab
    finally:
        lab.down()


def _vcsim_vms(lab: Any) -> dict[str, str | None]:
    """The lab's VMs: name -> guest.ipAddress as vcsim shows it."""
    from pyVmomi import vim
    from vcsim.lab import connect_to, disconnect

    si = connect_to(lab.state["host"], lab.state["port"], lab.state["username"],
                    (lab.workdir / "vcsim-password").read_text().strip(), Path(lab.state["cert_path"]))
    try:
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
        return {vm.name: vm.guest.ipAddress for vm in view.view if vm.name.startswith("lab-")}
    finally:
        disconnect(si)


def test_dhcp_plan_reaches_a_formed_cluster_at_the_leases_then_destroys(dhcp_lab: Any) -> None:
    from vcsim.localapis import DHCP_POOL

    lab = dhcp_lab
    assert lab.plan()["nodes"]["network"] == {"mode": "dhcp"}
    assert [n["ip"] for n in lab.local_api_nodes()] == [None] * NODES, "nothing DNATed before a guest has a lease"

    started = time.monotonic()
    applied = _cli("apply", str(lab.plan_path), "--json")
    apply_s = time.monotonic() - started
    assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]
    report = json.loads(applied.stdout)
    assert report["handoff"]["cluster_state"] == "Running"
    nodes = report["nodes"]
    assert [n["status"] for n in nodes] == ["ready"] * NODES, nodes

    # Every address is a lease of the lab's DHCP server, from its pool: no static lab address, none planned.
    leases = [n["address"] for n in nodes]
    assert len(set(leases)) == NODES, leases
    first, last = (ipaddress.IPv4Address(a) for a in DHCP_POOL)
    dhcp_log = lab.dhcp_log.read_text()
    consoles = "".join(p.read_text(errors="replace") for p in (lab.vcsim_dir / "watcher").rglob("console-*-disk.log"))
    for lease in leases:
        assert first <= ipaddress.IPv4Address(lease) <= last, lease
        assert f"sending ACK to {lease}" in dhcp_log, dhcp_log[-2000:]
        assert f"network: eth0 dhcp lease {lease}/24 router=10.251.0.1" in consoles, lease
    # Found through the platform: vcsim's guest.ipAddress, which the watcher set from each guest's lease.
    assert [n["address_source"] for n in nodes] == ["platform"] * NODES, nodes
    vm_names = [f"lab-{n['name']}" for n in nodes]
    assert _vcsim_vms(lab) == dict(zip(vm_names, leases, strict=True))
    watched = json.loads((lab.vcsim_dir / "watcher" / "addresses.json").read_text())["vms"]
    assert {name: (v["ip"], v["source"]) for name, v in watched.items()} == {
        name: (lease, "dhcp") for name, lease in zip(vm_names, leases, strict=True)
    }
    for node in nodes:
        rungs = [e["rung"] for e in node["evidence"]]
        assert rungs[-5:] == ["address", "ssh_banner", "host_key", "ssh_session", "local_api"], node["name"]
    # The simulators answered at the leases and report them as their addresses: the cluster's hosts are there.
    assert sorted(n["ip"] for n in lab.local_api_nodes()) == sorted(leases)
    cluster = json.loads((lab.workdir / "local-api" / "node1" / "state.json").read_text())["cluster"]
    assert sorted(h["ip"] for h in cluster["hosts"]) == sorted(leases)
    print(f"apply took {apply_s:.1f} s; leases {leases}")

    destroyed = _cli("destroy", str(lab.plan_path), "--json")
    assert destroyed.returncode == 0, destroyed.stdout[-3000:] + destroyed.stderr[-3000:]
    assert _vcsim_vms(lab) == {}
