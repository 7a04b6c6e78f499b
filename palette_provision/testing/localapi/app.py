"""Assembles a node, its routes and its HTTPS server."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from palette_provision.testing._simhttp import cert_sha256, certificate_pair, parse_listen, server_context

from . import api_cluster, api_host, api_sim, api_users
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


class Simulator:
    """A node plus its bound (not yet serving) HTTPS server, and its VIP services (``vip.py``)."""

    def __init__(self, config: NodeConfig, listen: str, *, knobs: Mapping[str, Any] | None = None,
                 cert_file: Path | None = None, key_file: Path | None = None,
                 verbose: bool = False, console_port: int = 0, kube_port: int = 0) -> None:
        host, port = parse_listen(listen)
        if not config.listen_host:
            config = dataclasses.replace(config, listen_host=host)
        self.node = Node(config, KnobBox(knobs))
        # Kept in the state dir across restarts, as an appliance keeps its certificate across reboots.
        self.cert_file, key = certificate_pair(config.state_dir, config.name, host, extra_names=[config.node_ip],
                                               cert_file=cert_file, key_file=key_file)
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

