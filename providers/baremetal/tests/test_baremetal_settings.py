"""The bare-metal plan: every problem named by its field path, before anything touches a BMC."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from palette_provision.errors import PlanError
from palette_provision.pipeline import Deployment
from palette_provision.plan import parse_plan

os.environ.setdefault("PP_BM_SETTINGS_PW", "settings-test-password")


def plan(hosts: list[dict[str, Any]], **platform: Any) -> dict[str, Any]:
    return {
        "name": "bm-settings",
        "profile": "edge",
        "iso": {"source": "/srv/palette.iso"},
        "cluster": {"name": "bm", "vip": "10.0.0.100", "dns": ["10.0.0.1"],
                    "node_account": {"password": "env:PP_BM_SETTINGS_PW"}},
        "nodes": {"size": "small", "install_disk": "/dev/sda", "hosts": hosts},
        "readiness": {"ssh": False},
        "platform": {"provider": "baremetal", "media_server": {"bind": "10.0.0.5:8080"}, **platform},
    }  # fmt: skip


def redfish(**bmc: Any) -> dict[str, Any]:
    return {"protocol": "redfish", "address": "10.0.0.11", "username": "admin",
            "password": "env:PP_BM_SETTINGS_PW", **bmc}  # fmt: skip


def issues(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(PlanError) as info:
        parse_plan(data)
    return {i.path: i.message for i in info.value.issues}


def test_a_valid_redfish_plan_parses_and_keeps_the_password_a_secret() -> None:
    parsed = parse_plan(plan([{"name": "rack-1", "bmc": redfish(fingerprint="ab" * 32)}]))
    [node] = parsed.node_specs()
    assert node.settings.bmc.effective_port == 443
    assert "settings-test-password" not in repr(node.settings)


def test_each_bmc_problem_is_named_by_its_path() -> None:
    found = issues(plan([
        {"name": "rack-1", "bmc": redfish(tls="insecure", fingerprint="ab" * 32)},
        {"name": "rack-2", "bmc": ipmi()},
        {"name": "rack-3", "bmc": redfish(password="inline-secret")},
    ]))  # fmt: skip
    assert "verifies nothing" in found["nodes.hosts[0].bmc"]
    assert found["nodes.hosts[1]"].startswith("IPMI has no virtual media")
    assert any(path.startswith("nodes.hosts[2].bmc.password") for path in found), found
    assert not any("inline-secret" in message for message in found.values())


def ipmi(**bmc: Any) -> dict[str, Any]:
    return {"protocol": "ipmi", "address": "10.0.0.12", "username": "admin", "password": "env:PP_BM_SETTINGS_PW",
            **bmc}  # fmt: skip


def provider_issues(data: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    """What the provider's validate (through ``Deployment.check``, as ``validate`` runs it) says, by path."""
    with Deployment(parse_plan(data), state_dir=tmp_path / "state") as deployment, pytest.raises(PlanError) as info:
        deployment.check()
    return {i.path: i.message for i in info.value.issues}


def test_a_media_server_on_every_address_needs_the_address_bmcs_use(tmp_path: Path) -> None:
    data = plan([{"name": "rack-1", "bmc": redfish()}], media_server={"bind": "0.0.0.0:8080"})
    found = provider_issues(data, tmp_path)
    assert "advertise_host" in found["platform.media_server.advertise_host"], found


def test_an_ipmi_node_takes_preinserted_media_and_needs_no_media_server(tmp_path: Path) -> None:
    # IPMI has no virtual media: the operator attaches both, so nothing asks for a media server's address.
    data = plan([{"name": "rack-2", "address": "10.0.0.22/24", "media": "preinserted", "bmc": ipmi()}],
                media_server={"bind": "0.0.0.0:0"})  # fmt: skip
    data["nodes"]["network"] = {"mode": "static", "gateway": "10.0.0.1"}
    [node] = parse_plan(data).node_specs()
    assert node.settings.operator_seed and not node.settings.needs_media_server
    found = provider_issues(data, tmp_path)
    assert set(found) == {"iso.source"}, found  # only the ISO this test does not have


def test_an_ipmi_node_on_dhcp_is_refused(tmp_path: Path) -> None:
    data = plan([{"name": "rack-2", "media": "preinserted", "bmc": ipmi()}], media_server={"bind": "0.0.0.0:0"})
    data["nodes"]["network"] = {"mode": "dhcp"}
    found = provider_issues(data, tmp_path)
    assert "needs its address in the plan" in found["nodes.hosts[0].address"], found


def test_a_bmc_range_gives_each_node_the_next_address(tmp_path: Path) -> None:
    bmc_range = {"addresses": "10.0.0.11-14", "protocol": "redfish", "username": "admin",
                 "password": "env:PP_BM_SETTINGS_PW", "ca_bundle": "/etc/ssl/bmc-ca.pem"}  # fmt: skip
    data = plan([], bmc_range=bmc_range)
    data["nodes"] = {"count": 3, "size": "small", "install_disk": "/dev/sda"}
    parsed = parse_plan(data)
    with Deployment(parsed, state_dir=tmp_path / "state") as deployment:
        provider = deployment.provider
        nodes = [provider.settings_for(spec) for spec in parsed.node_specs()]  # type: ignore[attr-defined]
    assert [n.bmc.address for n in nodes] == ["10.0.0.11", "10.0.0.12", "10.0.0.13"]
    assert all(n.bmc.ca_bundle == "/etc/ssl/bmc-ca.pem" and n.bmc.effective_port == 443 for n in nodes)
    assert "settings-test-password" not in repr(nodes)


def test_a_bmc_range_is_checked_like_listed_nodes(tmp_path: Path) -> None:
    base = {"protocol": "redfish", "username": "admin", "password": "env:PP_BM_SETTINGS_PW"}
    found = issues(plan([], bmc_range={**base, "addresses": "10.0.0.20-10.0.0.11"}))
    assert "comes before" in found["platform.bmc_range"]
    found = issues(plan([], bmc_range={**base, "protocol": "ipmi", "addresses": "10.0.0.11-12"}))
    assert "media: preinserted" in found["platform.bmc_range"]
    short = plan([], bmc_range={**base, "addresses": "10.0.0.11-12"})
    short["nodes"] = {"count": 3, "size": "small", "install_disk": "/dev/sda"}
    assert "2 address(es) for 3 nodes" in provider_issues(short, tmp_path)["platform.bmc_range.addresses"]
    both = plan([{"name": "rack-1", "bmc": redfish()}], bmc_range={**base, "addresses": "10.0.0.11-12"})
    assert "not both" in provider_issues(both, tmp_path / "b")["platform.bmc_range"]


def test_the_redfish_request_timeout_is_bounded_and_reaches_each_bmc(tmp_path: Path) -> None:
    hosts = [{"name": "rack-1", "bmc": redfish()}]
    assert "platform.request_timeout_s" in issues(plan(hosts, request_timeout_s=0))
    parsed = parse_plan(plan(hosts, request_timeout_s=7.5))
    with Deployment(parsed, state_dir=tmp_path / "state") as deployment:
        provider: Any = deployment.provider
        [spec] = parsed.node_specs()
        provider.settings_for(spec)
        assert provider.driver("rack-1").request_timeout_s == 7.5
