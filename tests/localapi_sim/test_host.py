"""Host identity and the configuration progress."""

from __future__ import annotations

import re

from palette_provision.testing.localapi import SimulatorHandle

from .conftest import FAST, HOST, api, wait_until


def test_edge_host_info_reports_id_and_node_ip(sim: SimulatorHandle) -> None:
    with api(sim) as client:
        info = client.get(HOST).json()
    assert re.fullmatch(r"edge-[0-9a-f]{32}", info["metadata"]["id"])
    assert info["metadata"]["id"] == sim.host_id
    assert [nic["ip"] for nic in info["spec"]["networkInfo"]] == ["127.0.0.21"]
    assert info["spec"]["nodeRole"] == "unknown"
    assert info["status"]["configurationStatus"] == "configured"


def test_configuration_moves_pending_inprogress_configured(sim: SimulatorHandle) -> None:
    sim.reset(**{**FAST, "inprogress_after_s": 0.5, "configured_after_s": 1.0})
    phases: list[str] = []
    states: list[str] = []
    with api(sim) as client:

        def configured() -> bool:
            phase = client.get(HOST).json()["status"]["configurationStatus"]
            state = client.get(f"{HOST}/configurations/status").json()["state"]
            for seen, value in ((phases, phase), (states, state)):
                if not seen or seen[-1] != value:
                    seen.append(value)
            return state == "Configured"

        wait_until(configured, timeout=5, interval=0.05)
    assert phases == ["pending", "inprogress", "configured"]
    assert states == ["Not Configured", "In Progress", "Configured"]


def test_settings_and_current_user(sim: SimulatorHandle) -> None:
    with api(sim) as client:
        assert client.get("/v1/edge-mgmt/settings").json()["managementMode"] == "local"
        assert client.get("/v1/users/current").json()["userName"] == "admin"
