"""The QEMU lab LAN: idempotent creation and the Local API DNAT (node:5080 -> 10.251.0.1:<port>), no QEMU."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pplab import LabError, net
from pplab._cmd import run

NODE = "10.251.0.201"  # no guest uses it: only the DNAT can answer

SERVER = r"""
import socket, sys
s = socket.socket()
s.bind(("10.251.0.1", 0))
s.listen(8)
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b"pplab-api " + sys.argv[1].encode() + b"\n")
    c.close()
"""

CLIENT = r"""
import socket, sys
with socket.create_connection((sys.argv[1], 5080), timeout=5) as c:
    print(c.recv(64).decode().strip())
"""


def fetch(address: str) -> str:
    with socket.create_connection((address, net.LOCAL_API_PORT), timeout=3) as sock:
        return sock.recv(64).decode().strip()


@pytest.fixture
def api_server(lab_ready: None) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A trivial TCP server inside pplab on 10.251.0.1:<free port>, as a Local API simulator would be."""
    net.ensure_lan()
    proc = net.run_in_lan([sys.executable, "-c", SERVER, "one"], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield proc, port
    finally:
        proc.kill()
        proc.wait()
        net.unexpose_local_api(NODE)


@pytest.mark.lab
def test_ensure_lan_is_idempotent_and_complete(lab_ready: None) -> None:
    net.ensure_lan()
    net.ensure_lan()
    assert net.lan_exists()
    assert "10.251.0.1/24" in run(["ip", "-n", "pplab", "-4", "addr", "show", "br0"]).stdout
    assert "10.250.0.2/30" in run(["ip", "-n", "pplab", "-4", "addr", "show", "uplink"]).stdout
    assert "10.250.0.1/30" in run(["ip", "-4", "addr", "show", "pplab0"]).stdout
    assert "via 10.250.0.2" in run(["ip", "route", "show", "10.251.0.0/24"]).stdout
    assert run(["ip", "netns", "exec", "pplab", "sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"
    # One DNAT rule per hook, not one more per call.
    rules = run(["ip", "netns", "exec", "pplab", "nft", "list", "table", "ip", "pplab"]).stdout
    assert rules.count("dnat ip to") == 2, rules


@pytest.mark.lab
def test_expose_local_api_from_host_and_namespace(api_server: tuple[subprocess.Popen[bytes], int]) -> None:
    _, port = api_server
    net.expose_local_api(NODE, port)
    net.expose_local_api(NODE, port)  # idempotent
    assert net.exposed_local_apis()[NODE] == port
    assert fetch(NODE) == "pplab-api one"  # from the host
    inside = net.run_in_lan([sys.executable, "-c", CLIENT, NODE], stdout=subprocess.PIPE)
    out, _ = inside.communicate(timeout=10)
    assert inside.returncode == 0 and out.decode().strip() == "pplab-api one"  # from inside the namespace

    net.unexpose_local_api(NODE)
    net.unexpose_local_api(NODE)  # a no-op now
    assert NODE not in net.exposed_local_apis()
    with pytest.raises(OSError):  # nothing answers at the node address any more
        fetch(NODE)


@pytest.mark.lab
def test_expose_rejects_addresses_outside_the_lab(lab_ready: None) -> None:
    with pytest.raises(LabError):
        net.expose_local_api("192.168.1.10", 8443)
    with pytest.raises(LabError):
        net.expose_local_api(net.GATEWAY, 8443)


def test_cli_help_runs(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "pplab", "--help"], capture_output=True, text=True, check=True)
    assert "lan" in out.stdout and "boot" in out.stdout
