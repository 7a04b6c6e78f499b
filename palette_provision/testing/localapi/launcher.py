"""Start simulator processes from Python: :func:`start_simulator` and :class:`SimulatedCluster`."""

from __future__ import annotations

import json
import os
import selectors
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

PACKAGE_ROOT = Path(__file__).resolve().parents[3]
PASSWORD_ENV = "PALETTE_LOCALAPI_PASSWORD"  # noqa: S105 - a variable name


class SimulatorProcess:
    """A simulator's process lifecycle, shared by the Local API and MAAS simulators' handles (``self.process``)."""

    process: subprocess.Popen[bytes]

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait (SIGKILL after ``timeout``); return the exit code."""
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()

    def kill(self) -> int:
        """SIGKILL (a crash: what was written to the state dir stays, nothing more is saved)."""
        if self.alive:
            self.process.kill()
        return self.process.wait()


class SimulatorStartError(RuntimeError):
    """The simulator process exited or stayed silent before printing its ready line."""


@dataclass(frozen=True)
class VipEndpoints:
    """Where a simulated cluster's VIP services listen (from ``/__sim__/state``), for tests and the lab.

    In the lab ``https://<vip>:443`` and ``https://<vip>:6443`` are DNATed to these ports; elsewhere connect to
    ``host`` (both server certificates name it, and 127.0.0.1, beside the VIP).
    """

    vip: str
    host: str
    console_port: int
    kube_port: int
    console_cert_sha256: str
    console_alt_cert_sha256: str
    console_cert_file: Path
    kube_ca_pem: str
    kube_ca_sha256: str

    @property
    def console_url(self) -> str:
        """``https://<host>:<console_port>``."""
        return f"https://{self.host}:{self.console_port}"

    @property
    def kube_url(self) -> str:
        """``https://<host>:<kube_port>``."""
        return f"https://{self.host}:{self.kube_port}"

    def console_client(self, **kwargs: Any) -> httpx.Client:
        """An ``httpx.Client`` on :attr:`console_url` trusting exactly the console's (first) certificate."""
        context = ssl.create_default_context(cafile=str(self.console_cert_file))
        return httpx.Client(base_url=self.console_url, verify=context, **kwargs)


