"""PaletteLocalApi against the Local API simulator over real HTTPS: what a user of ``apply`` notices."""

from __future__ import annotations

import dataclasses
import stat
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from structlog.testing import capture_logs

from palette_provision.errors import AuthenticationError, HandoffError, TLSVerificationError
from palette_provision.handoff import HandoffResult, LocalApiClient, former_for
from palette_provision.handoff.local_api import CERT_FACT
from palette_provision.journal import Journal
from palette_provision.plan import parse_plan
from palette_provision.testing._simhttp import generate_self_signed
from palette_provision.testing.localapi import SimulatedCluster, start_simulator
from tests.handoff import rig
from tests.handoff.conftest import Simulate

Events = list[tuple[str, str, dict[str, Any]]]


def form(
    sim: SimulatedCluster, journal: Journal, tmp: Path, *, content: Path | None,
    overrides: dict[str, Any] | None = None, **former_kwargs: Any,
) -> tuple[HandoffResult, Events]:
    plan = rig.build_plan(rig.plan_data(tmp, sim.size, content=content, overrides=overrides))
    spec = rig.sim_spec(sim)
    events: Events = []
    result = rig.former(spec, **former_kwargs).form(rig.context_for(plan, journal, spec, events))
    return result, events


def login_token(handle: Any) -> str:
    with handle.client(timeout=10) as client:
        answer = client.post("/v1/users/default/login", params={"setCookie": "false"},
                             json={"username": rig.USERNAME, "password": rig.NODE_PASSWORD})
    answer.raise_for_status()
    return str(answer.json()["Token"]["Authorization"])


def test_one_node_forms_a_running_cluster_and_saves_the_kubeconfig_0600(simulate: Simulate, journal: Journal, tmp_path: Path, bundle: Path) -> None:
    sim = simulate(1)
    result, events = form(sim, journal, tmp_path, content=bundle)

    assert (result.cluster_state, result.cluster_health) == ("Running", "Healthy")
    assert result.endpoint == f"https://{rig.VIP}:6443"
    assert result.kubeconfig is not None
    assert stat.S_IMODE(result.kubeconfig.stat().st_mode) == 0o600
    kubeconfig = yaml.safe_load(result.kubeconfig.read_text())
    assert kubeconfig["clusters"][0]["cluster"]["server"] == f"https://{rig.VIP}:6443"
    state = sim.leader.state()
    assert state["stats"]["clustersCreated"] == 1
    assert state["content"]["sizeInBytes"] == bundle.stat().st_size
    assert journal.fact("node1", CERT_FACT) == sim.leader.cert_sha256
    assert {s.phase for s in journal.steps() if s.status == "done"} >= {
        "handoff.configured", "handoff.link", "handoff.content", "handoff.content_sync", "handoff.cluster"}
    assert any(msg == "content_upload_progress" for _, msg, _ in events)


def test_three_nodes_link_to_the_leader_and_form_one_control_plane_pool(simulate: Simulate, journal: Journal, tmp_path: Path, bundle: Path) -> None:
    sim = simulate(3)
    result, _ = form(sim, journal, tmp_path, content=bundle)

    assert result.cluster_state == "Running"
    leader = sim.leader.state()
    assert sorted(leader["followers"]) == sorted(n.host_id for n in sim.followers)
    body = leader["cluster"]["config"]
    cloud = body["spec"]["cloudConfig"]["spec"]
    assert cloud["clusterConfig"]["controlPlaneEndpoint"] == {"host": rig.VIP, "type": "VIP"}
    assert cloud["clusterConfig"]["ntpServers"] == ["0.pool.ntp.org"]
    [pool] = cloud["machinePoolConfig"]
    assert pool["isControlPlane"] is True and pool["useControlPlaneAsWorker"] is True
    assert [h["hostUid"] for h in pool["hosts"]] == [n.host_id for n in sim.nodes]
    variables = {v["name"]: v["value"] for v in body["spec"]["profileVariables"]}
    assert variables["registry_size"] == "200Gi"  # the plan's value over the archive default
    assert variables["pod_cidr"] == "100.64.0.0/18"  # the archive default kept
    assert variables["oci_registry_password"] == rig.OCI_PASSWORD  # the secret, revealed only in the body


