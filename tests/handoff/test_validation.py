"""Validating Palette after the cluster forms, against the Local API simulator's cluster and its VIP services.

The simulator's leader answers the applications list, and, once the cluster exists, the system console's API and a
kube-apiserver stand-in (client-certificate authentication, the kubeconfig's own CA): the checks run through the real
client code (lightkube for the pods, httpx for the console) over real TLS.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from palette_provision.errors import HandoffError, PaletteProvisionError, TLSVerificationError
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
    sim = simulate(1)
    with capture_logs() as events:
        result = _form(sim, journal, tmp_path, bundle)
    evidence = result.details["validation"]
    assert [e["check"] for e in evidence] == [
        "validate.applications", "validate.pods", "validate.console_password", "validate.console_health"]
    assert all(e["asked"] and e["answered"] and e["at"] > 0 for e in evidence)
    assert "Running" in evidence[0]["answered"] and evidence[1]["pods"]["cp-system"] >= 1
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


class _Rung:
    def __init__(self, rung: str) -> None:
        self.rung = rung


def journal_evidence(journal: Journal) -> list[_Rung]:
    return [_Rung(e["rung"]) for e in journal.evidence(GLOBAL)]


@pytest.mark.parametrize(
    ("knobs", "step", "words"),
    [
        ({"app_not_running": "spectro-ui"}, "validate.applications", "spectro-ui: Error"),
        ({"pod_crashloop": "jet-system/jet"}, "validate.pods", "jet-system/jet"),
        ({"console_unhealthy": True}, "validate.console_health", "healthy"),
    ],
)
def test_each_failed_check_names_its_step_and_what_answered(
    simulate: Simulate, journal: Journal, tmp_path: Path, bundle: Path, knobs: dict[str, Any], step: str, words: str
) -> None:
    sim = simulate(1, **knobs)
    with pytest.raises(HandoffError) as caught:
        _form(sim, journal, tmp_path, bundle)
    assert caught.value.step == step and words in str(caught.value), str(caught.value)


def test_an_unreachable_console_is_said(simulate: Simulate, journal: Journal, tmp_path: Path, bundle: Path) -> None:
    sim = simulate(1)
    _form(sim, journal, tmp_path, bundle)
    sim.leader.set_knobs(console_down=True)
    with pytest.raises(PaletteProvisionError) as caught:
        _form(sim, journal, tmp_path, bundle)
    assert "system console" in str(caught.value) and "did not answer" in str(caught.value)


def test_a_console_password_changed_behind_our_back_is_an_authentication_error(
    simulate: Simulate, journal: Journal, tmp_path: Path, bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = simulate(1)
    _form(sim, journal, tmp_path, bundle)
    monkeypatch.setenv("PP_VALIDATE_OTHER_PASSWORD", "Another-Password-2026#")
    other = {**VALIDATE, "console": {**VALIDATE["console"], "password": "env:PP_VALIDATE_OTHER_PASSWORD"}}
    with pytest.raises(HandoffError) as caught:
        _form(sim, journal, tmp_path, bundle, validate=other)
    assert caught.value.step == "validate.console_health" and "refuses validate.console.password" in str(caught.value)
    assert "Another-Password-2026#" not in str(caught.value)


def test_a_changed_console_certificate_is_refused(
    simulate: Simulate, journal: Journal, tmp_path: Path, bundle: Path
) -> None:
    sim = simulate(1)
    _form(sim, journal, tmp_path, bundle)
    sim.leader.set_knobs(console_cert_changed=True)
    with pytest.raises(PaletteProvisionError) as caught:
        _form(sim, journal, tmp_path, bundle)
    cause = caught.value if isinstance(caught.value, TLSVerificationError) else caught.value.__cause__
    assert isinstance(cause, TLSVerificationError) and "pinned at first contact" in str(cause)


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
