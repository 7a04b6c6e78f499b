"""The services a formed cluster answers at its VIP, run by the leader's simulator process itself.

Two extra HTTPS listeners on the simulator's listen host, up while this node holds a cluster (from create until its
delete completes):

* ``console``: the system console's API (``console.py``, ``registries.py``), certificate self-signed for the VIP;
  knob ``console_down`` closes the listener (connections refused, open ones cut), ``console_cert_changed`` serves a
  second certificate (open connections cut so the next request handshakes again).
* ``kube``: the kube-apiserver stand-in (``kubeapi.py``), certificate from the cluster's CA, client certificate
  required.

Ports: ``--console-port`` / ``--kube-port`` when given (the lab pre-allocates them to set its DNAT up front), else the
ones saved in ``state.json`` (``vipPorts``: a restart or a new cluster keeps them), else free ones; a port that cannot
be bound again is replaced by a free one and the change noted in ``/__sim__/state`` (``vip.notes``).
The listeners follow the node's state: a hook after create, delete, knob changes and reset, plus a 0.25 s poll (a
delete completes with time).
"""

from __future__ import annotations

import base64
import ssl
import sys
import threading
import time
from collections import Counter
from typing import Any

from palette_provision.testing._simhttp import server_context

from . import cluster, console, kubeapi, registries, vipcerts
from .node import Node
from .server import Router, SimHTTPServer, v1_error_body

NAMES = ("console", "kube")
POLL_S = 0.25


def prepare_cluster(node: Node, record: dict[str, Any]) -> None:
    """Give a new cluster record its VIP material (lock held): certificates, kubeconfig PEMs, a fresh console."""
    unspecified = ("0.0.0.0", "::")  # noqa: S104 - names left out of a certificate, not bound
    names = [h for h in (node.config.listen_host, "127.0.0.1", "localhost") if h and h not in unspecified]
    files = vipcerts.ensure(node.config.state_dir / "vip" / record["uid"], cluster_name=record["name"],
                            vip=record["vip"], extra_names=names)
    cert, key = files.kube_admin
    record["kube"] = {"caPem": files.kube_ca.read_text(), "clientCertPem": cert.read_text(),
                      "clientKeyPem": key.read_text()}
    # The secret the kubeconfig carries (its client-key-data): what the secret canary tests search every channel for.
    record["kubeToken"] = base64.b64encode(key.read_bytes()).decode()
    record["console"] = console.fresh_state(record)
    record["console"]["registries"].append(registries.internal_registry(record))


def console_router() -> Router:
    """Routes of the system console's API."""
    router = Router()
    console.register(router)
    registries.register(router)
    return router


def kube_router() -> Router:
    """Routes of the kube-apiserver stand-in."""
    router = Router()
    kubeapi.register(router)
    return router


def kube_context(files: vipcerts.VipCertFiles) -> ssl.SSLContext:
    """Server context of the kube stand-in: its certificate, and client certificates required (the cluster CA)."""
    context = server_context(*files.kube_server)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=str(files.kube_ca))
    return context


