"""The plan: every rule, every message, all errors at once, and secrets that never print."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palette_provision.errors import PlanError
from palette_provision.plan import load_plan, parse_plan, parse_plan_text
from palette_provision.secrets import Secret, SecretReferenceError, known_secret_values

from .conftest import NODE_PASSWORD, base_plan, merged


def issues_of(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(PlanError) as info:
        parse_plan(data)
    return {i.path: i.message for i in info.value.issues}


def test_valid_plan_resolves_nodes(plan_dict: dict[str, Any]) -> None:
    plan = parse_plan(plan_dict)
    specs = plan.node_specs()
    assert [s.name for s in specs] == ["palette-1", "palette-2", "palette-3"]
    assert (specs[0].cpus, specs[0].memory_mb) == (16, 32 * 1024)
    assert specs[2].static_ip == "10.251.0.13"
    assert str(specs[2].gateway) == "10.251.0.1"


@pytest.mark.parametrize(("tier", "cpus", "mem"), [("small", 8, 16), ("medium", 16, 32), ("large", 32, 64)])
def test_size_tiers(plan_dict: dict[str, Any], tier: str, cpus: int, mem: int) -> None:
    spec = parse_plan(merged(plan_dict, nodes__size=tier)).node_specs()[0]
    assert (spec.cpus, spec.memory_mb) == (cpus, mem * 1024)


def test_explicit_sizes_instead_of_tier(plan_dict: dict[str, Any]) -> None:
    spec = parse_plan(merged(plan_dict, nodes__size=None, nodes__cpus=12, nodes__memory_gb=24)).node_specs()[0]
    assert (spec.cpus, spec.memory_mb) == (12, 24 * 1024)


@pytest.mark.parametrize("count", [2, 4, 5])
def test_appliance_runs_on_one_or_three_nodes(tmp_path: Path, count: int) -> None:
    assert issues_of(base_plan(tmp_path, count))["nodes.count"] == (f"the appliance runs on 1 or 3 nodes, got {count}")


def test_edge_profile_takes_any_count_and_smaller_nodes(tmp_path: Path) -> None:
    data = merged(
        base_plan(tmp_path, 5),
        profile="edge",
        nodes__size=None,
        nodes__cpus=2,
        nodes__memory_gb=4,
        nodes__install_disk_gb=64,
        nodes__storage_disk_gb=0,
    )
    assert parse_plan(data).nodes.count == 5


def test_appliance_minimums_each_named(plan_dict: dict[str, Any]) -> None:
    data = merged(
        plan_dict,
        nodes__size=None,
        nodes__cpus=4,
        nodes__memory_gb=8,
        nodes__install_disk_gb=200,
        nodes__storage_disk_gb=100,
        nodes__firmware="bios",
    )
    issues = issues_of(data)
    assert issues["nodes.cpus"] == "the appliance profile needs at least 8 CPUs per node, got 4"
    assert issues["nodes.memory_gb"] == "the appliance profile needs at least 16 GB, got 8"
    assert issues["nodes.install_disk_gb"].startswith("the appliance profile needs an install disk of at least 300 GB")
    assert issues["nodes.storage_disk_gb"].startswith("the appliance profile needs a storage disk of at least 500 GB")
    assert issues["nodes.firmware"] == "the appliance boots with UEFI only"


def test_every_error_reported_at_once(plan_dict: dict[str, Any]) -> None:
    data = merged(
        plan_dict,
        nodes__count=2,
        cluster__vip="not-an-ip",
        platform__install_seconds=-1,
        handoff__kind="carrier-pigeon",
    )
    issues = issues_of(data)
    assert {"cluster.vip", "handoff.kind", "platform.install_seconds"} <= set(issues)


def test_size_missing(plan_dict: dict[str, Any]) -> None:
    assert "nodes.size" in issues_of(merged(plan_dict, nodes__size=None))


def test_static_network_rules(plan_dict: dict[str, Any]) -> None:
    issues = issues_of(
        merged(plan_dict, nodes__network__addresses=["10.251.0.11/24", "10.251.0.11/24"], nodes__network__gateway=None)
    )
    assert issues["nodes.network.addresses"] == "static mode needs one address per node: 3, got 2"
    assert issues["nodes.network.gateway"] == "static mode needs a gateway"
    assert issues["nodes.network.addresses[1]"] == "10.251.0.11 is used twice"


def test_gateway_outside_subnet_and_vip_clash(plan_dict: dict[str, Any]) -> None:
    data = merged(
        plan_dict,
        nodes__network__gateway="192.168.9.1",
        nodes__network__addresses=["10.251.0.100/24", "10.251.0.12/24", "10.251.0.13/24"],
    )
    with pytest.raises(PlanError) as info:
        parse_plan(data)
    found = {(i.path, i.message) for i in info.value.issues}
    assert ("nodes.network.addresses[1]", "gateway 192.168.9.1 is outside 10.251.0.0/24") in found
    assert ("nodes.network.addresses[0]", "a node address cannot be the cluster VIP") in found


def test_unknown_fields_are_rejected_with_their_path(plan_dict: dict[str, Any]) -> None:
    issues = issues_of(merged(plan_dict, nodes__cpu_count=8))
    assert "nodes.cpu_count" in issues


def test_unknown_provider_lists_installed_ones(plan_dict: dict[str, Any]) -> None:
    message = issues_of(merged(plan_dict, platform={"provider": "openstack"}))["platform.provider"]
    assert "no provider named 'openstack' is installed" in message
    assert "fake" in message


def test_leader_must_be_a_node(plan_dict: dict[str, Any]) -> None:
    assert "no node is named nope (nodes:" in issues_of(merged(plan_dict, handoff__leader="nope"))["handoff.leader"]


def test_ssh_readiness_needs_a_private_key(plan_dict: dict[str, Any]) -> None:
    issues = issues_of(merged(plan_dict, readiness__ssh=True))
    assert "cluster.node_account.ssh_private_key" in issues


def test_url_iso_needs_sha256(plan_dict: dict[str, Any]) -> None:
    issues = issues_of(merged(plan_dict, iso={"source": "https://example.invalid/a.iso"}))
    assert issues["iso.sha256"] == "an ISO fetched from a URL needs its SHA-256"


def test_secret_is_resolved_and_never_printed(plan_dict: dict[str, Any]) -> None:
    plan = parse_plan(plan_dict)
    password = plan.cluster.node_account.password
    assert isinstance(password, Secret) and password.reveal() == NODE_PASSWORD
    for text in (repr(plan), str(plan), plan.model_dump_json(), repr(password), f"{password}"):
        assert NODE_PASSWORD not in text
    assert plan.model_dump(mode="json")["cluster"]["node_account"]["password"] == "env:PP_TEST_NODE_PASSWORD"


def test_inline_secret_is_refused_without_echo(plan_dict: dict[str, Any]) -> None:
    with pytest.raises(PlanError) as info:
        parse_plan(merged(plan_dict, cluster__node_account__password="hunter2-inline"))
    assert "hunter2-inline" not in str(info.value)
    assert "cluster.node_account.password: a secret must be a reference" in str(info.value)


def test_missing_secret_names_the_reference(plan_dict: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PP_TEST_NODE_PASSWORD")
    issues = issues_of(plan_dict)
    assert issues["cluster.node_account.password"] == "environment variable PP_TEST_NODE_PASSWORD is not set"


def test_file_secret_relative_to_the_plan(tmp_path: Path, plan_dict: dict[str, Any]) -> None:
    (tmp_path / "pw.txt").write_text("from-a-file\n")
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(merged(plan_dict, cluster__node_account__password="file:pw.txt")))
    assert load_plan(path).cluster.node_account.password.reveal() == "from-a-file"


def test_yaml_syntax_error_has_line_and_no_source_echo(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ncluster: {name: [unclosed, password: sekrit-value\n")
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert "line" in str(info.value) and "sekrit-value" not in str(info.value)


def test_yaml_aliases_are_refused() -> None:
    with pytest.raises(PlanError, match="aliases"):
        parse_plan_text("a: &x [1, 2]\nb: *x\n")


def test_json_plan_loads(tmp_path: Path, plan_dict: dict[str, Any]) -> None:
    import json

    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan_dict))
    assert load_plan(path).name == "test-deploy"


# ----------------------------------------------------------------------------------- property-based
yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
yaml_values = st.recursive(
    yaml_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_arbitrary_text_only_ever_raises_plan_error(text: str) -> None:
    try:
        parse_plan_text(text)
    except PlanError as exc:
        assert NODE_PASSWORD not in str(exc)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    section=st.sampled_from(
        [
            "iso",
            "cluster",
            "nodes",
            "platform",
            "handoff",
            "readiness",
            "timeouts",
            "name",
            "profile",
            "user_data_extra",
            "concurrency",
        ]
    ),
    value=yaml_values,
)
def test_arbitrary_field_values_only_raise_plan_error(tmp_path: Path, section: str, value: Any) -> None:
    data = base_plan(tmp_path)
    data[section] = value
    try:
        plan = parse_plan(data)
    except PlanError as exc:
        assert NODE_PASSWORD not in str(exc)
        assert all(issue.message for issue in exc.issues)
    else:
        assert NODE_PASSWORD not in repr(plan)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    key=st.sampled_from(
        ["count", "size", "cpus", "memory_gb", "install_disk_gb", "storage_disk_gb", "names", "network", "firmware"]
    ),
    value=yaml_values,
)
def test_arbitrary_node_values_only_raise_plan_error(tmp_path: Path, key: str, value: Any) -> None:
    data = base_plan(tmp_path)
    data["nodes"][key] = value
    try:
        parse_plan(data)
    except PlanError as exc:
        assert NODE_PASSWORD not in str(exc)


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=40).filter(lambda s: "\n" not in s))
def test_inline_secrets_never_echoed(secret: str) -> None:
    data = {"cluster": {"node_account": {"password": "sekrit::" + secret}}}
    try:
        parse_plan(data)
    except PlanError as exc:
        assert "sekrit::" + secret not in str(exc)


def test_appliance_local_api_handoff_needs_the_content_bundle(plan_dict: dict[str, Any]) -> None:
    issues = issues_of(merged(plan_dict, handoff__kind="palette-local-api"))
    assert issues["content"] == "the appliance's palette-local-api hand-off needs the content bundle (content.path)"


def test_schema_errors_and_cross_field_problems_come_back_in_one_round(plan_dict: dict[str, Any]) -> None:
    # An invalid VIP and an inline password (schema), a node count the appliance does not run on, CPUs below its
    # minimum, an address list that no longer matches, no SSH private key (cross-field): all six at once.
    plan_dict["cluster"]["vip"] = "10.251.0.300"
    plan_dict["cluster"]["node_account"]["password"] = "typed-inline-by-mistake"
    plan_dict["nodes"].update(count=2, size=None, cpus=4, memory_gb=32)
    plan_dict["readiness"] = {"ssh": True}
    with pytest.raises(PlanError) as info:
        parse_plan(plan_dict)
    paths = [i.path for i in info.value.issues]
    assert set(paths) == {
        "cluster.vip", "cluster.node_account.password", "nodes.count", "nodes.cpus", "nodes.network.addresses",
        "cluster.node_account.ssh_private_key",
    }
    assert len(paths) == len(set(paths)), "each problem once"
    assert "typed-inline-by-mistake" not in str(info.value)


def test_a_cross_field_rule_is_not_reported_twice_over_a_schema_error(plan_dict: dict[str, Any]) -> None:
    plan_dict["nodes"]["count"] = "three"
    with pytest.raises(PlanError) as info:
        parse_plan(plan_dict)
    assert [i.path for i in info.value.issues if i.path.startswith("nodes.count")] == ["nodes.count"]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    first=st.sampled_from(["cluster.vip", "cluster.name", "cluster.node_account", "nodes.count", "nodes.network",
                           "nodes.hosts", "handoff.leader", "readiness.ssh", "iso.source", "install_method"]),
    second=st.sampled_from(["cluster.dns", "nodes.cpus", "nodes.names", "handoff.kind", "profile", "content"]),
    a=yaml_values,
    b=yaml_values,
)
def test_two_bad_values_anywhere_only_ever_raise_plan_error_with_every_message(
    tmp_path: Path, first: str, second: str, a: Any, b: Any
) -> None:
    data = base_plan(tmp_path)
    for dotted, value in ((first, a), (second, b)):
        *parents, last = dotted.split(".")
        target = data
        for key in parents:
            target = target.setdefault(key, {}) if isinstance(target.get(key), dict) else target.setdefault(key, {})
        target[last] = value
    try:
        parse_plan(data)
    except PlanError as exc:
        assert exc.issues and all(issue.message for issue in exc.issues)
        assert NODE_PASSWORD not in str(exc)


@pytest.mark.parametrize("count", [0, -1, 1001, 10**18])
def test_a_node_count_out_of_bounds_is_a_plan_error_at_once(plan_dict: dict[str, Any], count: int) -> None:
    # 10**18 once made validate build 10**18 node names (found by the fuzz test above).
    plan_dict["nodes"]["count"] = count
    plan_dict["nodes"].pop("names", None)
    with pytest.raises(PlanError) as info:
        parse_plan(plan_dict)
    assert "nodes.count" in [i.path for i in info.value.issues]


def test_deferred_secrets_are_checked_for_form_and_read_only_when_revealed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = base_plan(tmp_path)
    monkeypatch.delenv("PP_TEST_NODE_PASSWORD")
    with pytest.raises(PlanError) as refused:
        parse_plan(data, base_dir=tmp_path)
    assert "PP_TEST_NODE_PASSWORD" in str(refused.value)
    plan = parse_plan(data, base_dir=tmp_path, defer_secrets=True)
    secret = plan.cluster.node_account.password
    assert str(secret) == "***" and secret.source == "env:PP_TEST_NODE_PASSWORD"
    with pytest.raises(SecretReferenceError, match="environment variable PP_TEST_NODE_PASSWORD is not set"):
        secret.reveal()
    monkeypatch.setenv("PP_TEST_NODE_PASSWORD", "now-it-is-set-1")
    assert secret.reveal() == "now-it-is-set-1"
    assert "now-it-is-set-1" in known_secret_values(), "read late, still scrubbed from logs"
    # The form is still checked: an inline value is refused, deferred or not.
    inline = {**data, "cluster": {**data["cluster"], "node_account": {"username": "kairos", "password": "hunter2"}}}
    with pytest.raises(PlanError, match="reference"):
        parse_plan(inline, base_dir=tmp_path, defer_secrets=True)
