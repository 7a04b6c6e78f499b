"""Assembles a node, its routes and its HTTPS server."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import api_cluster, api_host, api_sim, api_users
from .certs import cert_sha256, generate_self_signed, server_context
from .knobs import KnobBox
from .node import Node, NodeConfig
from .server import Router, SimHTTPServer
from .vip import VipServices


def build_router() -> Router:
    """Return the router with every implemented endpoint."""
    router = Router()
    for module in (api_users, api_host, api_cluster, api_sim):
        module.register(router)
    return router


def parse_listen(listen: str) -> tuple[str, int]:
    """Parse ``host:port`` or ``[v6]:port`` (port 0 = any free port)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise ValueError(f"--listen must be HOST:PORT, got {listen!r}")
    return host, int(port)


def ensure_certificate(config: NodeConfig, listen_host: str, cert_file: Path | None,
                       key_file: Path | None) -> tuple[Path, Path]:
    """Return (cert, key) paths: the given pair, else the state dir's pair (made on first start).

    The pair is kept across restarts, as an appliance keeps its certificate across reboots, so a
    client that pinned the fingerprint still connects after a simulator restart.
    """
    if cert_file is not None and key_file is not None:
        return cert_file, key_file
    cert, key = config.state_dir / "tls.crt", config.state_dir / "tls.key"
    if cert.exists() and key.exists():
        return cert, key
    names = [config.name, "localhost", "127.0.0.1", "::1", config.node_ip]
    try:
        if not ipaddress.ip_address(listen_host).is_unspecified:
            names.append(listen_host)
    except ValueError:
        names.append(listen_host)
    generate_self_signed(cert, key, config.name, names)
    return cert, key


class Simulator:
    """A node plus its bound (not yet serving) HTTPS server, and its VIP services (``vip.py``)."""

    def __init__(self, config: NodeConfig, listen: str, *, knobs: Mapping[str, Any] | None = None,
                 cert_file: Path | None = None, key_file: Path | None = None,
                 verbose: bool = False, console_port: int = 0, kube_port: int = 0) -> None:
        host, port = parse_listen(listen)
        if not config.listen_host:
            config = dataclasses.replace(config, listen_host=host)
        self.node = Node(config, KnobBox(knobs))
        self.cert_file, key = ensure_certificate(config, host, cert_file, key_file)
        self.cert_sha256 = cert_sha256(self.cert_file)
        self.server = SimHTTPServer((host, port), self.node, build_router(),
                                    server_context(self.cert_file, key), verbose)
        self.host = host
        self.port = int(self.server.socket.getsockname()[1])
        self.vip = VipServices(self.node, host, console_port=console_port, kube_port=kube_port, verbose=verbose)
        self.vip.start()

    def ready_line(self, pid: int) -> dict[str, Any]:
        """The JSON object printed on stdout once listening."""
        return {"port": self.port, "cert_sha256": self.cert_sha256, "pid": pid, "host": self.host,
                "cert_file": str(self.cert_file), "host_id": self.node.host_id}

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown`."""
        self.server.serve_forever(poll_interval=0.05)

    def shutdown(self) -> None:
        """Stop serving (from another thread), the VIP listeners too, and persist the state."""
        self.server.shutdown()
        self.vip.close()

    def close(self) -> None:
        """Release the socket and save the state."""
        self.server.server_close()
        with self.node.lock:
            self.node.save()