@dataclass
class SimulatorHandle(SimulatorProcess):
    """A running simulator process (one node)."""

    node_name: str
    node_ip: str
    host: str
    port: int
    cert_sha256: str
    cert_file: Path
    host_id: str
    state_dir: Path
    process: subprocess.Popen[bytes] = field(repr=False)
    username: str = "admin"

    @property
    def pid(self) -> int:
        """Process id."""
        return self.process.pid

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the simulator listens on."""
        return self.host, self.port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``https://127.0.0.1:40123``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting exactly this simulator's certificate."""
        return ssl.create_default_context(cafile=str(self.cert_file))

    def client(self, **kwargs: Any) -> httpx.Client:
        """An ``httpx.Client`` on :attr:`url` trusting the simulator certificate."""
        return httpx.Client(base_url=self.url, verify=self.ssl_context(), **kwargs)

    def _control(self, method: str, path: str, **request: Any) -> dict[str, Any]:
        """One call to the simulator's control API; its JSON answer."""
        with self.client(timeout=10) as client:
            response = client.request(method, path, **request)
            response.raise_for_status()
            result: dict[str, Any] = response.json()
            return result

    def state(self) -> dict[str, Any]:
        """``GET /__sim__/state``."""
        return self._control("GET", "/__sim__/state")

    def set_knobs(self, **changes: Any) -> dict[str, Any]:
        """``POST /__sim__/knobs`` with ``changes``; return the knobs now in force."""
        return self._control("POST", "/__sim__/knobs", json=changes)

    def reset_knobs(self, **knobs: Any) -> dict[str, Any]:
        """Return every knob to its default, then apply ``knobs``."""
        return self._control("POST", "/__sim__/knobs", params={"replace": "true"}, json=knobs)

    def reset(self, **knobs: Any) -> dict[str, Any]:
        """Factory-reset the node (``POST /__sim__/reset``) with knobs = defaults + ``knobs``."""
        return self._control("POST", "/__sim__/reset", json=knobs)

    def vip_services(self) -> VipEndpoints:
        """The VIP services of the cluster this node holds (``LookupError`` before create / after delete)."""
        info = self.state().get("vip") or {}
        if not info.get("kubeUp"):
            raise LookupError(f"{self.node_name} serves no VIP services: they start when a cluster is created here")
        return VipEndpoints(
            vip=info["vip"], host=info["host"], console_port=int(info["consolePort"]),
            kube_port=int(info["kubePort"]), console_cert_sha256=info["consoleCertSha256"],
            console_alt_cert_sha256=info["consoleAltCertSha256"], console_cert_file=Path(info["consoleCertFile"]),
            kube_ca_pem=info["kubeCaPem"], kube_ca_sha256=info["kubeCaSha256"],
        )

    @property
    def console_port(self) -> int:
        """Port of the system console at the VIP (see :meth:`vip_services`)."""
        return self.vip_services().console_port

    @property
    def kube_port(self) -> int:
        """Port of the kube-apiserver stand-in at the VIP (see :meth:`vip_services`)."""
        return self.vip_services().kube_port

    def peak_rss_kib(self) -> int:
        """Peak resident set size of the process (``VmHWM`` in ``/proc/<pid>/status``), KiB."""
        from palette_provision.testing.metrics import peak_rss_kib

        return peak_rss_kib(self.pid)

    def __enter__(self) -> SimulatorHandle:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _read_ready_line(process: subprocess.Popen[bytes], timeout: float, log: Path) -> dict[str, Any]:
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if selector.select(timeout=0.1):
                line = process.stdout.readline()
                if line:
                    result: dict[str, Any] = json.loads(line)
                    return result
                break
            if process.poll() is not None:
                break
    finally:
        selector.close()
    process.kill()
    process.wait()
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise SimulatorStartError(f"simulator did not become ready (exit {process.returncode}): {tail}")


@dataclass
class _Pending:
    """A spawned simulator whose ready line has not been read yet."""

    node_name: str
    node_ip: str | None
    username: str
    state_dir: Path
    log: Path
    process: subprocess.Popen[bytes]

    def wait(self, timeout: float) -> SimulatorHandle:
        ready = _read_ready_line(self.process, timeout, self.log)
        return SimulatorHandle(
            node_name=self.node_name, node_ip=self.node_ip or ready["host"], host=ready["host"],
            port=int(ready["port"]), cert_sha256=ready["cert_sha256"],
            cert_file=Path(ready["cert_file"]), host_id=ready["host_id"], state_dir=self.state_dir,
            process=self.process, username=self.username,
        )


def start_simulator(
    node_name: str,
    state_dir: Path,
    *,
    password: str,
    ready_timeout: float = 30.0,
    **options: Any,
) -> SimulatorHandle:
    """Start one simulator process and wait for its ready line.

    ``options`` are those of :func:`spawn_simulator`: ``username`` (default ``admin``), ``node_ip``
    (default: the listen host), ``listen`` (default ``127.0.0.1:0``), ``peers_file``, ``knobs``,
    ``ui_port`` (default 5080), ``cert_file`` + ``key_file``, ``verbose``, ``console_port`` and ``kube_port`` (the
    VIP services' ports once a cluster is created here; 0 = the saved ones or free ones). The password travels in
    the child's environment, never on its command line; the child's stderr goes to
    ``<state_dir>/simulator.log``.
    """
    return spawn_simulator(node_name, state_dir, password=password, **options).wait(ready_timeout)