class VipServices:
    """The VIP listeners of one simulated node; :meth:`reconcile` makes them match the node's state and knobs."""

    def __init__(self, node: Node, host: str, *, console_port: int = 0, kube_port: int = 0,
                 verbose: bool = False) -> None:
        self.node, self.host, self.verbose = node, host, verbose
        self.preferred = {"console": console_port, "kube": kube_port}
        self.requests: dict[str, Counter[str]] = {name: Counter() for name in NAMES}
        self.notes: list[str] = []
        self._servers: dict[str, SimHTTPServer] = {}
        self._cluster_uid: str | None = None
        self._console_cert = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="vip-services", daemon=True)
        node.hooks.append(self.reconcile)
        node.reporters["vip"] = self.report

    def start(self) -> None:
        """Bring the listeners in line with the state (a restarted leader serves its cluster again), then poll."""
        self.reconcile()
        self._poller.start()

    def close(self) -> None:
        """Stop polling and close both listeners."""
        self._stop.set()
        with self._lock:
            for name in list(self._servers):
                self._close(name)

    def _poll(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.reconcile()
            except Exception as exc:  # keep polling; the next change may succeed
                sys.stderr.write(f"vip services: {type(exc).__name__}: {exc}\n")

    def _files(self, uid: str) -> vipcerts.VipCertFiles:
        return vipcerts.VipCertFiles(self.node.config.state_dir / "vip" / uid)

    def reconcile(self) -> None:
        """Open, close or re-certify the listeners to match the cluster and the knobs."""
        if self._stop.is_set():
            return
        with self._lock:
            now = time.time()
            with self.node.lock:
                record = cluster.current(self.node, now)
                if record is not None and "kube" not in record:  # a cluster from an older simulator's state
                    prepare_cluster(self.node, record)
                    self.node.save()
                uid = None if record is None else str(record["uid"])
            if uid != self._cluster_uid:
                for name in list(self._servers):
                    self._close(name)
                self._cluster_uid, self._console_cert = uid, ""
                for counter in self.requests.values():  # counts are per cluster
                    counter.clear()
            if uid is None:
                return
            files, knobs = self._files(uid), self.node.knobs.snapshot()
            if "kube" not in self._servers:
                self._open("kube", kube_router(), kube_context(files), kubeapi.status_body)
            if knobs.console_down:
                self._close("console")
                return
            which = "alt" if knobs.console_cert_changed else "main"
            if which == self._console_cert and "console" in self._servers:
                return
            context = server_context(*(files.console_alt if which == "alt" else files.console))
            if "console" not in self._servers:
                self._open("console", console_router(), context, v1_error_body)
            else:
                self._servers["console"].context = context
                self._servers["console"].drop_connections()
            self._console_cert = which

    def _open(self, name: str, router: Router, context: ssl.SSLContext, error_body: Any) -> None:
        with self.node.lock:
            saved = int(self.node.state.get("vipPorts", {}).get(name, 0))
        port = self.preferred[name] or saved
        try:
            server = SimHTTPServer((self.host, port), self.node, router, context, self.verbose, faults=False,
                                   error_body=error_body)
        except OSError as exc:
            if port == 0:
                raise
            server = SimHTTPServer((self.host, 0), self.node, router, context, self.verbose, faults=False,
                                   error_body=error_body)
            self.notes.append(f"{name}: port {port} unavailable ({exc.strerror}); now {server.server_address[1]}")
        server.requests = self.requests[name]
        actual = int(server.server_address[1])
        with self.node.lock:
            self.node.state.setdefault("vipPorts", {})[name] = actual
            self.node.save()
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"vip-{name}",
                         daemon=True).start()
        self._servers[name] = server

    def _close(self, name: str) -> None:
        server = self._servers.pop(name, None)
        if server is not None:
            server.shutdown()
            server.drop_connections()
            server.server_close()
            if name == "console":
                self._console_cert = ""

    def report(self) -> dict[str, Any]:
        """``vip`` and ``console`` of ``/__sim__/state``: ports, certificates, console state, request counts."""
        with self.node.lock:
            record = cluster.current(self.node, time.time())
            ports = dict(self.node.state.get("vipPorts", {}))
            console_record = None if record is None else record.get("console")
            vip = None if record is None else record["vip"]
            view = {**(console.summary(console_record) or {}), "registries": registries.state_view(console_record)}
        with self._lock:
            up = {name: name in self._servers for name in NAMES}
            uid, served = self._cluster_uid, self._console_cert
        info: dict[str, Any] = {
            "host": self.host, "vip": vip, "consoleUp": up["console"], "kubeUp": up["kube"],
            "consolePort": ports.get("console") or self.preferred["console"] or None,
            "kubePort": ports.get("kube") or self.preferred["kube"] or None,
            "consoleCert": served or None, "notes": list(self.notes),
            "requests": {name: dict(counter) for name, counter in self.requests.items()},
        }
        if uid is not None:
            files = self._files(uid)
            prints = files.fingerprints()
            served_print = prints["consoleAlt" if served == "alt" else "console"] if up["console"] else None
            info.update(
                consoleCertSha256=prints["console"], consoleAltCertSha256=prints["consoleAlt"],
                consoleServedCertSha256=served_print,
                consoleCertFile=str(files.console[0]), consoleAltCertFile=str(files.console_alt[0]),
                kubeCaSha256=prints["kubeCa"], kubeCaFile=str(files.kube_ca), kubeCaPem=files.kube_ca.read_text(),
                kubeServerCertSha256=prints["kubeServer"],
            )
        return {"vip": info, "console": view if console_record is not None else None}
