"""Start the MAAS region simulator from Python: :func:`start_maas_simulator` returns a :class:`MaasSimulatorHandle`."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from palette_provision.secrets import Secret
from palette_provision.testing.localapi.launcher import (
    PACKAGE_ROOT,
    SimulatorProcess,
    SimulatorStartError,
    _read_ready_line,
)
from palette_provision.waiting import Backoff, wait_for

__all__ = ["MaasSimulatorHandle", "SimulatorStartError", "start_maas_simulator"]

API_KEY_ENV = "MAAS_SIM_API_KEY"

_STATUS_POLL = Backoff(initial=0.05, maximum=0.2, jitter=0.0)
"""How often :meth:`MaasSimulatorHandle.wait_status` reads a machine (a local simulator: cheap)."""


@dataclass
class MaasSimulatorHandle(SimulatorProcess):
    """A running simulator process."""

    url: str
    """The MAAS URL as users give it, ``http://127.0.0.1:PORT/MAAS`` (the API is under ``/api/2.0/``)."""
    host: str
    port: int
    scheme: str
    api_key: str = field(repr=False)
    state_dir: Path
    cert_sha256: str | None
    cert_file: Path | None
    process: subprocess.Popen[bytes] = field(repr=False)
    command: list[str] = field(repr=False, default_factory=list)
    env: dict[str, str] = field(repr=False, default_factory=dict)

    @property
    def pid(self) -> int:
        """Process id."""
        return self.process.pid

    @property
    def api_url(self) -> str:
        """``<url>/api/2.0/``."""
        return f"{self.url}/api/2.0/"

    @property
    def root_url(self) -> str:
        """``scheme://host:port`` (where ``/__sim__/`` lives)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def api_key_secret(self) -> Secret:
        """The API key as a :class:`~palette_provision.secrets.Secret`."""
        return Secret(self.api_key, source="maas-simulator")

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client context trusting exactly this simulator's certificate (``None`` over plain HTTP)."""
        if self.cert_file is None:
            return None
        return ssl.create_default_context(cafile=str(self.cert_file))

    def _control(self, method: str, path: str, **request: Any) -> Any:
        verify: ssl.SSLContext | bool = self.ssl_context() or True
        with httpx.Client(base_url=self.root_url, verify=verify, timeout=10, trust_env=False) as client:
            response = client.request(method, path, **request)
            if response.status_code >= 400:
                raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
            return response.json()

    def state(self) -> dict[str, Any]:
        """``GET /__sim__/state``."""
        result: dict[str, Any] = self._control("GET", "/__sim__/state")
        return result

    def machine(self, key: str) -> dict[str, Any]:
        """One machine of :meth:`state` by system id or hostname (``KeyError`` if unknown)."""
        for sid, view in self.state()["machines"].items():
            if key in (sid, view["hostname"]):
                return dict(view)
        raise KeyError(key)

    def knobs(self) -> dict[str, Any]:
        """The knobs in force."""
        result: dict[str, Any] = self._control("GET", "/__sim__/knobs")
        return result

    def set_knobs(self, **changes: Any) -> dict[str, Any]:
        """Merge ``changes`` into the knobs; return the knobs now in force."""
        result: dict[str, Any] = self._control("POST", "/__sim__/knobs", json=changes)
        return result

    def reset_knobs(self, **knobs: Any) -> dict[str, Any]:
        """Every knob back to its default, then ``knobs``."""
        result: dict[str, Any] = self._control("POST", "/__sim__/knobs", params={"replace": "true"}, json=knobs)
        return result

    def reset(self, **knobs: Any) -> dict[str, Any]:
        """Machines back to the configuration, history and uploads forgotten, knobs = defaults + ``knobs``."""
        result: dict[str, Any] = self._control("POST", "/__sim__/reset", json=knobs)
        return result

    def add_machine(self, **entry: Any) -> dict[str, Any]:
        """Add a Ready machine (an entry of the configuration's ``machines``); its simulator view."""
        result: dict[str, Any] = self._control("POST", "/__sim__/machines", json=entry)
        return result

    def set_machine(self, system_id: str, **fields: Any) -> dict[str, Any]:
        """Override fields of a machine (``status``, ``power_state``, ``ip_addresses``...)."""
        result: dict[str, Any] = self._control("POST", f"/__sim__/machines/{system_id}", json=fields)
        return result

    def wait_status(self, key: str, *names: str, timeout: float = 10.0) -> dict[str, Any]:
        """Poll until the machine's ``status_name`` is one of ``names``; its view (``WaitTimeout`` otherwise)."""
        return wait_for(
            lambda: self.machine(key),
            what=f"simulated machine {key} to be {' or '.join(names)}",
            timeout=timeout,
            until=lambda view: view["status_name"] in names,
            backoff=_STATUS_POLL,
            describe=lambda view: str(view["status_name"]),
        )

    def restart(self, ready_timeout: float = 30.0) -> MaasSimulatorHandle:
        """Stop, then start again on the same state dir and port (state, key and certificate are kept)."""
        self.stop()
        command = list(self.command)
        command[command.index("--listen") + 1] = f"{self.host}:{self.port}"
        fresh = _spawn(command, self.env, self.state_dir, ready_timeout)
        self.process, self.cert_sha256 = fresh.process, fresh.cert_sha256
        return self

    def __enter__(self) -> MaasSimulatorHandle:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _spawn(command: list[str], env: dict[str, str], state_dir: Path, ready_timeout: float) -> MaasSimulatorHandle:
    log = state_dir / "simulator.log"
    with open(log, "ab") as log_handle:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log_handle, stdin=subprocess.DEVNULL,
                                   env=env, cwd=state_dir)
    ready = _read_ready_line(process, ready_timeout, log)
    return MaasSimulatorHandle(
        url=ready["url"], host=ready["host"], port=int(ready["port"]), scheme=ready["scheme"],
        api_key=ready["api_key"], state_dir=state_dir, cert_sha256=ready.get("cert_sha256"),
        cert_file=Path(ready["cert_file"]) if ready.get("cert_file") else None, process=process,
        command=command, env=env,
    )


