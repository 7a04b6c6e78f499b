"""The readiness ladder against real OpenSSH sshd nodes in network namespaces (pplab.net.SshdNode).

No SSH mocks: each node is a namespace ``ppssh-<i>`` with its own address (10.252.<i>.2), a private sshd and
nftables faults. Needs root, openssh-server, nftables and the lab package (``pip install -e lab``); without them
the tests fail with a message saying what is missing, never skip.
"""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from palette_provision.errors import AuthenticationError, HostKeyMismatch, ReadinessError, WaitTimeout
from palette_provision.journal import Journal
from palette_provision.readiness import (
    LocalApiCertificateMismatch,
    ReadinessTarget,
    Rung,
    SessionAuthenticationFailed,
    climb,
)
from palette_provision.readiness import _state as readiness_state
from palette_provision.secrets import Secret
from palette_provision.seed import HostKey

pytestmark = pytest.mark.lab

# Indices 231+ keep clear of other suites' sshd nodes (the lab's own tests use low indices).
_FIRST_INDEX = 231


def _lab_problems() -> list[str]:
    problems = []
    if os.geteuid() != 0:
        problems.append("root (network namespaces, veth, nftables)")
    for tool, package in (("/usr/sbin/sshd", "openssh-server"), ("nft", "nftables"), ("ip", "iproute2")):
        if shutil.which(tool) is None:
            problems.append(f"{tool} (apt-get install {package})")
    try:
        importlib.import_module("pplab.net")
    except ImportError:
        problems.append("the lab package pplab (pip install -e lab)")
    return problems


