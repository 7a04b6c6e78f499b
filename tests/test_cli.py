"""The CLI: each command, its exit codes, and --json output parsed back."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from palette_provision.testing.fake import read_state

from .conftest import NODE_PASSWORD, merged


def test_validate_ok_and_json(plan_dict: dict[str, Any], write_plan: Callable[..., Path], cli: Any) -> None:
    plan = write_plan(plan_dict)
    result = cli("validate", str(plan), "--json")
    assert result.code == 0
    assert result.json() == {
        "valid": True,
        "plan": "test-deploy",
        "provider": "fake",
        "nodes": ["palette-1", "palette-2", "palette-3"],
        "install_method": "boot-from-media",
        "warnings": [],
    }
    assert cli("validate", str(plan)).stdout.strip().endswith("valid (3 node(s) on fake, boot-from-media)")


def test_validate_checks_seed_overrides_against_the_published_keys(
    plan_dict: dict[str, Any], write_plan: Callable[..., Path], cli: Any
) -> None:
    typos = {
        "stylus": {"site": {"hostname": "x", "network": {"interfaces": {"eth0": {"ipadress": "10.0.0.9/24"}}}},
                   "localUI": {"port": "5080"}, "managementMode": "remote"},
        "install": {"auto": "yes"},
    }  # fmt: skip
    result = cli("validate", str(write_plan(merged(plan_dict, user_data_extra=typos))), "--json")
    assert result.code == 2, result.stderr
    issues = {i["path"]: i["message"] for i in result.json()["issues"]}
    assert "hostName" in issues["user_data_extra.stylus.site.hostname"]  # did you mean
    assert "ipAddress" in issues["user_data_extra.stylus.site.network.interfaces.eth0.ipadress"]
    assert "user_data_extra.install.auto" in issues and "user_data_extra.stylus.managementMode" in issues
    # Keys the references do not list are warnings naming the key, and the plan stays valid.
    unlisted = {"stylus": {"someFutureKey": True}, "install": {"grub_options": {"extra_cmdline": "console=ttyS0"}}}
    result = cli("validate", str(write_plan(merged(plan_dict, user_data_extra=unlisted))), "--json")
    assert result.code == 0, result.stderr
    assert [w for w in result.json()["warnings"] if w.startswith("user_data_extra.stylus.someFutureKey")]
    text = cli("validate", str(write_plan(merged(plan_dict, user_data_extra=unlisted))))
    assert "warning: user_data_extra.stylus.someFutureKey" in text.stderr


def test_validate_lists_every_problem_exit_2(
    plan_dict: dict[str, Any], write_plan: Callable[..., Path], cli: Any
) -> None:
    plan = write_plan(merged(plan_dict, nodes__count=2, cluster__vip="nope"))
    result = cli("validate", str(plan), "--json")
    assert result.code == 2
    payload = result.json()
    assert payload["error"] == "PlanError" and payload["exit_code"] == 2
    paths = {i["path"] for i in payload["issues"]}
    assert {"cluster.vip"} <= paths
    text = cli("validate", str(plan))
    assert text.code == 2 and "cluster.vip" in text.stderr


def test_provider_validate_runs_in_validate(
    plan_dict: dict[str, Any], write_plan: Callable[..., Path], cli: Any
) -> None:
    plan = write_plan(merged(plan_dict, platform__max_nodes=2))
    result = cli("validate", str(plan), "--json")
    assert result.code == 2 and result.json()["issues"][0]["path"] == "nodes.count"


def test_plan_is_a_dry_run(
    plan_dict: dict[str, Any], write_plan: Callable[..., Path], cli: Any, tmp_path: Path
) -> None:
    plan = write_plan(plan_dict)
    result = cli("plan", str(plan), "--json")
    assert result.code == 0
    actions = result.json()["actions"]
    assert actions[0] == {
        "phase": "preflight",
        "node": "*",
        "state": "pending",
        "action": "check the plan against the platform (log in, resolve objects, capacity, name clashes)",
    }
    assert not (tmp_path / "platform.json").exists()
    assert "+ acquire         palette-2" in cli("plan", str(plan)).stdout


def test_apply_status_destroy(
    plan_dict: dict[str, Any], write_plan: Callable[..., Path], cli: Any, tmp_path: Path
) -> None:
    plan = write_plan(plan_dict)
    applied = cli("apply", str(plan), "--json")
    assert applied.code == 0, applied.stderr
    report = applied.json()
    assert report["ok"] is True
    assert [(n["name"], n["status"], n["address"]) for n in report["nodes"]] == [
        ("palette-1", "ready", "10.251.0.11"),
        ("palette-2", "ready", "10.251.0.12"),
        ("palette-3", "ready", "10.251.0.13"),
    ]
    assert all(n["host_key_fingerprint"].startswith("SHA256:") for n in report["nodes"])
    assert report["handoff"]["kind"] == "inventory" and len(report["handoff"]["files"]) >= 2
    text = cli("status", str(plan)).stdout
    assert "palette-2            await_ready done" in text and "address=10.251.0.12" in text
    assert "(deployment)         handoff done" in text
    status = cli("status", str(plan), "--json").json()
    assert {s["status"] for s in status["steps"]} == {"done"}
    assert sum(1 for r in status["resources"] if r["kind"] == "machine") == 3
    assert NODE_PASSWORD not in applied.stdout + applied.stderr + json.dumps(status)
    plan_after = cli("plan", str(plan), "--json").json()["actions"]
    assert {a["state"] for a in plan_after} == {"done"}
    destroyed = cli("destroy", str(plan), "--json")
    assert destroyed.code == 0
    results = destroyed.json()["resources"]
    assert sorted(r["result"] for r in results if r["kind"] == "machine") == ["deleted"] * 3
    assert [r["result"] for r in results if r["kind"] == "media"] == ["kept"]  # the ISO, without --purge-media
    assert read_state(tmp_path / "platform.json")["machines"] == {}


def test_apply_with_a_failed_node_exits_1(plan_dict: dict[str, Any], write_plan: Callable[..., Path], cli: Any) -> None:
    plan = write_plan(merged(plan_dict, platform__fail={"palette-3": "create_machine"}))
    result = cli("apply", str(plan), "--json")
    assert result.code == 1
    nodes = {n["name"]: n for n in result.json()["nodes"]}
    assert nodes["palette-3"]["phase"] == "acquire" and nodes["palette-3"]["status"] == "failed"
    text = cli("apply", str(plan))
    assert text.code == 1 and "failed in acquire" in text.stdout and "FAILED" in text.stdout


def test_preflight_rejection_exits_3_and_changes_nothing(
    plan_dict: dict[str, Any], write_plan: Callable[..., Path], cli: Any, tmp_path: Path
) -> None:
    plan = write_plan(
        merged(plan_dict, platform__expected_password="env:PP_TEST_NODE_PASSWORD", platform__password="env:PP_WRONG"),
    )
    result = cli("apply", str(plan), "--json", env={"PP_WRONG": "not-the-password"})
    assert result.code == 3
    assert result.json()["field"] == "platform.password"
    assert "not-the-password" not in result.stdout + result.stderr
    assert read_state(tmp_path / "platform.json")["actions"] == []


def test_journal_in_use_exits_5(
    plan_dict: dict[str, Any], write_plan: Callable[..., Path], cli: Any, tmp_path: Path
) -> None:
    from palette_provision.journal import Journal

    plan = write_plan(plan_dict)
    with Journal.open(tmp_path / ".palette-provision" / "test-deploy" / "journal.sqlite", deployment="test-deploy"):
        result = cli("apply", str(plan), "--json")
    assert result.code == 5 and "in use" in result.json()["message"]


def test_seed_command_writes_private_seeds(
    plan_dict: dict[str, Any], write_plan: Callable[..., Path], cli: Any, tmp_path: Path
) -> None:
    plan = write_plan(plan_dict)
    result = cli("seed", str(plan), "--out", str(tmp_path / "seeds"), "--json")
    assert result.code == 0, result.stderr
    isos = [Path(p) for p in result.json()["seeds"] if p.endswith(".iso")]
    assert len(isos) == 3 and all(p.stat().st_mode & 0o777 == 0o600 for p in isos)


def test_unknown_command_exits_2(cli: Any) -> None:
    assert cli("frobnicate").code == 2


def test_version_and_license(cli: Any) -> None:
    result = cli("--version")
    assert result.code == 0 and result.stdout.strip().startswith("palette-provision 0.")
    license_text = (Path(__file__).resolve().parents[1] / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0" in license_text
    # The distributions say so in their metadata (an SPDX expression), the core shipping the text.
    core = importlib.metadata.metadata("palette-provision")
    assert core["License-Expression"] == "Apache-2.0" and core.get_all("License-File") == ["LICENSE"]
    for provider in ("vsphere", "baremetal", "maas"):
        assert importlib.metadata.metadata(f"palette-provision-{provider}")["License-Expression"] == "Apache-2.0"


def test_validate_plan_and_status_create_nothing_and_status_runs_beside_a_locked_journal(
    plan_dict: dict[str, Any], write_plan: Callable[..., Path], cli: Any, tmp_path: Path
) -> None:
    plan = write_plan(plan_dict)
    for command in ("validate", "plan", "status"):
        assert cli(command, str(plan), "--json").code == 0, command
    assert not (tmp_path / ".palette-provision").exists(), "validate, plan and status wrote nothing"
    assert cli("apply", str(plan), "--until", "acquire", "--json").code == 0
    from palette_provision.journal import Journal

    journal_path = tmp_path / ".palette-provision" / "test-deploy" / "journal.sqlite"
    with Journal.open(journal_path, deployment="test-deploy"):  # held, as a running apply holds it
        status = cli("status", str(plan), "--json")
        planned = cli("plan", str(plan), "--json")
    assert status.code == 0 and {s["phase"] for s in status.json()["steps"]} >= {"preflight", "acquire"}
    assert planned.code == 0 and any(a["state"] == "done" for a in planned.json()["actions"])


def test_status_needs_no_secret_it_does_not_use_and_apply_still_does(
    plan_dict: dict[str, Any], write_plan: Callable[..., Path], cli: Any
) -> None:
    # An AWX status job (or an operator's shell) need not hold the node password: status reads the journal only.
    plan = write_plan(plan_dict)
    assert cli("apply", str(plan), "--until", "acquire", "--json").code == 0
    without = {k: v for k, v in os.environ.items() if k != "PP_TEST_NODE_PASSWORD"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "palette_provision", *args], capture_output=True, text=True,
                              env=without, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip

    status = run("status", str(plan), "--json")
    assert status.returncode == 0, status.stderr
    assert {s["phase"] for s in json.loads(status.stdout)["steps"]} >= {"preflight", "acquire"}
    refused = run("apply", str(plan), "--json")
    assert refused.returncode != 0
    assert "environment variable PP_TEST_NODE_PASSWORD is not set" in refused.stdout + refused.stderr


def test_destroy_reads_only_the_secrets_it_uses(
    plan_dict: dict[str, Any], write_plan: Callable[..., Path], cli: Any, tmp_path: Path
) -> None:
    # Taking a deployment down needs the platform's credentials, not the node account's password: an operator
    # tearing down a site need not hold every secret of the plan. The platform's, missing, is a clear refusal.
    plan = write_plan(merged(plan_dict, platform__expected_password="env:PP_FAKE_EXPECTED_PW",
                             platform__password="env:PP_FAKE_PLATFORM_PW"))  # fmt: skip
    truth = {"PP_FAKE_EXPECTED_PW": "platform-secret-1"}  # what the fake platform accepts
    assert cli("apply", str(plan), "--json", env={**truth, "PP_FAKE_PLATFORM_PW": "platform-secret-1"}).code == 0
    without = {k: v for k, v in os.environ.items() if k not in ("PP_TEST_NODE_PASSWORD", "PP_FAKE_PLATFORM_PW")}
    without.update(truth)

    def destroy(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "palette_provision", "destroy", str(plan), "--json"],
                              capture_output=True, text=True, env={**without, **env}, timeout=120,
                              stdin=subprocess.DEVNULL)  # fmt: skip

    refused = destroy()
    assert refused.returncode == 3, refused.stderr
    assert "environment variable PP_FAKE_PLATFORM_PW is not set" in json.loads(refused.stdout)["message"]
    state = read_state(tmp_path / "platform.json")
    assert len(state["machines"]) == 3 and not [a for a in state["actions"] if a["op"] == "delete_machine"]
    wrong = destroy(PP_FAKE_PLATFORM_PW="not-it")
    assert wrong.returncode == 3 and json.loads(wrong.stdout)["field"] == "platform.password"
    assert "not-it" not in wrong.stdout + wrong.stderr
    done = destroy(PP_FAKE_PLATFORM_PW="platform-secret-1")
    assert done.returncode == 0, done.stderr
    assert sorted(r["result"] for r in json.loads(done.stdout)["resources"] if r["kind"] == "machine") == ["deleted"] * 3
    assert read_state(tmp_path / "platform.json")["machines"] == {}


def test_logs_off_a_terminal_are_json_lines_with_fields_and_structlog_is_not_loaded(
    plan_dict: dict[str, Any], write_plan: Callable[..., Path], cli: Any
) -> None:
    plan = write_plan(plan_dict)
    result = cli("--log-level", "INFO", "apply", str(plan), "--until", "acquire", "--json")
    assert result.code == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    done = [e for e in lines if e["event"] == "phase_done" and e.get("node") == "palette-2"]
    assert done and {"level", "timestamp", "phase", "provider"} <= done[0].keys() and done[0]["level"] == "info"
    assert NODE_PASSWORD not in result.stderr
    import subprocess
    import sys

    probe = ("import sys; from palette_provision.cli import main; code = main(['validate', sys.argv[1]]); "
             "print('structlog' in sys.modules, 'rich' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe, str(plan)], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert out.stdout.strip().splitlines()[-1] == "False False", out.stderr


def test_a_bogus_log_level_is_a_usage_error_not_a_traceback(cli: Any, tmp_path: Path) -> None:
    result = cli("--log-level", "bogus", "status", str(tmp_path / "plan.yaml"))
    assert result.code == 2 and "invalid choice" in result.stderr and "Traceback" not in result.stderr


def test_a_missing_local_iso_or_bundle_is_a_plan_problem_that_validate_reports(
    plan_dict: dict[str, Any], write_plan: Callable[..., Path], cli: Any, tmp_path: Path
) -> None:
    plan_dict["iso"]["source"] = str(tmp_path / "nowhere.iso")
    plan_dict["content"] = {"path": "missing-bundle.tar.zst"}
    result = cli("validate", str(write_plan(plan_dict)), "--json")
    assert result.code == 2
    paths = {i["path"] for i in result.json()["issues"]}
    assert {"iso.source", "content.path"} <= paths
    assert not (tmp_path / ".palette-provision").exists()


def test_plan_lists_the_validation_and_pack_steps(
    plan_dict: dict[str, Any], write_plan: Callable[..., Path], cli: Any, tmp_path: Path
) -> None:
    bundles = [tmp_path / "edge-k8s-1.30.4.zst", tmp_path / "cni-calico-3.28.0.zst"]
    for bundle in bundles:
        bundle.write_bytes(b"pack")
    (tmp_path / "content.tar.zst").write_bytes(b"content")
    env = {"PP_TEST_CONSOLE_PASSWORD": "Console-Pw-2026-plan!", "PP_TEST_REGISTRY_PASSWORD": "registry-pw"}
    internal = merged(plan_dict, **{
        "handoff": {"kind": "palette-local-api", "output_dir": str(tmp_path / "out")},
        "content": {"path": str(tmp_path / "content.tar.zst")},
        "validate": {"console": {"password": "env:PP_TEST_CONSOLE_PASSWORD"}},
        "packs": {"bundles": [str(b) for b in bundles]},
    })  # fmt: skip
    external = merged(internal, **{"packs__registry": "external", "packs__external": {
        "url": "https://registry.example.test:5000", "username": "ci", "password": "env:PP_TEST_REGISTRY_PASSWORD"}})
    validation = ["validate.applications", "validate.pods", "validate.console_password", "validate.console_health"]
    for data, packs in (
        (internal, ["packs.upload:edge-k8s-1.30.4.zst", "packs.upload:cni-calico-3.28.0.zst", "packs.sync"]),
        (external, ["packs.push:edge-k8s-1.30.4.zst", "packs.push:cni-calico-3.28.0.zst", "packs.register",
                    "packs.sync"]),
    ):  # fmt: skip
        result = cli("plan", str(write_plan(data)), "--json", env=env)
        assert result.code == 0, result.stdout + result.stderr
        phases = [a["phase"] for a in result.json()["actions"]]
        tail = phases[phases.index("handoff.cluster") + 1:]
        assert tail == validation + packs
        assert all(a["state"] == "pending" for a in result.json()["actions"] if a["phase"] in tail)


def test_a_failed_handoff_prints_the_checks_evidence_up_to_the_failed_one(capsys: Any) -> None:
    from palette_provision._cli_output import print_report
    from palette_provision.errors import HandoffError
    from palette_provision.handoff._session import CheckFailed
    from palette_provision.report import NodeResult, Report

    report = Report("site-a", "fake", [NodeResult("palette-1", status="ready", address="10.0.0.1")])
    error = CheckFailed(HandoffError("validate.pods", "jet-system/jet: CrashLoopBackOff"), [
        {"check": "validate.applications", "asked": "GET apps", "answered": "3 Running", "at": 0.0},
        {"check": "validate.pods", "asked": "list pods", "answered": "jet-system/jet: CrashLoopBackOff\x1b[2J",
         "at": 0.0, "failed": True}])
    report.record_handoff_error(error)
    print_report(report)
    out = capsys.readouterr().out
    assert "validated validate.applications: 3 Running" in out
    assert "FAILED validate.pods: jet-system/jet: CrashLoopBackOff" in out and "\x1b" not in out, "printed as data"
    assert out.index("FAILED validate.pods") < out.index("hand-off failed: validate.pods") < out.rindex("FAILED")