def test_a_link_token_about_to_expire_is_waited_out_instead_of_submitted(simulate: Simulate, journal: Journal, tmp_path: Path, bundle: Path) -> None:
    # Just before linking, the leader's current token is handed out elsewhere (the Local UI, say) and ages until
    # about 0.45 s remain when the hand-off asks for it; each follower takes 0.6 s to check a token, so submitting
    # that one would fail in flight (checked: with the margin disabled, the leader records a rejected attempt).
    sim = simulate(3, link_token_lifetime_s=2.0)
    for follower in sim.followers:
        follower.set_knobs(delay_s=0.6, delay_prefix="/v1/edge-mgmt/edgehosts/current/link")

    def age_the_token(name: str) -> None:
        if name == "handoff.link:begin":
            with sim.leader.client(timeout=10, headers={"Authorization": login_token(sim.leader)}) as client:
                client.post("/v1/edge-mgmt/edgehosts/current/link/generate-token").raise_for_status()
            time.sleep(0.9)  # + the follower's 0.6 s link-status check before the token is fetched

    result, _ = form(sim, journal, tmp_path, content=bundle, checkpoint=age_the_token)

    assert result.cluster_state == "Running"
    leader = sim.leader.state()["stats"]
    assert [a["result"] for a in leader["linkAttempts"]] == ["accepted", "accepted"]
    assert leader["linkTokensIssued"] == 3  # the aged one (never submitted) and one fresh token per follower


def test_a_refused_link_fails_with_the_leaders_reason(simulate: Simulate, journal: Journal, tmp_path: Path, bundle: Path) -> None:
    sim = simulate(3, refuse_links=True, refuse_reason="host node2 runs a different Palette version")
    with pytest.raises(HandoffError) as caught:
        form(sim, journal, tmp_path, content=bundle)
    assert caught.value.step == "handoff.link"
    assert "runs a different Palette version" in str(caught.value)


def test_session_tokens_are_renewed_before_they_expire(simulate: Simulate, journal: Journal, tmp_path: Path, bundle: Path) -> None:
    # 2 s tokens, renewed after 80 % of their life: the 0.4 s left is longer than the polling gaps (<= 0.35 s).
    sim = simulate(1, token_lifetime_s=2.0, cluster_running_s=3.0)
    made: list[LocalApiClient] = []
    result, _ = form(sim, journal, tmp_path, content=bundle,
                     client_factory=rig.client_factory(rig.sim_spec(sim), made))
    assert result.cluster_state == "Running"
    assert made[0].renewals >= 1
    assert made[0].logins == 1


def test_a_token_that_expired_mid_run_is_replaced_by_a_fresh_login(simulate: Simulate, journal: Journal, tmp_path: Path, bundle: Path) -> None:
    # A client clock an hour behind never renews in time: the node answers 401 and the client logs in again.
    sim = simulate(1, token_lifetime_s=0.5, cluster_running_s=1.5)
    made: list[LocalApiClient] = []
    factory = rig.client_factory(rig.sim_spec(sim), made, clock=lambda: time.time() - 3600)
    result, _ = form(sim, journal, tmp_path, content=bundle, client_factory=factory)
    assert result.cluster_state == "Running"
    assert made[0].logins >= 2


def test_a_changed_node_certificate_is_refused_before_the_password_is_sent(simulate: Simulate, journal: Journal, tmp_path: Path, bundle: Path) -> None:
    sim = simulate(1)
    form(sim, journal, tmp_path, content=bundle)
    old = sim.leader
    logins_before = old.state()["stats"]["logins"]
    old.stop()
    cert, key = tmp_path / "new.crt", tmp_path / "new.key"
    generate_self_signed(cert, key, "node1", [old.host, old.node_ip])
    new = start_simulator("node1", old.state_dir, password=rig.NODE_PASSWORD, username=rig.USERNAME,
                          node_ip=old.node_ip, listen=f"{old.host}:0", cert_file=cert, key_file=key,
                          knobs=rig.FAST_KNOBS)
    sim.nodes[0] = new
    try:
        with pytest.raises(HandoffError) as caught:
            form(sim, journal, tmp_path, content=bundle)
        assert isinstance(caught.value.__cause__, TLSVerificationError)
        assert old.cert_sha256 in str(caught.value) and new.cert_sha256 in str(caught.value)
        assert new.state()["stats"]["logins"] == logins_before  # nothing reached the impostor
    finally:
        new.stop()


