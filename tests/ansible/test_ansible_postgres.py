"""The collection against a PostgreSQL journal, as AWX runs it: a job killed mid-run in one checkout, resumed and
destroyed by jobs in a copy of the checkout elsewhere, with nothing but the database carried over.

Checkout A holds the plan (the ISO and the hand-off folder relative to it, a ``journal:`` section naming the
PostgreSQL server) and a playbook calling the ``deployment`` module. Its ``ansible-playbook`` job is SIGKILLed, with
every process it started, once the journal shows palette-2 powered on for its install. Checkout B is a copy of A
without A's state folder: there, ``deployment_info`` and the inventory plugin read the deployment with only the
journal's password set, a ``deployment`` task fails clearly while another writer holds the deployment's lock, then a
job resumes the deployment (no machine created twice, no step done before the kill run again) and destroys it. The
fake provider's platform (a JSON file outside both checkouts) stands for the shared vCenter.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from palette_provision.journal import Journal
from palette_provision.secrets import Secret
from palette_provision.testing.fake import read_state

from ..conftest import NODE_PASSWORD, PG_PASSWORD_ENV, base_plan, pg_journal
from .conftest import BIN, NAMESPACE, Player, ansible_env, run, unwrap

DEPLOYMENT = f"{NAMESPACE}.deployment"
INFO = f"{NAMESPACE}.deployment_info"
NODES = ["palette-1", "palette-2", "palette-3"]
SECRETS = {"PP_TEST_NODE_PASSWORD": NODE_PASSWORD}


def _checkout_a(tmp_path: Path, journal: dict[str, Any]) -> Path:
    checkout = tmp_path / "checkout-a"
    checkout.mkdir()
    data = base_plan(checkout)
    data["iso"]["source"] = "appliance.iso"  # beside the plan, in the checkout
    data["handoff"]["output_dir"] = "out"
    platform = tmp_path / "vcenter"
    platform.mkdir()
    # A slow installer: the kill lands while the nodes install.
    data["platform"].update(state_file=str(platform / "platform.json"), install_seconds=3)
    data["journal"] = journal
    (checkout / "plan.yaml").write_text(yaml.safe_dump(data))
    (checkout / "deploy.yml").write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False,
        "tasks": [{"name": "deploy", DEPLOYMENT: {"plan_file": "{{ playbook_dir }}/plan.yaml"}}]}]))
    return checkout


def _steps(cluster: Any, schema: str) -> dict[tuple[str, str], tuple[str, int, float | None]]:
    """The journal's steps, read straight from the deployment's schema: (phase, node) -> (status, attempts, start)."""
    import psycopg

    with psycopg.connect(cluster.url, password=cluster.password, connect_timeout=10) as conn:
        exists = conn.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = "
                              "'steps'", (schema,)).fetchone()  # fmt: skip
        if not exists:
            return {}
        rows = conn.execute(f'SELECT phase, node, status, attempts, started_at FROM "{schema}".steps').fetchall()
    return {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}


def _descendants(root: int) -> set[int]:
    """``root`` and every process below it (from /proc's parent links)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree = {root}
    while grown := {pid for pid, parent in parents.items() if parent in tree} - tree:
        tree |= grown
    return tree


def _kill_tree(root: int) -> None:
    """SIGKILL a job the way a container's end does: every process of it at once. Ansible's workers leave the
    job's session (setsid), so a process-group kill would miss the module; the tree is frozen first, so nothing
    forks out of it between reading it and the kill."""
    frozen: set[int] = set()
    while tree := _descendants(root) - frozen:
        for pid in tree:
            _signal(pid, signal.SIGSTOP)
        frozen |= tree
    for pid in frozen:
        _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _kill_job_once(cluster: Any, schema: str, checkout: Path, env: dict[str, str]) -> None:
    job = subprocess.Popen([str(BIN / "ansible-playbook"), "deploy.yml"], cwd=checkout, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while _steps(cluster, schema).get(("power_on", "palette-2"), ("",))[0] != "done":
            assert job.poll() is None, "the job ended before the kill"
            assert time.monotonic() < deadline, "palette-2 was never powered on"
            time.sleep(0.1)
    finally:
        if job.poll() is None:  # not reaped yet: its pid is still its own
            _kill_tree(job.pid)  # the job and every process it started (the module among them)
        output = job.communicate(timeout=30)[0].decode()
    assert job.returncode == -signal.SIGKILL, output[-3000:]


def test_a_job_killed_in_one_checkout_resumes_and_is_destroyed_from_a_copy(
    pg_cluster: Any, player: Player, tmp_path: Path
) -> None:
    journal = pg_journal(pg_cluster)
    schema = journal["schema"]
    checkout_a = _checkout_a(tmp_path, journal)
    # Every job's environment holds the journal's password only; the node password comes as secret_env.
    env = {k: v for k, v in ansible_env(tmp_path).items() if k != "PP_TEST_NODE_PASSWORD"}
    assert env[PG_PASSWORD_ENV] == pg_cluster.password
    _kill_job_once(pg_cluster, schema, checkout_a, {**env, "PP_TEST_NODE_PASSWORD": NODE_PASSWORD})
    at_kill = _steps(pg_cluster, schema)
    done_at_kill = {key: row for key, row in at_kill.items() if row[0] == "done"}
    assert ("acquire", "palette-2") in done_at_kill and ("await_ready", "palette-2") not in done_at_kill
    assert not (checkout_a / ".palette-provision" / "test-deploy" / "journal.sqlite").exists()

    checkout_b = tmp_path / "checkout-b"
    shutil.copytree(checkout_a, checkout_b, ignore=shutil.ignore_patterns(".palette-provision", "out"))
    plan_b = str(checkout_b / "plan.yaml")

    # Another writer holds the deployment (as a running job would): status reads it, a deployment task fails clearly.
    holder = Journal.open_postgres(pg_cluster.url, password=Secret(pg_cluster.password, source="test"),
                                   schema=schema, deployment="test-deploy")  # fmt: skip
    try:
        info, busy = player([{INFO: {"plan_file": plan_b}},
                             {DEPLOYMENT: {"plan_file": plan_b, "secret_env": SECRETS}}], env=env).results
    finally:
        holder.close()
    assert not info.get("failed"), info.get("msg")
    assert info["status"]["journal"].startswith("postgresql://pp@127.0.0.1")
    shown = {(s["phase"], s["node"]): s["status"] for s in info["status"]["steps"]}
    assert {key: "done" for key in done_at_kill}.items() <= shown.items()
    assert info["ready_nodes"] == []
    assert busy["failed"] is True and busy["error"] == "JournalError"
    assert "in use by another palette-provision process" in busy["msg"] and busy["changed"] is False

    resumed = player([{DEPLOYMENT: {"plan_file": plan_b, "secret_env": SECRETS}}], env=env)[0]
    assert resumed["ok"] is True and resumed["changed"] is True, resumed.get("msg")
    assert [(n["name"], n["status"]) for n in resumed["report"]["nodes"]] == [(n, "ready") for n in NODES]
    state = read_state(tmp_path / "vcenter" / "platform.json")
    assert sorted(a["node"] for a in state["actions"] if a["op"] == "create_machine") == NODES, "no machine twice"
    assert {n: m["installs"] for n, m in state["machines"].items()} == dict.fromkeys(NODES, 1)
    assert sum(1 for a in state["actions"] if a["op"] == "power_on" and a["node"] == "palette-2") == 2
    after = _steps(pg_cluster, schema)
    # preflight and stage_media look at the platform on every run (read-only, content-addressed); nothing else
    # done before the kill ran again, and the ISO, at another path in checkout B, was not uploaded again.
    redone = [key for key, row in done_at_kill.items() if after[key][1:] != row[1:]]
    assert sorted(redone) == [("preflight", "*"), ("stage_media", "*")], redone
    assert sum(1 for a in state["actions"] if a["op"] == "stage_media" and a["node"] is None) == 1
    assert not any(f"{phase} on {node}:" in change for phase, node in done_at_kill
                   for change in resumed["journal_changes"])
    assert (checkout_b / "out" / "nodes.json").is_file()
    assert not (checkout_b / ".palette-provision" / "test-deploy" / "journal.sqlite").exists()

    # The inventory plugin in plan_file mode, from checkout B, with the journal's password only.
    config = checkout_b / "nodes.palette_provision.yml"
    config.write_text(yaml.safe_dump({"plugin": f"{NAMESPACE}.journal", "plan_file": ["plan.yaml"]}))
    inventory = run(["ansible-inventory", "-i", str(config), "--list"], env, checkout_b)
    assert inventory.returncode == 0 and "[WARNING]" not in inventory.stderr, inventory.stderr
    hostvars = unwrap(json.loads(inventory.stdout))["_meta"]["hostvars"]
    assert [hostvars[n]["ansible_host"] for n in NODES] == ["10.251.0.11", "10.251.0.12", "10.251.0.13"]
    assert all(hostvars[n]["palette_host_key_fingerprint"].startswith("SHA256:") for n in NODES)
    assert {hostvars[n]["palette_source"] for n in NODES} == {"journal"}

    destroyed, gone = player([{DEPLOYMENT: {"plan_file": plan_b, "state": "absent", "purge_media": True,
                                            "secret_env": SECRETS}},
                              {INFO: {"plan_file": plan_b}}], env=env).results
    assert destroyed["changed"] is True and not destroyed.get("failed"), destroyed.get("msg")
    results = {(r["kind"], r["node"]): r["result"] for r in destroyed["destroyed"]}
    assert [results[("machine", n)] for n in NODES] == ["deleted"] * 3
    final = read_state(tmp_path / "vcenter" / "platform.json")
    assert final["machines"] == {} and final["media"] == {}
    assert sorted(a["node"] for a in final["actions"] if a["op"] == "delete_machine") == NODES
    assert gone["live_resources"] == 0 and gone["ready_nodes"] == []