def start_maas_simulator(
    state_dir: Path,
    *,
    config: Mapping[str, Any] | Path | None = None,
    machines: Sequence[Mapping[str, Any]] | None = None,
    knobs: Mapping[str, Any] | None = None,
    api_key: str | Secret | None = None,
    tls: bool = False,
    listen: str = "127.0.0.1:0",
    cert_file: Path | None = None,
    key_file: Path | None = None,
    verbose: bool = False,
    ready_timeout: float = 30.0,
) -> MaasSimulatorHandle:
    """Start a simulator process and wait for its ready line.

    ``config`` is the configuration (a mapping, written to ``<state_dir>/config.json``, or a file); ``machines``
    replaces its ``machines``. The API key (``ck:tk:ts``; default: kept from the state dir or generated) travels in
    the child's environment, never on its command line. The child's stderr goes to ``<state_dir>/simulator.log``.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    config_file: Path | None = None
    if isinstance(config, Path):
        config_file = config
        if machines is not None:
            config = json.loads(config.read_text())
    if config is None and machines is not None:
        config = {}
    if isinstance(config, Mapping):
        data = dict(config)
        if machines is not None:
            data["machines"] = [dict(m) for m in machines]
        config_file = state_dir / "config.json"
        config_file.write_text(json.dumps(data, indent=1))
    command = [sys.executable, "-m", "palette_provision.testing.maas", "--listen", listen,
               "--state-dir", str(state_dir), "--knobs", json.dumps(dict(knobs or {})), "--api-key-env", API_KEY_ENV]
    if config_file is not None:
        command += ["--config", str(config_file)]
    if tls:
        command.append("--tls")
    if cert_file is not None and key_file is not None:
        command += ["--cert-file", str(cert_file), "--key-file", str(key_file)]
    if verbose:
        command.append("--verbose")
    env = {k: v for k, v in os.environ.items() if k != API_KEY_ENV}
    if api_key is not None:
        env[API_KEY_ENV] = api_key.reveal() if isinstance(api_key, Secret) else api_key
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
    return _spawn(command, env, state_dir, ready_timeout)