def test_a_cluster_that_goes_to_error_raises_with_the_nodes_events(simulate: Simulate, journal: Journal, tmp_path: Path, bundle: Path) -> None:
    sim = simulate(1, cluster_error=True, cluster_error_message="etcd member failed to start on node1")
    with pytest.raises(HandoffError) as caught:
        form(sim, journal, tmp_path, content=bundle)
    error = caught.value
    assert error.step == "handoff.cluster"
    assert "etcd member failed to start on node1" in str(error)
    assert any("ProvisioningFailed" in e and "etcd member failed" in e for e in error.events)
    step = journal.step("handoff.cluster")
    assert step is not None and step.status == "failed"  # failed, not done: a re-run looks again


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"cluster.profile_variables": {"pod_cidr": "100.64.0.0/99"}}, "pod_cidr"),
        ({"cluster.profile_secrets": {}}, "oci_registry_password"),
        ({"cluster.profile_variables": {"no_such_variable": "1"}}, "no_such_variable"),
    ],
    ids=["invalid-value", "missing-required", "undeclared"],
)
def test_a_bad_profile_variable_is_named_and_nothing_is_created(simulate: Simulate, journal: Journal, tmp_path: Path, bundle: Path, variables: dict[str, Any], named: str) -> None:
    sim = simulate(1)
    with pytest.raises(HandoffError) as caught:
        form(sim, journal, tmp_path, content=bundle, overrides=variables)
    assert caught.value.step == "handoff.cluster"
    assert named in str(caught.value)
    assert sim.leader.state()["stats"]["clusterCreateAttempts"] == 0


def test_secrets_never_reach_the_journal_the_logs_or_the_events(simulate: Simulate, tmp_path: Path, bundle: Path) -> None:
    sim = simulate(1)
    path = tmp_path / "secret-check.sqlite"
    with capture_logs() as logs, Journal.open(path, deployment="handoff-test") as journal:
        _, events = form(sim, journal, tmp_path, content=bundle)
    text = repr(logs) + repr(events)
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("secret-check.sqlite*"))
    for secret in (rig.NODE_PASSWORD, rig.OCI_PASSWORD):
        assert secret not in text
        assert secret.encode() not in raw


def test_insecure_tls_is_a_logged_choice(simulate: Simulate, journal: Journal, tmp_path: Path, bundle: Path) -> None:
    sim = simulate(1)
    with capture_logs() as logs:
        result, _ = form(sim, journal, tmp_path, content=bundle, overrides={"handoff.tls": "insecure"})
    assert result.cluster_state == "Running"
    assert any(e["event"] == "local_api_tls_insecure" and e["log_level"] == "warning" for e in logs)
    assert journal.fact("node1", CERT_FACT) is None


