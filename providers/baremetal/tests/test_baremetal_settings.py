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
