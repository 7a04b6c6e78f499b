"""The process itself: CLI contract, password handling, certificate, restart with persisted state."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from palette_provision.testing.localapi import SimulatedCluster, SimulatorHandle

from .conftest import HOST, PASSWORD, api, login, upload
from .test_cluster import body_for

MODULE = "palette_provision.testing.localapi"


def served_cert_sha256(handle: SimulatorHandle) -> str:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(handle.address, timeout=5) as raw, context.wrap_socket(raw) as tls:
        return hashlib.sha256(tls.getpeercert(binary_form=True) or b"").hexdigest()


def test_cli_refuses_to_start_without_a_password(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PALETTE_LOCALAPI_PASSWORD"}
    result = subprocess.run([sys.executable, "-m", MODULE, "--node-name", "x", "--state-dir", str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 2 and "PALETTE_LOCALAPI_PASSWORD" in result.stderr
    assert result.stdout == ""


def test_cli_password_file_ready_line_and_sigterm(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("file-password-9\n")
    env = {k: v for k, v in os.environ.items() if k != "PALETTE_LOCALAPI_PASSWORD"}
    process = subprocess.Popen([sys.executable, "-m", MODULE, "--node-name", "cli", "--listen", "127.0.0.2:0",
                                "--node-ip", "10.251.0.11", "--state-dir", str(tmp_path / "s"),
                                "--password-file", str(secret), "--knobs", json.dumps({"configured_after_s": 0})],
                               stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        assert set(ready) >= {"port", "cert_sha256", "pid"} and ready["pid"] == process.pid
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
        assert b"file-password-9" not in cmdline
        with httpx.Client(base_url=f"https://127.0.0.2:{ready['port']}", verify=False, timeout=10) as client:
            response = client.post("/v1/users/default/login",
                                   json={"username": "admin", "password": "file-password-9"})
            assert response.status_code == 200
            info = client.get(HOST, headers={"Authorization": response.json()["Token"]["Authorization"]}).json()
        assert info["spec"]["networkInfo"][0]["ip"] == "10.251.0.11"
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_ready_line_fingerprint_is_the_served_certificate(sim: SimulatorHandle) -> None:
    assert served_cert_sha256(sim) == sim.cert_sha256
    with sim.client() as client:  # the handle's context trusts exactly this certificate
        assert client.get("/v1/ping").status_code == 200


def test_password_not_on_the_command_line(sim: SimulatorHandle) -> None:
    assert PASSWORD.encode() not in Path(f"/proc/{sim.pid}/cmdline").read_bytes()


def test_restart_keeps_identity_certificate_sessions_content_and_cluster(
    start: Callable[..., SimulatorHandle], tmp_path: Path
) -> None:
    state_dir = tmp_path / "node"
    first = start("restart", state_dir=state_dir, node_ip="127.0.0.31")
    token = login(first)
    bundle = tmp_path / "b.tar.zst"
    bundle.write_bytes(b"persist" * 1000)
    with api(first, token) as client:
        assert upload(client, bundle).status_code == 201
        assert client.post("/v1/edge-mgmt/cluster", json=body_for(client, [first])).status_code == 202
    assert first.kill() != 0
    second = start("restart", state_dir=state_dir, node_ip="127.0.0.31")
    assert (second.host_id, second.cert_sha256) == (first.host_id, first.cert_sha256)
    with api(second, token) as client:  # the session survives, as the signing key does
        details = client.get(f"{HOST}/uploaded-content/details").json()
        cluster = client.get("/v1/edge-mgmt/cluster/details").json()
    assert cluster["metadata"]["name"] == "palette-mgmt" and cluster["spec"]["hostIDs"] == [first.host_id]
    assert details["sha256Hash"] == hashlib.sha256(bundle.read_bytes()).hexdigest()


def test_leader_missing_from_peers_file_is_unreachable(trio: SimulatedCluster) -> None:
    token = base64.b64encode(json.dumps({"leaderIp": "127.0.0.99", "otp": "a" * 32}).encode()).decode()
    with api(trio.followers[0]) as client:
        response = client.post(f"{HOST}/link", json={"token": token})
    assert response.status_code == 500 and response.json()["code"] == "LeaderUnreachable"
    attempts = trio.followers[0].state()["stats"]["linkAttempts"]
    assert attempts[-1]["result"] == "unreachable"