@pytest.fixture(scope="module", autouse=True)
def _lab_available() -> None:
    problems = _lab_problems()
    if problems:
        pytest.fail("the readiness tests need real sshd nodes; missing: " + ", ".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def keys() -> dict[str, HostKey]:
    # HostKey is a plain ed25519 pair: good for the node's host key and the account's key alike.
    return {name: HostKey.generate() for name in ("host", "user", "other_host", "other_user")}


class Lab:
    """Makes sshd nodes (destroyed at the end) and counts the ladder's TCP connections."""

    def __init__(self, tmp_path: Path, keys: dict[str, HostKey], monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp_path = tmp_path
        self.keys = keys
        self.nodes: list[Any] = []
        self.connections = 0
        real_open = readiness_state._open_tcp

        def counting(address: str, port: int, timeout: float) -> Any:
            self.connections += 1
            return real_open(address, port, timeout)

        # Where the ladder opens every TCP connection (readiness/_state.py).
        monkeypatch.setattr(readiness_state, "_open_tcp", counting)

    def node(self, *, host_key: str = "host") -> Any:
        # Through importlib: the lab is its own distribution (lab/pyproject.toml), not on mypy's path.
        sshd_node = importlib.import_module("pplab.net").SshdNode
        key_file = self.tmp_path / f"{host_key}_ed25519"
        key_file.write_text(self.keys[host_key].private_openssh.reveal())
        node = sshd_node(_FIRST_INDEX + len(self.nodes), key_file, self.keys["user"].public_line + "\n")
        self.nodes.append(node)
        return node.create()

    def start(self, node: Any) -> None:
        """Start sshd and return once it sends its banner (this probe is not counted as the ladder's)."""
        node.start()
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection((node.address, node.port), timeout=1) as sock:
                    if sock.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    def target(self, sshd: Any, **overrides: Any) -> ReadinessTarget:
        values: dict[str, Any] = {
            "node": sshd.namespace,
            "address": lambda: sshd.address,
            "username": sshd.login_user,
            "private_key": self.keys["user"].private_openssh,
            "pinned_host_key": self.keys["host"].public_line,
            "deadline_s": 30.0,
        }
        values.update(overrides)
        return ReadinessTarget(**values)

    def destroy(self) -> None:
        for node in self.nodes:
            node.destroy()


@pytest.fixture
def lab(tmp_path: Path, keys: dict[str, HostKey], monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    lab = Lab(tmp_path, keys, monkeypatch)
    try:
        yield lab
    finally:
        lab.destroy()


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal.open(tmp_path / "journal.db", deployment="readiness-tests") as j:
        yield j


def later(seconds: float, action: Callable[[], None]) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.daemon = True
    timer.start()
    return timer


SSH_RUNGS = ["address", "ssh_banner", "host_key", "ssh_session"]


# ------------------------------------------------------------------------------------------- reaching the top


def test_a_running_node_climbs_every_ssh_rung_with_evidence_in_the_journal(lab: Lab, journal: Journal) -> None:
    node = lab.node()
    node.start()
    seen: list[Rung] = []
    report = climb(lab.target(node), journal=journal, on_rung=seen.append)
    assert [r.name for r in report.rungs] == SSH_RUNGS
    assert [r.name for r in seen] == SSH_RUNGS
    assert report.address == node.address
    evidence = {e["rung"]: e for e in journal.evidence(node.namespace)}
    assert list(evidence) == SSH_RUNGS
    assert evidence["address"]["address"] == node.address
    assert evidence["ssh_banner"]["banner"].startswith("SSH-2.0-OpenSSH")
    assert evidence["host_key"]["fingerprint"] == lab.keys["host"].fingerprint
    assert evidence["host_key"]["trust"] == "pinned"
    assert (evidence["ssh_session"]["exit_status"], evidence["ssh_session"]["output"]) == (0, "ok")
    assert all(e["at"] > 0 for e in evidence.values())
    assert report.rung("ssh_session") is not None
    assert report.rung("ssh_session").detail["output"] == "ok"  # type: ignore[union-attr]
    # One connection per banner poll (sshd needs a moment to listen), then one key exchange and one session.
    assert report.connections == lab.connections == report.rung("ssh_banner").attempts + 2  # type: ignore[union-attr]


def test_late_sshd_is_noticed_once_it_starts_without_hammering_the_node(lab: Lab) -> None:
    node = lab.node()
    node.start(delay_s=3)
    report = climb(lab.target(node))
    banner = report.rung("ssh_banner")
    assert banner is not None and banner.elapsed_s >= 2.5
    assert banner.attempts >= 3  # it really polled while the port refused
    # At most two polls a second, plus the host-key and session connections.
    assert lab.connections <= 2 * banner.elapsed_s + 3


def test_thirty_percent_packet_loss_is_ridden_out(lab: Lab) -> None:
    node = lab.node()
    node.set_loss(30)
    node.start()
    # What is asserted is that the climb completes, not how fast: most climbs take 4-15 s here, but one in a few
    # loses two or three SSH attempts to their 15 s timeouts (45 s seen in CI), so the deadline leaves room for that.
    report = climb(lab.target(node, deadline_s=180))
    assert [r.name for r in report.rungs] == SSH_RUNGS
    assert node.dropped_packets() > 0  # the loss was real


def test_a_blackout_lifted_mid_wait_is_noticed(lab: Lab) -> None:
    node = lab.node()
    node.start()
    node.blackout(True)
    later(3, lambda: node.blackout(False))
    report = climb(lab.target(node))
    banner = report.rung("ssh_banner")
    assert banner is not None and banner.elapsed_s >= 2.5
    assert [r.name for r in report.rungs] == SSH_RUNGS


def test_trust_on_first_use_records_the_key_then_pins_it(lab: Lab, journal: Journal) -> None:
    node = lab.node()
    lab.start(node)
    with structlog.testing.capture_logs() as logs:
        first = climb(lab.target(node, pinned_host_key=None, trust_on_first_use=True), journal=journal)
    assert first.rung("host_key").detail["trust"] == "recorded on first use"  # type: ignore[union-attr]
    warned = [e for e in logs if e["event"] == "ssh_host_key_trusted_on_first_use"]
    assert warned and warned[0]["log_level"] == "warning"
    assert warned[0]["fingerprint"] == lab.keys["host"].fingerprint
    recorded = journal.fact(node.namespace, "host_key_public")
    assert recorded.split()[:2] == lab.keys["host"].public_line.split()[:2]
    assert journal.fact(node.namespace, "host_key_fingerprint") == lab.keys["host"].fingerprint

    second = climb(lab.target(node, pinned_host_key=None, trust_on_first_use=True), journal=journal)
    assert second.rung("host_key").detail["trust"] == "pinned"  # type: ignore[union-attr]


def test_no_pinned_key_without_trust_on_first_use_is_refused(lab: Lab) -> None:
    node = lab.node()
    lab.start(node)
    with pytest.raises(ReadinessError, match="no pinned SSH host key") as info:
        climb(lab.target(node, pinned_host_key=None, trust_on_first_use=False))
    assert info.value.rung == "ssh_banner"


# ------------------------------------------------------------------------------------------- final failures


def test_a_wrong_host_key_fails_at_once_without_retries(lab: Lab, journal: Journal) -> None:
    node = lab.node(host_key="other_host")
    lab.start(node)
    with pytest.raises(HostKeyMismatch) as info:
        climb(lab.target(node, deadline_s=120), journal=journal)
    err = info.value
    assert err.rung == "ssh_banner"
    assert lab.keys["other_host"].fingerprint in str(err)
    assert lab.keys["host"].fingerprint in str(err)
    assert lab.connections == 2  # one banner read, one key exchange: no retry
    assert "host_key" not in [e["rung"] for e in journal.evidence(node.namespace)]


def test_a_trust_on_first_use_pin_catches_a_replaced_node(lab: Lab, journal: Journal) -> None:
    node = lab.node()
    lab.start(node)
    climb(lab.target(node, pinned_host_key=None, trust_on_first_use=True), journal=journal)
    node.destroy()
    impostor = lab.node(host_key="other_host")
    lab.start(impostor)
    with pytest.raises(HostKeyMismatch):
        climb(lab.target(impostor, node=node.namespace, pinned_host_key=None, trust_on_first_use=True), journal=journal)


def test_wrong_credentials_fail_at_once_without_retries(lab: Lab) -> None:
    node = lab.node()
    lab.start(node)
    with pytest.raises(SessionAuthenticationFailed) as info:
        climb(lab.target(node, private_key=lab.keys["other_user"].private_openssh, deadline_s=120))
    err = info.value
    assert isinstance(err, ReadinessError) and isinstance(err, AuthenticationError)
    assert err.rung == "host_key"
    assert "Authentication failed." in (err.last_error or "")
    assert lab.connections == 3  # banner, key exchange, one login: no retry
    assert lab.keys["other_user"].private_openssh.reveal() not in str(err)


def test_a_node_that_never_comes_up_times_out_naming_the_last_rung_and_error(lab: Lab) -> None:
    node = lab.node()  # created, sshd never started: the port refuses
    with pytest.raises(ReadinessError) as info:
        climb(lab.target(node, deadline_s=3))
    err = info.value
    assert err.rung == "address"
    assert "SSH banner" in str(err)
    assert "ConnectionRefusedError" in (err.last_error or "")
    assert isinstance(err.__cause__, WaitTimeout)
    assert 3 <= lab.connections <= 7  # ~0.5 s, then ~1 s between polls


def test_a_node_without_an_address_times_out_on_the_first_rung(lab: Lab) -> None:
    target = ReadinessTarget(node="ghost", address=lambda: None, username="kairos", deadline_s=1.5)
    with pytest.raises(ReadinessError) as info:
        climb(target)
    assert info.value.rung == "none"
    assert "address" in str(info.value)
    assert lab.connections == 0


# ------------------------------------------------------------------------------------------- the Local API


_HTTPS_SERVER = """
import http.server, ssl, sys
cert, key, addr, port, status = sys.argv[1:6]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(int(status))
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer((addr, int(port)), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
"""


@pytest.fixture
def local_api(tmp_path: Path) -> Iterator[Callable[[Any, int], str]]:
    """Start a tiny HTTPS server inside a node's namespace on 5080; returns the certificate's SHA-256."""
    from palette_provision.testing._simhttp import cert_sha256, generate_self_signed

    procs: list[subprocess.Popen[str]] = []

    def start(node: Any, status: int) -> str:
        cert, key = tmp_path / f"{node.namespace}.crt", tmp_path / f"{node.namespace}.key"
        generate_self_signed(cert, key, node.namespace, [node.address])
        argv = ["ip", "netns", "exec", node.namespace, sys.executable, "-c", _HTTPS_SERVER]
        proc = subprocess.Popen(
            [*argv, str(cert), str(key), node.address, "5080", str(status)], stdout=subprocess.PIPE, text=True
        )
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        return cert_sha256(cert)

    try:
        yield start
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_the_local_api_rung_accepts_a_401_and_pins_the_certificate_on_first_use(
    lab: Lab, journal: Journal, local_api: Callable[[Any, int], str]
) -> None:
    node = lab.node()
    lab.start(node)
    fingerprint = local_api(node, 401)
    report = climb(lab.target(node, local_api_port=5080), journal=journal)
    assert [r.name for r in report.rungs] == [*SSH_RUNGS, "local_api"]
    detail = report.rung("local_api").detail  # type: ignore[union-attr]
    assert (detail["http_status"], detail["cert_sha256"], detail["trust"]) == (
        401,
        fingerprint,
        "recorded on first use",
    )
    assert journal.fact(node.namespace, "local_api_cert_sha256") == fingerprint
    assert journal.evidence(node.namespace)[-1]["rung"] == "local_api"

    again = climb(lab.target(node, local_api_port=5080), journal=journal)
    assert again.rung("local_api").detail["trust"] == "pinned"  # type: ignore[union-attr]


def test_a_local_api_certificate_other_than_the_pinned_one_fails_at_once(
    lab: Lab, local_api: Callable[[Any, int], str]
) -> None:
    node = lab.node()
    fingerprint = local_api(node, 200)
    wrong = "00" * 32
    target = lab.target(node, ssh=False, local_api_port=5080, local_api_cert_sha256=wrong, deadline_s=60)
    with pytest.raises(LocalApiCertificateMismatch) as info:
        climb(target)
    assert fingerprint in str(info.value)
    assert info.value.rung == "address"


def test_the_local_api_rung_retries_while_the_api_answers_503(lab: Lab, local_api: Callable[[Any, int], str]) -> None:
    node = lab.node()
    local_api(node, 503)
    with pytest.raises(ReadinessError) as info:
        climb(lab.target(node, ssh=False, local_api_port=5080, deadline_s=2))
    assert "HTTP 503" in (info.value.last_error or "")


# ------------------------------------------------------------------------------------------- secrets


def test_the_private_key_never_reaches_logs_errors_or_the_journal(lab: Lab, journal: Journal) -> None:
    node = lab.node()
    lab.start(node)
    private = lab.keys["user"].private_openssh.reveal()
    with structlog.testing.capture_logs() as logs:
        climb(lab.target(node), journal=journal)
        with pytest.raises(SessionAuthenticationFailed) as info:
            climb(lab.target(node, private_key=Secret(lab.keys["other_user"].private_openssh.reveal())))
    text = repr(logs) + repr(journal.evidence(node.namespace)) + str(info.value) + repr(info.value.last_error)
    assert private not in text
    assert lab.keys["other_user"].private_openssh.reveal() not in text
    assert "PRIVATE KEY" not in text
    assert any(entry["event"] == "readiness_rung_reached" for entry in logs)
