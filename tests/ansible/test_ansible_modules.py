"""The collection's modules against the fake provider, through ansible-playbook: apply, an idempotent re-run,
check mode (the dry run, with a diff, and no side effect), destroy, plan errors with field paths, a failing node,
secrets, and the journal held by another run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema

from palette_provision.journal import Journal
from palette_provision.report_schema import REPORT_SCHEMA_VERSION, load_report_schema
from palette_provision.testing.fake import read_state

from ..conftest import NODE_PASSWORD, merged
from .conftest import NAMESPACE, Player, ansible_env

DEPLOYMENT = f"{NAMESPACE}.deployment"
INFO = f"{NAMESPACE}.deployment_info"
NODES = ["palette-1", "palette-2", "palette-3"]


def _journal_files(tmp_path: Path) -> str:
    """Everything under the state folder, as text (to look for secret values)."""
    root = tmp_path / ".palette-provision"
    return "".join(p.read_bytes().decode("latin-1") for p in root.rglob("*") if p.is_file()) if root.exists() else ""


def test_present_rerun_info_absent(
    plan_dict: dict[str, Any], write_plan: Callable[..., Path], player: Player, tmp_path: Path
) -> None:
    plan = str(write_plan(plan_dict))
    # The node password only where it is used: the applying tasks get it as secret_env, the status tasks and the
    # first destroy not at all (the play's environment does not have it), as an AWX status job holds no node
    # credential.
    secrets = {"PP_TEST_NODE_PASSWORD": NODE_PASSWORD}
    env = {k: v for k, v in ansible_env(tmp_path).items() if k != "PP_TEST_NODE_PASSWORD"}
    played = player([
        {DEPLOYMENT: {"plan_file": plan, "secret_env": secrets}},
        {DEPLOYMENT: {"plan_file": plan, "secret_env": secrets}},
        {INFO: {"plan_file": plan, "actions": True}},
        # Tearing down needs no node password either: destroy reads only the secrets it uses.
        {DEPLOYMENT: {"plan_file": plan, "state": "absent"}},
        {DEPLOYMENT: {"plan_file": plan, "state": "absent", "secret_env": secrets}},
        {INFO: {"plan_file": plan}},
    ], env=env)
    first, second, info, destroyed, again, after = played.results

    assert first["changed"] is True and first["ok"] is True and not first.get("failed")
    report = first["report"]
    assert [(n["name"], n["status"], n["address"]) for n in report["nodes"]] == [
        ("palette-1", "ready", "10.251.0.11"), ("palette-2", "ready", "10.251.0.12"), ("palette-3", "ready", "10.251.0.13"),
    ]
    assert report["handoff"]["kind"] == "inventory" and report["ok"] is True
    # The module returns the same versioned report as `apply --json`: runbooks can rely on its JSON Schema.
    jsonschema.Draft202012Validator(load_report_schema()).validate(report)
    assert report["schema_version"] == REPORT_SCHEMA_VERSION
    changes = first["journal_changes"]
    assert "step acquire on palette-2: ran (done)" in changes
    assert sum(1 for c in changes if c.startswith("resource machine ")) == 3
    assert any(c.startswith("resource media ") for c in changes)  # the ISO was uploaded

    # The re-run: preflight and the ISO's staging check ran again, found everything as recorded: no change.
    assert second["changed"] is False and second["journal_changes"] == [] and second["ok"] is True
    assert [n["status"] for n in second["report"]["nodes"]] == ["ready"] * 3

    assert not info.get("failed"), info.get("msg")
    assert info["changed"] is False and info["ready_nodes"] == NODES
    assert {s["status"] for s in info["status"]["steps"]} == {"done"}
    assert info["live_resources"] == sum(1 for r in info["status"]["resources"] if not r["destroyed"]) > 3
    assert {a["state"] for a in info["actions"]} == {"done"}
    assert info["status"]["nodes"]["palette-1"]["address"] == "10.251.0.11"

    assert destroyed["changed"] is True
    results = {(r["kind"], r["node"]): r["result"] for r in destroyed["destroyed"]}
    assert [results[("machine", n)] for n in NODES] == ["deleted"] * 3
    assert results[("media", "*")] == "kept"  # the ISO, without purge_media
    assert any(c.endswith(": destroyed") for c in destroyed["journal_changes"])
    assert read_state(tmp_path / "platform.json")["machines"] == {}

    assert again["changed"] is False and again["destroyed"] == []
    assert after["status"]["steps"] == [] and after["ready_nodes"] == []
    assert NODE_PASSWORD not in played.output + json.dumps(played.results) + _journal_files(tmp_path)


def test_check_mode_is_the_dry_run_with_a_diff_and_no_side_effect(
    plan_dict: dict[str, Any], write_plan: Callable[..., Path], player: Player, tmp_path: Path
) -> None:
    plan = str(write_plan(plan_dict))
    dry = player([
        {DEPLOYMENT: {"plan_file": plan}, "check_mode": True},
        {DEPLOYMENT: {"plan_file": plan, "until": "power_on"}, "check_mode": True},
        {DEPLOYMENT: {"plan_file": plan, "state": "absent"}, "check_mode": True},
        {INFO: {"plan_file": plan, "actions": True}},
    ], args=("--diff",))
    full, until, absent, info = dry.results
    assert full["changed"] is True and "report" not in full
    assert {a["state"] for a in full["actions"]} == {"pending"}
    assert [a["phase"] for a in full["actions"]][:3] == ["preflight", "stage_media", "stage_seed"]
    assert full["actions"][-1]["phase"] == "handoff.inventory"
    assert "[pending] acquire palette-2: " in full["diff"]["before"]
    assert "[done] acquire palette-2: " in full["diff"]["after"]
    assert "+[done] acquire palette-2" in dry.proc.stdout  # shown by ansible-playbook --diff
    phases = {a["phase"] for a in until["actions"]}
    assert "power_on" in phases and "await_install" not in phases and "handoff" not in phases
    assert absent["changed"] is False and absent["destroyed"] == []
    assert not info.get("failed") and info["status"]["steps"] == [] and info["ready_nodes"] == []
    assert {a["state"] for a in info["actions"]} == {"pending"}
    # Nothing was touched, by the dry runs or the status: no state folder, no journal, no platform call.
    assert not (tmp_path / ".palette-provision").exists()
    assert not (tmp_path / "platform.json").exists()

    played = player([
        {DEPLOYMENT: {"plan_file": plan, "until": "acquire"}},
        {DEPLOYMENT: {"plan_file": plan}, "check_mode": True},
        {DEPLOYMENT: {"plan_file": plan, "until": "acquire"}},
        {DEPLOYMENT: {"plan_file": plan, "state": "absent"}, "check_mode": True},
    ])
    partial, dry_after, rerun, dry_absent = played.results
    assert partial["changed"] is True and [n["status"] for n in partial["report"]["nodes"]] == ["ready"] * 3
    assert partial["report"]["handoff"] is None
    states = {(a["phase"], a["node"]): a["state"] for a in dry_after["actions"]}
    assert states[("acquire", "palette-1")] == "done" and states[("insert_media", "palette-1")] == "pending"
    assert dry_after["changed"] is True
    assert rerun["changed"] is False
    assert dry_absent["changed"] is True
    undone = {(r["kind"], r["node"]): r["result"] for r in dry_absent["destroyed"]}
    assert undone[("machine", "palette-1")] == "would be undone" and undone[("media", "*")] == "kept"
    assert "machine " in dry_absent["diff"]["before"] and "machine " not in dry_absent["diff"]["after"]
    # Check mode destroyed nothing.
    assert len(read_state(tmp_path / "platform.json")["machines"]) == 3


def test_plan_errors_fail_with_every_issue_and_its_field_path(
    plan_dict: dict[str, Any], write_plan: Callable[..., Path], player: Player, tmp_path: Path
) -> None:
    inline_secret = "hunter2-typed-inline"
    broken = merged(plan_dict, nodes__count=2, cluster__vip="nope", cluster__node_account__password=inline_secret)
    plan = str(write_plan(plan_dict))
    played = player([
        {DEPLOYMENT: {"plan": broken, "base_dir": str(tmp_path)}},
        {DEPLOYMENT: {"plan": broken, "base_dir": str(tmp_path)}, "check_mode": True},
        {DEPLOYMENT: {"plan_file": plan, "until": "no_such_phase"}},
        {DEPLOYMENT: {"plan_file": str(tmp_path / "missing.yaml")}},
        {DEPLOYMENT: {"plan_file": plan, "plan": plan_dict}},
        {INFO: {"plan": broken}},
    ])
    for result in (played[0], played[1], played[5]):
        assert result["failed"] is True and result["error"] == "PlanError"
        paths = {i["path"] for i in result["issues"]}
        assert {"cluster.vip", "cluster.node_account.password"} <= paths, paths
        assert "cluster.vip" in result["msg"] and "cluster.node_account.password" in result["msg"]
        assert all(i["message"] for i in result["issues"])
    until = played[2]
    assert until["failed"] is True and until["issues"][0]["path"] == "until"
    assert "power_on" in until["issues"][0]["message"]  # the phases it could have named
    assert played[3]["failed"] is True and "cannot read plan file" in played[3]["msg"]
    assert played[4]["failed"] is True and "mutually exclusive" in played[4]["msg"]
    assert inline_secret not in played.output + json.dumps(played.results)
    assert not (tmp_path / ".palette-provision").exists()


def test_a_failing_node_fails_the_task_with_the_per_node_errors(
    plan_dict: dict[str, Any], write_plan: Callable[..., Path], player: Player, tmp_path: Path
) -> None:
    plan = str(write_plan(merged(plan_dict, platform__fail={"palette-3": "create_machine"},
                                 nodes__wipe_install_disk=True)))
    played = player([{DEPLOYMENT: {"plan_file": plan}}, {DEPLOYMENT: {"plan_file": plan}}])
    first, again = played.results
    assert first["failed"] is True and first["changed"] is True and first["ok"] is False
    assert first["errors"][0].startswith("palette-3 failed in acquire: ")
    assert "palette-3 failed in acquire" in first["msg"] and first["msg"].startswith("deployment test-deploy: ")
    nodes = {n["name"]: n for n in first["report"]["nodes"]}
    assert nodes["palette-3"]["status"] == "failed" and nodes["palette-3"]["phase"] == "acquire"
    assert nodes["palette-3"]["error"]
    assert nodes["palette-1"]["status"] == nodes["palette-2"]["status"] == "ready"
    assert first["report"]["handoff"] is None  # no hand-off while a node failed
    # The library's warnings (here: the install disk is wiped, as the plan asked) come back as module warnings.
    assert any("install_disk_wiped_before_install" in w for w in first["warnings"])
    # Run again: the failing step is tried again (a change: it acted), and fails again with the same errors.
    assert again["failed"] is True and again["errors"] == first["errors"]
    assert "step acquire on palette-3: ran again (failed)" in again["journal_changes"]
    assert played.proc.stdout.count("fatal: [localhost]") == 2


def test_secrets_come_from_secret_env_and_never_show(
    plan_dict: dict[str, Any], write_plan: Callable[..., Path], player: Player, tmp_path: Path
) -> None:
    values = {"PP_ANS_NODE_PW": "node-Secret-4711", "PP_ANS_PLATFORM_PW": "platform-Secret-0815",
              "PP_ANS_WRONG_PW": "wrong-Secret-1234"}
    data = merged(plan_dict, cluster__node_account__password="env:PP_ANS_NODE_PW",
                  platform__password="env:PP_ANS_WRONG_PW", platform__expected_password="env:PP_ANS_PLATFORM_PW")
    good = merged(data, platform__password="env:PP_ANS_PLATFORM_PW")
    played = player([
        {DEPLOYMENT: {"plan": data, "base_dir": str(tmp_path), "secret_env": values}},
        {DEPLOYMENT: {"plan": good, "base_dir": str(tmp_path), "secret_env": values}},
        {DEPLOYMENT: {"plan": good, "base_dir": str(tmp_path)}},
        # state=absent with the platform's password only: read when the provider logs in, masked like the others.
        {DEPLOYMENT: {"plan": good, "base_dir": str(tmp_path), "state": "absent",
                      "secret_env": {"PP_ANS_PLATFORM_PW": values["PP_ANS_PLATFORM_PW"]}}},
    ], args=("-vvv",))
    rejected, applied, without, destroyed = played.results
    assert rejected["failed"] is True and rejected["error"] == "AuthenticationError"
    assert rejected["field"] == "platform.password" and "nothing was changed" in rejected["msg"]
    assert rejected["changed"] is False and rejected["journal_changes"] == []  # a refused preflight is no change
    assert applied["changed"] is True and applied["ok"] is True
    # Without secret_env (and not in ansible-playbook's environment), the reference does not resolve: named, not shown.
    assert without["failed"] is True and "PP_ANS_NODE_PW" in without["msg"]
    assert destroyed["changed"] is True and not destroyed.get("failed"), destroyed.get("msg")
    assert read_state(tmp_path / "platform.json")["machines"] == {}
    # -vvv shows each invocation's arguments: secret_env's values masked (no_log), its names kept.
    assert '"PP_ANS_NODE_PW": "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"' in played.proc.stdout
    shown = played.output + json.dumps(played.results) + _journal_files(tmp_path)
    shown += "".join(p.read_text() for p in (tmp_path / "out").iterdir())
    for value in values.values():
        assert value not in shown, "a secret value was shown"


def test_status_works_while_another_run_holds_the_journal(
    plan_dict: dict[str, Any], write_plan: Callable[..., Path], player: Player, tmp_path: Path
) -> None:
    plan = str(write_plan(plan_dict))
    assert player([{DEPLOYMENT: {"plan_file": plan, "until": "acquire"}}])[0]["changed"] is True
    with Journal.open(tmp_path / ".palette-provision" / "test-deploy" / "journal.sqlite", deployment="test-deploy"):
        played = player([{DEPLOYMENT: {"plan_file": plan}}, {INFO: {"plan_file": plan}},
                         {DEPLOYMENT: {"plan_file": plan}, "check_mode": True}])
    busy, info, dry = played.results
    assert busy["failed"] is True and busy["error"] == "JournalError" and "in use" in busy["msg"]
    assert not info.get("failed")
    assert {s["phase"] for s in info["status"]["steps"]} >= {"preflight", "acquire"}
    assert dry["changed"] is True and any(a["state"] == "done" for a in dry["actions"])


def test_inline_plan_relative_paths_resolve_against_base_dir(
    plan_dict: dict[str, Any], player: Player, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "appliance.iso").write_bytes(b"\0" * 2048)
    data = merged(plan_dict, iso__source="appliance.iso", platform__state_file="platform.json",
                  handoff__output_dir="out")
    played = player([{DEPLOYMENT: {"plan": data, "base_dir": str(site)}}],
                    env=ansible_env(tmp_path))
    assert played[0]["ok"] is True
    assert (site / ".palette-provision" / "test-deploy").is_dir() and (site / "out" / "nodes.json").is_file()
    assert (site / "platform.json").is_file()
