"""SshdNode: a private sshd in its own namespace, with late start, packet loss and blackout (no QEMU)."""

from __future__ import annotations

import base64
import contextlib
import io
import socket
import time
from pathlib import Path

import paramiko
import pytest
from pplab._cmd import link_exists, namespace_exists
from pplab.net import SshdNode

from tests.keys import Ed25519

INDEX = 201  # other lab tests may use low indexes at the same time


def banner(address: str, timeout: float = 2.0) -> bytes:
    """The SSH identification line, or raise the socket error (refused, timeout...)."""
    with socket.create_connection((address, 22), timeout=timeout) as sock:
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(256)
            if not chunk:
                break
            data += chunk
        return data


def wait_banner(address: str, within: float) -> bytes:
    deadline = time.monotonic() + within
    while True:
        try:
            return banner(address, timeout=1.0)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.lab
@pytest.mark.timeout(120)
def test_sshd_node_late_start_blackout_loss_and_stop(lab_ready: None, tmp_path: Path) -> None:
    host = Ed25519.generate("node-host-key")
    client = Ed25519.generate("client")
    with SshdNode(INDEX, host_key=host.write_private(tmp_path / "hostkey"),
                  authorized_keys=client.public_openssh + "\n") as node:  # fmt: skip
        assert (node.namespace, node.address) == (f"ppssh-{INDEX}", f"10.252.{INDEX}.2")
        with pytest.raises(ConnectionRefusedError):  # the address exists, nothing listens yet
            banner(node.address)

        # Late start: refused until the delay has passed, then the banner.
        started = time.monotonic()
        node.start(delay_s=2)
        with pytest.raises(ConnectionRefusedError):
            banner(node.address)
        assert wait_banner(node.address, within=15).startswith(b"SSH-2.0-OpenSSH")
        assert time.monotonic() - started >= 1.8

        # A real session: host key pinned (RejectPolicy), public key auth.
        ssh = paramiko.SSHClient()
        ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
        pinned = paramiko.Ed25519Key(data=base64.b64decode(host.public_openssh.split()[1]))
        ssh.get_host_keys().add(node.address, "ssh-ed25519", pinned)
        ssh.connect(node.address, username=node.login_user, look_for_keys=False, allow_agent=False, timeout=5,
                    pkey=paramiko.Ed25519Key.from_private_key(io.StringIO(client.private_openssh)))  # fmt: skip
        transport = ssh.get_transport()
        assert transport is not None and transport.is_authenticated()
        ssh.close()

        # Blackout: connections time out (packets vanish), they are not refused.
        node.blackout(True)
        with pytest.raises(TimeoutError):
            banner(node.address, timeout=1.5)
        assert node.dropped_packets() > 0
        node.blackout(False)
        assert wait_banner(node.address, within=5).startswith(b"SSH-2.0-")

        # 100 % loss behaves like a blackout; 30 % loss drops packets but banners still get through.
        node.set_loss(100)
        with pytest.raises(TimeoutError):
            banner(node.address, timeout=1.5)
        node.set_loss(30)
        got = 0
        for _ in range(10):
            with contextlib.suppress(OSError):
                got += banner(node.address, timeout=3).startswith(b"SSH-2.0-")
            if got and node.dropped_packets():
                break
        assert got >= 1 and node.dropped_packets() > 0, (got, node.dropped_packets())
        node.set_loss(0)
        assert node.dropped_packets() == 0

        # Stop: refused again.
        node.stop()
        assert not node.is_running()
        with pytest.raises(ConnectionRefusedError):
            banner(node.address)
    assert not namespace_exists(f"ppssh-{INDEX}") and not link_exists(f"ppssh{INDEX}")


@pytest.mark.lab
def test_sshd_node_cleans_up_when_the_test_fails(lab_ready: None, tmp_path: Path) -> None:
    host = Ed25519.generate("node-host-key")
    node = SshdNode(INDEX + 1, host_key=host.write_private(tmp_path / "hostkey"), authorized_keys="")
    with pytest.raises(RuntimeError, match="boom"), node:
        node.start()
        wait_banner(node.address, within=10)
        raise RuntimeError("boom")
    assert not node.is_running()
    assert not namespace_exists(node.namespace) and not link_exists(node.host_veth)
