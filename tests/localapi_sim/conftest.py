"""Fixtures: simulator processes with short timings, and small HTTP helpers over real HTTPS."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from palette_provision.testing.localapi import SimulatedCluster, SimulatorHandle, start_simulator

PASSWORD = "sim-password-1"
FAST = {
    "inprogress_after_s": 0.0,
    "configured_after_s": 0.0,
    "link_step_s": 0.2,
    "sync_delay_s": 0.3,
    "cluster_running_s": 0.6,
    "cluster_delete_s": 0.3,
}
HOST = "/v1/edge-mgmt/edgehosts/current"


def login(handle: SimulatorHandle, **params: str) -> str:
    """Log in (no cookie) and return the session token."""
    with handle.client(timeout=10) as client:
        response = client.post("/v1/users/default/login", params={"setCookie": "false", **params},
                               json={"username": "admin", "password": PASSWORD})
    assert response.status_code == 200, response.text
    token: str = response.json()["Token"]["Authorization"]
    return token


def api(handle: SimulatorHandle, token: str | None = None) -> httpx.Client:
    """A client on ``handle`` sending ``token`` (logged in when not given) in the header."""
    token = token or login(handle)
    return handle.client(timeout=30, headers={"Authorization": token})


def wait_until(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns a truthy value; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., SimulatorHandle]]:
    """Factory starting single simulators (stopped at teardown)."""
    handles: list[SimulatorHandle] = []

    def _start(name: str = "n1", knobs: dict[str, Any] | None = None, **kwargs: Any) -> SimulatorHandle:
        handle = start_simulator(name, kwargs.pop("state_dir", tmp_path / name), password=PASSWORD,
                                 knobs={**FAST, **(knobs or {})}, **kwargs)
        handles.append(handle)
        return handle

    yield _start
    for handle in handles:
        handle.stop()


@pytest.fixture(scope="session")
def session_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorHandle]:
    """One stand-alone node for the whole session (reset before each test that uses it)."""
    handle = start_simulator("solo", tmp_path_factory.mktemp("solo"), password=PASSWORD,
                             node_ip="127.0.0.21", knobs=FAST)
    yield handle
    handle.stop()


@pytest.fixture
def sim(session_sim: SimulatorHandle) -> SimulatorHandle:
    """A stand-alone node, factory-reset, with fast timings."""
    session_sim.reset(**FAST)
    return session_sim


@pytest.fixture(scope="session")
def session_trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatedCluster]:
    """Three nodes that know each other, for the whole session."""
    with SimulatedCluster(tmp_path_factory.mktemp("trio"), 3, password=PASSWORD, knobs=FAST) as cluster:
        yield cluster


@pytest.fixture
def trio(session_trio: SimulatedCluster) -> SimulatedCluster:
    """Three factory-reset nodes with fast timings (node1, the leader, reports 127.0.0.11)."""
    session_trio.reset(**FAST)
    return session_trio


def link_all(cluster: SimulatedCluster) -> None:
    """Link every follower not linked yet to the leader; wait until the leader reports Completed."""
    with api(cluster.leader) as leader:
        for follower in cluster.followers:
            if follower.state()["role"] == "follower":
                continue
            token = leader.post(f"{HOST}/link/generate-token").json()["token"]
            with api(follower) as client:
                response = client.post(f"{HOST}/link", json={"token": token})
                assert response.status_code == 200, response.text
        wait_until(lambda: leader.get(f"{HOST}/link/status").json()["status"] == "Completed")


def upload(client: httpx.Client, path: Path, name: str = "bundle.tar.zst") -> httpx.Response:
    """Upload ``path`` as ``uploadFile``."""
    with open(path, "rb") as handle:
        return client.post(f"{HOST}/actions/upload-content",
                           files={"uploadFile": (name, handle, "application/octet-stream")})