def spawn_simulator(
    node_name: str,
    state_dir: Path,
    *,
    password: str,
    username: str = "admin",
    node_ip: str | None = None,
    listen: str = "127.0.0.1:0",
    peers_file: Path | None = None,
    knobs: Mapping[str, Any] | None = None,
    ui_port: int = 5080,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    verbose: bool = False,
    console_port: int = 0,
    kube_port: int = 0,
) -> _Pending:
    """Start one simulator process without waiting; ``.wait(timeout)`` gives its handle."""
    state_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "palette_provision.testing.localapi",
               "--node-name", node_name, "--listen", listen, "--state-dir", str(state_dir),
               "--username", username, "--ui-port", str(ui_port),
               "--knobs", json.dumps(dict(knobs or {}))]
    if node_ip:
        command += ["--node-ip", node_ip]
    if peers_file is not None:
        command += ["--peers-file", str(peers_file)]
    if cert_file is not None and key_file is not None:
        command += ["--cert-file", str(cert_file), "--key-file", str(key_file)]
    if console_port or kube_port:
        command += ["--console-port", str(console_port), "--kube-port", str(kube_port)]
    if verbose:
        command.append("--verbose")
    env = dict(os.environ)
    env[PASSWORD_ENV] = password
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
    log = state_dir / "simulator.log"
    with open(log, "ab") as log_handle:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log_handle,
                                   stdin=subprocess.DEVNULL, env=env, cwd=state_dir)
    return _Pending(node_name, node_ip, username, state_dir, log, process)


class SimulatedCluster:
    """N simulator processes that know each other through one peers file.

    Node i is named ``node{i+1}`` and reports ``node_ips[i]`` (default ``127.0.0.{11+i}``); all
    listen on ``listen_host`` with a free port. ``nodes[0]`` is the natural leader. ``vip_ports``
    ``(console, kube)`` go to every node: whichever creates the cluster serves its VIP services on them.
    """

    def __init__(self, base_dir: Path, size: int = 3, *, password: str, username: str = "admin",
                 knobs: Mapping[str, Any] | None = None, node_ips: Sequence[str] | None = None,
                 listen_host: str = "127.0.0.1", vip_ports: tuple[int, int] | None = None) -> None:
        self.base_dir = base_dir
        self.size = size
        self.password = password
        self.username = username
        self.knobs = dict(knobs or {})
        self.node_ips = list(node_ips or [f"127.0.0.{11 + i}" for i in range(size)])
        self.listen_host = listen_host
        self.vip_ports = vip_ports or (0, 0)
        self.peers_file = base_dir / "peers.json"
        self.nodes: list[SimulatorHandle] = []

    @property
    def leader(self) -> SimulatorHandle:
        """The first node."""
        return self.nodes[0]

    @property
    def followers(self) -> list[SimulatorHandle]:
        """Every node but the first."""
        return self.nodes[1:]

    def start(self) -> SimulatedCluster:
        """Start every node (in parallel), then write the peers file."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        pending = [
            spawn_simulator(f"node{index + 1}", self.base_dir / f"node{index + 1}",
                            password=self.password, username=self.username,
                            node_ip=self.node_ips[index], listen=f"{self.listen_host}:0",
                            peers_file=self.peers_file, knobs=self.knobs,
                            console_port=self.vip_ports[0], kube_port=self.vip_ports[1])
            for index in range(self.size)
        ]
        try:
            for spawned in pending:
                self.nodes.append(spawned.wait(30.0))
        except BaseException:
            for spawned in pending:
                spawned.process.kill()
                spawned.process.wait()
            raise
        self.write_peers_file()
        return self

    def write_peers_file(self) -> None:
        """(Re)write the peers file from the running nodes (e.g. after a restart)."""
        data = {"nodes": [{"name": n.node_name, "nodeIp": n.node_ip, "url": n.url,
                           "certSha256": n.cert_sha256} for n in self.nodes]}
        tmp = self.peers_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.peers_file)

    def vip_services(self) -> VipEndpoints:
        """The VIP services of the leader's cluster (see :meth:`SimulatorHandle.vip_services`)."""
        return self.leader.vip_services()

    def reset(self, **knobs: Any) -> None:
        """Factory-reset every node (see :meth:`SimulatorHandle.reset`); knobs = defaults + ``knobs``."""
        for node in self.nodes:
            node.reset(**knobs)

    def stop(self) -> None:
        """Stop every node (SIGTERM to all, then wait for each)."""
        for node in self.nodes:
            if node.alive:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> SimulatedCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
