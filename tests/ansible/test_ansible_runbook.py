"""The runbook of examples/ansible, end to end with ansible-playbook on the fake provider (three sites, one of them
DHCP, at most palette_parallel_sites deploying at once, one failing then resumed, a re-run from Ansible Vault that
changes nothing, the configure play on an AWX-like inventory snapshot, destroy), and its vCenter-lab variant
checked offline (check mode against a stand-in of the lab's files; the lab run itself is test_ansible_lab.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from palette_provision.journal import Journal
from palette_provision.testing.fake import read_state

from .conftest import BIN, REPO, ansible_env, recap, run

EXAMPLE = REPO / "examples" / "ansible"
PASSWORD = "runbook-Node-Pass-42"
DHCP_ADDRESS = "10.251.1.57"
SITES = {"site-a": ["site-a-1", "site-a-2", "site-a-3"], "site-b": ["site-b-1"], "site-c": ["site-c-1"]}


def _copy_example(tmp_path: Path) -> Path:
    book = tmp_path / "book"
    shutil.copytree(EXAMPLE, book, ignore=shutil.ignore_patterns("work", "__pycache__"))
    return book


def _env(tmp_path: Path, book: Path, **extra: str) -> dict[str, str]:
    # The example's own ansible.cfg (pipelining, forks); the collection from the repository.
    return ansible_env(tmp_path, ANSIBLE_CONFIG=str(book / "ansible.cfg"), **extra)


def _status(plan: Path, env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "palette_provision", "status", str(plan), "--json"],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    status: dict[str, Any] = json.loads(proc.stdout)
    return status


def _all_text(folder: Path) -> str:
    return "".join(p.read_bytes().decode("latin-1") for p in folder.rglob("*") if p.is_file())


def _assert_sites_bounded(work: Path, bound: int) -> None:
    """From each site's journal (when its first step began, when its last one ended): at most ``bound`` sites were
    deploying at any instant, and at least two at some instant (the window ran sites in parallel)."""
    spans = []
    for site in SITES:
        with Journal.open_readonly(work / site / ".palette-provision" / site / "journal.sqlite",
                                   deployment=site) as journal:
            steps = journal.steps()
        spans.append((min(s.started_at for s in steps if s.started_at), max(s.finished_at or 0 for s in steps)))
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    active, most = 0, 0
    for _, change in events:  # at the same instant, an end (-1) sorts before a start
        active += change
        most = max(most, active)
    assert most <= bound, f"{most} sites deployed at once, the bound is {bound}: {spans}"
    assert most >= 2, f"no two sites deployed at the same time: {spans}"


def test_fleet_runbook_on_the_fake_provider(tmp_path: Path) -> None:
    book = _copy_example(tmp_path)
    work = book / "work"
    env = _env(tmp_path, book, PALETTE_NODE_PASSWORD=PASSWORD)

    # Run 1: site-c's only node fails to power on; site-a and site-b finish and are configured all the same.
    # Installs take a while, so sites overlap; site-b is a DHCP site (the fake platform reports its node's address).
    host_vars = book / "inventory" / "fake" / "host_vars"
    host_vars.mkdir()
    platform = {"provider": "fake", "state_file": "{{ palette_site_dir }}/fake-platform.json", "install_seconds": 1.5}
    (host_vars / "site-a.yml").write_text(yaml.safe_dump({"palette_platform": platform}))
    (host_vars / "site-b.yml").write_text(yaml.safe_dump({
        "palette_network": "dhcp", "palette_node_count": 1,
        "palette_platform": {**platform, "addresses": {"site-b-1": DHCP_ADDRESS}}}))
    (host_vars / "site-c.yml").write_text(yaml.safe_dump({"palette_platform": {
        **platform, "fail": {"site-c-1": "power_on"}}}))
    first = run(["ansible-playbook", "-i", "inventory/fake", "site.yml"], env, book)
    assert first.returncode == 2, first.stdout[-4000:]
    _assert_sites_bounded(work, bound=2)
    hosts = recap(first.stdout)
    assert hosts["site-c"]["failed"] == 1 and hosts["site-a"]["failed"] == hosts["site-b"]["failed"] == 0
    assert "site-c-1 failed in power_on" in first.stdout
    for site in ("site-a", "site-b"):
        assert sorted(p.stem for p in (work / site / "configured").glob("*.json")) == SITES[site]
        assert hosts[site]["changed"] > 0 and hosts[SITES[site][0]]["failed"] == 0
    assert "site-c-1" not in hosts and not (work / "site-c" / "configured").exists()
    status_c = _status(work / "site-c" / "plan.yaml", env)
    assert {(s["phase"], s["status"]) for s in status_c["steps"] if s["node"] == "site-c-1"} >= {("power_on", "failed")}

    # Run 2: the fault is gone; site-c resumes from power_on, the others are done (no change).
    (host_vars / "site-c.yml").write_text(yaml.safe_dump({"palette_platform": platform}))
    second = run(["ansible-playbook", "-i", "inventory/fake", "site.yml"], env, book)
    assert second.returncode == 0, second.stdout[-4000:]
    hosts = recap(second.stdout)
    assert hosts["site-c"]["changed"] > 0
    assert hosts["site-a"]["changed"] == hosts["site-b"]["changed"] == 0
    for site, nodes in SITES.items():
        status = _status(work / site / "plan.yaml", env)
        assert {s["status"] for s in status["steps"]} == {"done"}, site
        assert sum(1 for r in status["resources"] if r["kind"] == "machine" and not r["destroyed"]) == len(nodes)
        report = json.loads((work / site / "report.json").read_text())
        assert report["ok"] is True and [n["name"] for n in report["nodes"]] == nodes
        configured = [json.loads((work / site / "configured" / f"{n}.json").read_text()) for n in nodes]
        plan = yaml.safe_load((work / site / "plan.yaml").read_text())
        if site == "site-b":
            assert plan["nodes"]["network"] == {"mode": "dhcp"}
            assert report["nodes"][0]["address"] == configured[0]["address"] == DHCP_ADDRESS
            assert report["nodes"][0]["address_source"] == "platform"
        else:
            assert plan["nodes"]["network"]["mode"] == "static"  # the template's default
        assert [c["leader"] for c in configured] == [True] + [False] * (len(nodes) - 1)
        assert all(c["host_key_fingerprint"].startswith("SHA256:") for c in configured)
        assert len(read_state(work / site / "fake-platform.json")["machines"]) == len(nodes)

    # Run 3: the password from Ansible Vault (secret_env), not the environment: nothing changes anywhere.
    vault_pass = tmp_path / "vault-pass"
    vault_pass.write_text("vault-Key-for-the-test\n")
    vault = tmp_path / "vault.yml"
    vault.write_text(yaml.safe_dump({"vault_palette_node_password": PASSWORD}))
    no_env = {k: v for k, v in env.items() if k != "PALETTE_NODE_PASSWORD"}
    encrypted = run(["ansible-vault", "encrypt", str(vault), "--vault-password-file", str(vault_pass)], no_env, book)
    assert encrypted.returncode == 0 and PASSWORD not in vault.read_text(), encrypted.stderr
    third = run(["ansible-playbook", "-i", "inventory/fake", "site.yml", "-e", f"@{vault}",
                 "--vault-password-file", str(vault_pass)], no_env, book)
    assert third.returncode == 0, third.stdout[-4000:]
    hosts = recap(third.stdout)
    assert set(hosts) == set(SITES) | {n for nodes in SITES.values() for n in nodes}
    assert {h: r["changed"] for h, r in hosts.items()} == dict.fromkeys(hosts, 0)

    # AWX reads the inventory in another container: the configure play gets a snapshot whose known_hosts files are
    # missing, and writes them again from the hosts' pinned lines before connecting.
    snapshot = run(["ansible-inventory", "-i", "inventory/fake", "--list", "--export"], env, book)
    assert snapshot.returncode == 0, snapshot.stderr
    script = tmp_path / "snapshot-inventory"
    (tmp_path / "snapshot.json").write_text(snapshot.stdout)
    script.write_text(f"#!/bin/sh\ncat {tmp_path / 'snapshot.json'}\n")
    script.chmod(0o755)
    pinned = {site: (work / site / "out" / "known_hosts").read_text() for site in SITES}
    for site in SITES:
        (work / site / "out" / "known_hosts").unlink()
    configured = run(["ansible-playbook", "-i", str(script), "configure.yml", "-e", f"palette_work_dir={work}"],
                     env, book)
    assert configured.returncode == 0, configured.stdout[-4000:]
    assert {site: (work / site / "out" / "known_hosts").read_text() for site in SITES} == pinned

    # destroy.yml: every site's machines deleted; a second destroy changes nothing.
    destroyed = run(["ansible-playbook", "-i", "inventory/fake", "destroy.yml"], env, book)
    assert destroyed.returncode == 0, destroyed.stdout[-4000:]
    for site in SITES:
        assert read_state(work / site / "fake-platform.json")["machines"] == {}, site
    again = run(["ansible-playbook", "-i", "inventory/fake", "destroy.yml"], env, book)
    assert again.returncode == 0 and all(r["changed"] == 0 for r in recap(again.stdout).values())

    shown = "".join(p.stdout + p.stderr for p in (first, second, third, configured, destroyed, again))
    assert PASSWORD not in shown + _all_text(work), "the node password was shown or written"


def test_vcenter_lab_variant_renders_a_plan_the_vsphere_provider_accepts(tmp_path: Path) -> None:
    """Offline: the lab's files stood in for (vcsim's state, its passwords, a key pair, the ISO), check mode only.
    The real run boots a QEMU guest (minutes): see examples/ansible/README.md."""
    book = _copy_example(tmp_path)
    lab = tmp_path / "lab"
    (lab / "vcsim").mkdir(parents=True)
    (lab / "vcsim" / "state.json").write_text(json.dumps({
        "host": "127.0.0.1", "port": 8989, "username": "admin", "datastore": "datastore1",
        "thumbprint": ":".join(["AB"] * 32)}))
    for name in ("vcsim-password", "node-password"):
        (lab / name).write_text("stand-in-Secret-1\n")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lab", "-f", str(lab / "id_ed25519")],
                   check=True, stdin=subprocess.DEVNULL)
    (lab / "content-bundle.tar.zst").write_bytes(b"\0" * 1024)
    root = tmp_path / "lab-root"
    (root / "build").mkdir(parents=True)
    (root / "build" / "appliance.iso").write_bytes(b"\0" * 4096)
    env = _env(tmp_path, book, PPLAB_WORKDIR=str(lab), PPLAB_ROOT=str(root))
    proc = run(["ansible-playbook", "-i", "inventory/vcenter-lab", "site.yml", "--check", "--diff"], env, book)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "+[done] handoff.cluster *: create the cluster palette-lab" in proc.stdout
    assert "[pending] acquire palette-lab-1:" in proc.stdout
    assert recap(proc.stdout)["lab-site"]["failed"] == 0
    assert not (book / "work" / "lab-site" / ".palette-provision").exists()  # a dry run writes no journal
    assert "stand-in-Secret-1" not in proc.stdout + proc.stderr
    assert os.access(BIN / "ansible-playbook", os.X_OK)