def test_a_wrong_node_password_is_an_authentication_error(simulate: Simulate, journal: Journal, tmp_path: Path, bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sim = simulate(1)
    monkeypatch.setenv("PP_HANDOFF_NODE_PASSWORD", "not-the-password")
    plan = parse_plan(rig.plan_data(tmp_path, 1, content=bundle))
    spec = rig.sim_spec(sim)
    with pytest.raises(HandoffError) as caught:
        rig.former(spec).form(rig.context_for(plan, journal, spec, []))
    assert isinstance(caught.value.__cause__, AuthenticationError)
    assert "not-the-password" not in str(caught.value)


def test_former_for_follows_the_plans_handoff_kind(tmp_path: Path) -> None:
    for kind, name in (("palette-local-api", "PaletteLocalApi"), ("inventory", "Inventory"), ("none", "NoHandoff")):
        bundle = tmp_path / "bundle.tar.zst"
        bundle.write_bytes(b"content")
        plan = rig.build_plan(rig.plan_data(tmp_path, 1, content=bundle, overrides={"handoff.kind": kind}))
        assert type(former_for(plan)).__name__ == name


def test_the_local_api_refuses_requests_without_our_token_shape(simulate: Simulate) -> None:
    # The contract the client relies on (§11.2): the raw token in the header, no "Bearer".
    sim = simulate(1)
    token = login_token(sim.leader)
    with sim.leader.client(timeout=10) as client:
        raw = client.get("/v1/edge-mgmt/edgehosts/current", headers={"Authorization": token})
        bearer = client.get("/v1/edge-mgmt/edgehosts/current", headers={"Authorization": f"Bearer {token}"})
    assert raw.status_code == 200
    assert bearer.status_code == 401
    assert isinstance(raw, httpx.Response)


LINK_SUBMIT = "POST /v1/edge-mgmt/edgehosts/current/link"
UPLOAD = "POST /v1/edge-mgmt/edgehosts/current/actions/upload-content"


def test_a_5xx_on_a_link_submission_is_checked_then_resubmitted(simulate: Simulate, journal: Journal, tmp_path: Path, bundle: Path) -> None:
    sim = simulate(3)
    follower = sim.followers[0]
    follower.set_knobs(fail_next={LINK_SUBMIT: 1})  # the submission only, not the link-status reads

    result, _ = form(sim, journal, tmp_path, content=bundle)

    assert result.cluster_state == "Running"
    assert follower.state()["requests"][LINK_SUBMIT] == 2
    assert [a["result"] for a in sim.leader.state()["stats"]["linkAttempts"]] == ["accepted", "accepted"]


def test_a_5xx_during_the_content_upload_is_retried_within_the_run(simulate: Simulate, journal: Journal, tmp_path: Path, bundle: Path) -> None:
    sim = simulate(1)
    sim.leader.set_knobs(fail_next={UPLOAD: 1})

    result, events = form(sim, journal, tmp_path, content=bundle)

    assert result.cluster_state == "Running"
    state = sim.leader.state()
    assert state["requests"][UPLOAD] == 2
    assert state["content"]["sizeInBytes"] == bundle.stat().st_size
    assert sum(1 for _, msg, _ in events if msg == "content_uploaded") == 1


def test_a_running_but_unhealthy_cluster_times_out_without_its_kubeconfig_in_any_message(
    simulate: Simulate, journal: Journal, tmp_path: Path, bundle: Path
) -> None:
    # Running/Unhealthy: the details answer already carries the admin kubeconfig; the wait runs out on it.
    sim = simulate(1, cluster_unhealthy=True, cluster_running_s=0.2)
    with pytest.raises(HandoffError) as caught:
        form(sim, journal, tmp_path, content=bundle, overrides={"timeouts.cluster": 3})
    message = str(caught.value) + str(caught.value.__cause__)
    assert "Running/Unhealthy" in message
    for marker in ("apiVersion", "current-context", "token:", "certificate-authority-data"):
        assert marker not in message
    step = journal.step("handoff.cluster")
    assert step is not None and step.status == "failed" and "Running/Unhealthy" in (step.error or "")
    files = [journal.path, journal.path.with_name(journal.path.name + "-wal")]
    raw = b"".join(p.read_bytes() for p in files if p.exists())
    assert b"current-context" not in raw and b"certificate-authority-data" not in raw


@pytest.mark.parametrize(("plan_value", "expected"), [(None, "/dev/sdc"), ("/dev/disk/by-id/wwn-0x5000c5", None)])
def test_the_storage_disk_the_deployment_knows_becomes_storage_pool_drive_unless_the_plan_sets_it(
    simulate: Simulate, journal: Journal, tmp_path: Path, bundle: Path, plan_value: str | None, expected: str | None
) -> None:
    sim = simulate(1)
    overrides = {"cluster.profile_variables": {"storage_pool_drive": plan_value}} if plan_value else None
    plan = rig.build_plan(rig.plan_data(tmp_path, 1, content=bundle, overrides=overrides))
    spec = rig.sim_spec(sim)
    context = dataclasses.replace(
        rig.context_for(plan, journal, spec, []), profile_defaults={"storage_pool_drive": "/dev/sdc"}
    )
    rig.former(spec).form(context)
    body = sim.leader.state()["cluster"]["config"]
    variables = {v["name"]: v["value"] for v in body["spec"]["profileVariables"]}
    assert variables["storage_pool_drive"] == (expected or plan_value)
