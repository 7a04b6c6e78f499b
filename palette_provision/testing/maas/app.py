"""Assembles the region, its routes and its HTTP(S) server."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from palette_provision.testing._simhttp import cert_sha256, certificate_pair, parse_listen, server_context

from . import api_boot, api_machines, api_misc, api_sim, lifecycle
from .config import MaasConfig
from .region import Region
from .server import Router, SimHTTPServer

__all__ = ["Simulator", "build_router"]


def build_router() -> Router:
    """The router with every implemented endpoint."""
    router = Router()
    for module in (api_misc, api_machines, api_boot, api_sim):
        module.register(router)
    return router


class Simulator:
    """A region plus its bound (not yet serving) server."""

    def __init__(self, config: MaasConfig, state_dir: Path, listen: str, *, knobs: Mapping[str, Any] | None = None,
                 api_key: str | None = None, tls: bool = False, cert_file: Path | None = None,
                 key_file: Path | None = None, verbose: bool = False) -> None:
        host, port = parse_listen(listen)
        state_dir.mkdir(parents=True, exist_ok=True)
        self.region = Region(config, state_dir, knobs=dict(knobs or {}), api_key=api_key)
        self.cert_file: Path | None = None
        self.cert_sha256: str | None = None
        context = None
        if tls or cert_file is not None:
            cert_file, key_file = certificate_pair(state_dir, "maas-simulator", host, cert_file=cert_file,
                                                   key_file=key_file)
            self.cert_file, self.cert_sha256 = cert_file, cert_sha256(cert_file)
            context = server_context(cert_file, key_file)
        self.server = SimHTTPServer((host, port), self.region, build_router(), context, verbose)
        self.host = host
        self.port = int(self.server.socket.getsockname()[1])
        self.scheme = "https" if context is not None else "http"
        lifecycle.resume(self.region)

    @property
    def url(self) -> str:
        """The MAAS URL as users write it: ``http://host:port/MAAS``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/MAAS"

    def ready_line(self, pid: int) -> dict[str, Any]:
        """The JSON object printed on stdout once listening."""
        return {"url": self.url, "host": self.host, "port": self.port, "scheme": self.scheme,
                "api_key": str(self.region.api_key), "pid": pid, "cert_sha256": self.cert_sha256,
                "cert_file": str(self.cert_file) if self.cert_file else None,
                "state_dir": str(self.region.state_dir)}

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown`."""
        self.server.serve_forever(poll_interval=0.05)

    def shutdown(self) -> None:
        """Stop serving (from another thread)."""
        self.server.shutdown()

    def close(self) -> None:
        """Release the socket, stop hooks and save the state."""
        self.server.server_close()
        with self.region.lock:
            for process in self.region.hook_processes.values():
                if process.poll() is None:
                    process.kill()
            self.region.save()
