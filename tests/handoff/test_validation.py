"""Validating Palette after the cluster forms, against the Local API simulator's cluster and its VIP services.

The simulator's leader answers the applications list, and, once the cluster exists, the system console's API and a
kube-apiserver stand-in (client-certificate authentication, the kubeconfig's own CA): the checks run through the real
client code (lightkube for the pods, httpx for the console) over real TLS.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import pytest
from structlog.testing import capture_logs

from palette_provision.errors import HandoffError, TLSVerificationError
from palette_provision.handoff import HandoffResult
from palette_provision.journal import GLOBAL, Fact, Journal
from palette_provision.testing.localapi import SimulatedCluster
from tests.handoff import rig
from tests.handoff.conftest import Simulate

CONSOLE_PASSWORD = "Console-Pw-2026-validated!"
os.environ.setdefault("PP_VALIDATE_CONSOLE_PASSWORD", CONSOLE_PASSWORD)
VALIDATE = {"console": {"password": "env:PP_VALIDATE_CONSOLE_PASSWORD", "email": "ops@example.com"}, "timeout": 4}


def _form(sim: SimulatedCluster, journal: Journal, tmp: Path, bundle: Path,
          validate: dict[str, Any] | None = None) -> HandoffResult:  # fmt: skip
    plan = rig.build_plan(rig.plan_data(tmp, sim.size, content=bundle, overrides={"validate": validate or VALIDATE}))
    spec = rig.sim_spec(sim)

    def vip_services(_context: Any) -> tuple[str, str | None]:
        vip = sim.vip_services()
        return vip.console_url, vip.kube_url

    former = rig.former(spec, vip_services=vip_services)
    return former.form(rig.context_for(plan, journal, spec, []))


def test_a_formed_palette_is_validated_and_its_console_password_rotated_once(
    simulate: Simulate, journal: Journal, tmp_path: Path, bundle: Path
) -> None:
    # The console's first answer is a 503 (starting up): the rotation's first login waits, not fails.
    sim = simulate(1, console_unavailable_next=1)
    with capture_logs() as events:
        result = _form(sim, journal, tmp_path, bundle)
    evidence = result.details["validation"]
    assert [e["check"] for e in evidence] == ["validate.cluster",
        "validate.applications", "validate.pods", "validate.console_password", "validate.console_health"]
    assert all(e["asked"] and e["answered"] and e["at"] > 0 for e in evidence)
    assert evidence[0]["answered"] == "cluster Running and Healthy" and evidence[0]["failed"] is False
    assert "Running" in evidence[1]["answered"] and evidence[2]["pods"]["cp-system"] >= 1
    console = sim.leader.state()["console"]
    assert console["passwordChanged"] is True
    assert journal.fact(GLOBAL, Fact.CONSOLE_PASSWORD_ROTATED_AT) is not None
    assert journal.fact(GLOBAL, Fact.CONSOLE_CERT) == sim.vip_services().console_cert_sha256, "pinned at first use"
    assert [e.rung for e in journal_evidence(journal)] == [e["check"] for e in evidence]

    # A re-run validates again but never rotates twice, and never sends "admin" again.
    changes = console["passwordChanges"]
    again = _form(sim, journal, tmp_path, bundle)
    assert [e["check"] for e in again.details["validation"]][-1] == "validate.console_health"
    after = sim.leader.state()["console"]
    assert after["passwordChanges"] == changes
    assert after["loginFailures"] == console["loginFailures"], "the plan's password was right the first time"
    logged = repr(events)
    assert CONSOLE_PASSWORD not in logged and "Console-Pw" not in logged

    # TLS modes: verify with a CA bundle holding the console's certificate passes; another CA fails at once, naming
    # the step; insecure passes and logs the opt-out.
    cert = str(sim.vip_services().console_cert_file)
    verified = _form(sim, journal, tmp_path, bundle, validate=_console(tls="verify", ca_bundle=cert))
    assert verified.details["validation"][-1]["check"] == "validate.console_health"
    with pytest.raises(HandoffError) as caught:
        _form(sim, journal, tmp_path, bundle, validate=_console(tls="verify", ca_bundle=str(sim.leader.cert_file)))
    assert caught.value.step == "validate.console_health" and "did not verify" in str(caught.value)
    assert isinstance(caught.value.__cause__, TLSVerificationError)
    with capture_logs() as insecure_logs:
        _form(sim, journal, tmp_path, bundle, validate=_console(tls="insecure"))
    assert any(e["event"] == "console_tls_insecure" for e in insecure_logs)


def _console(**console: Any) -> dict[str, Any]:
    return {**VALIDATE, "console": {**cast(dict[str, Any], VALIDATE["console"]), **console}}


class _Rung:
    def __init__(self, rung: str) -> None:
        self.rung = rung


def journal_evidence(journal: Journal) -> list[_Rung]:
    return [_Rung(e["rung"]) for e in journal.evidence(GLOBAL)]


@pytest.mark.parametrize(
    ("knobs", "after_a_run", "step", "words"),
    [
        ({"app_not_running": "spectro-ui"}, None, "validate.applications", "spectro-ui: Error"),
        ({"pod_crashloop": "jet-system/jet"}, None, "validate.pods", "CrashLoopBackOff"),
        ({"console_unhealthy": True}, None, "validate.console_health", "healthy"),
        ({}, {"console_down": True}, "validate.console_health", "did not answer"),
        ({}, "other-password", "validate.console_health", "refuses validate.console.password"),
        ({}, {"console_cert_changed": True}, "validate.console_health", "pinned at first contact"),
    ],
    ids=["application-not-running", "pod-crashlooping", "console-unhealthy", "console-unreachable",
         "wrong-console-password", "certificate-changed"],
)
def test_each_failed_check_names_its_step_and_leaves_evidence(
    simulate: Simulate, journal: Journal, tmp_path: Path, bundle: Path, monkeypatch: pytest.MonkeyPatch,
    knobs: dict[str, Any], after_a_run: dict[str, Any] | str | None, step: str, words: str,
) -> None:
    sim = simulate(1, **knobs)
    validate = VALIDATE
    if after_a_run is not None:
        _form(sim, journal, tmp_path, bundle)
        if after_a_run == "other-password":
            monkeypatch.setenv("PP_VALIDATE_OTHER_PASSWORD", "Another-Password-2026#")
            validate = _console(password="env:PP_VALIDATE_OTHER_PASSWORD")
        else:
            assert isinstance(after_a_run, dict)
            sim.leader.set_knobs(**after_a_run)
    with pytest.raises(HandoffError) as caught:
        _form(sim, journal, tmp_path, bundle, validate=validate)
    error = caught.value
    assert error.step == step and words in str(error), str(error)
    assert "Another-Password-2026#" not in str(error)
    if after_a_run == {"console_cert_changed": True}:
        assert isinstance(error.__cause__, TLSVerificationError) and "pinned at first contact" in str(error.__cause__)

    # The evidence so far reaches the error (for the report), the failed check's entry last ...
    evidence = error.evidence  # type: ignore[attr-defined]
    assert evidence[0]["check"] == "validate.cluster" and not evidence[0]["failed"]
    failed = evidence[-1]
    assert failed["check"] == step and failed["failed"] is True and failed["asked"] and failed["at"] > 0
    assert words in failed["answered"]
    assert not any(e.get("failed") for e in evidence[1:-1]), "the checks before it passed"
    # ... and the journal: the failed entry among its evidence, the failed step keeping the evidence so far.
    assert any(e["rung"] == step and e.get("failed") is True for e in journal.evidence(GLOBAL))
    record = journal.step(step)
    assert record is not None and record.status == "failed" and words in (record.error or "")
    assert [e["check"] for e in record.data["evidence"]] == [e["check"] for e in evidence]


def test_a_console_password_the_policy_refuses_is_a_plan_error_before_anything_runs(
    tmp_path: Path, bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from palette_provision.errors import PlanError

    monkeypatch.setenv("PP_VALIDATE_WEAK_PASSWORD", "short-one")
    weak = {"console": {"password": "env:PP_VALIDATE_WEAK_PASSWORD"}}
    with pytest.raises(PlanError) as caught:
        rig.build_plan(rig.plan_data(tmp_path, 1, content=bundle, overrides={"validate": weak}))
    [issue] = caught.value.issues
    assert issue.path == "validate.console" and "14 characters" in issue.message and "a digit" in issue.message
    assert "short-one" not in str(caught.value)
