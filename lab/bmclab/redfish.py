"""Redfish BMCs for the lab: sushy-tools' emulator (fake driver) whose systems really boot in QEMU.

One ``sushy-emulator`` process on 127.0.0.1 serves every node as a system ``/redfish/v1/Systems/<uuid>`` with the
virtual media slots ``Cd`` and ``Floppy`` (removable). Its change notifications go to a
:class:`~bmclab.notify.NotificationListener`, which runs each system as a pplab QEMU guest: power on boots the very
image the emulator downloaded through ``InsertMedia``, the guest's own power-off makes the system read Off.

::

    with RedfishLab([RedfishNode("rf-1", "52:54:00:5e:01:31")], username="admin", password="pw") as lab:
        bmc = lab.bmc("rf-1")          # url, system_id, username, password, fingerprint, cert_path, disk
        ...                            # drive bmc.url with sushy / the provider (pin lab.fingerprint)
        lab.events(bmc.system_id)      # what the machine did (boots, media, power changes)

The emulator runs through a small wrapper (``python -c``) that changes three things, to make tests deterministic:

* the fake driver's power-change delay (``random.randint(1, 11)`` s) is pinned to ``power_delay_s`` (None keeps
  the random delay);
* requests are served one at a time (a lock around the WSGI app, inside the basic-auth check, taken once the request's
  body has been read). The fake driver reads, changes and writes a whole system record per request, so two
  concurrent requests lose one's change, and each sends its notification from its own thread, so they arrive out of
  order. Serialised, notifications arrive in write order;
* each connection's TLS handshake runs in that connection's thread, not in werkzeug's accept loop, where one slow
  handshake (a client on a lossy link) held up every other connection.

Everything else is the stock emulator: basic auth from an htpasswd file (bcrypt, cost 4 here: it checks bcrypt on
every request), no SessionService (use ``sushy.auth.BasicAuth``), HTTPS with a self-signed certificate generated
here (or HTTP), the boot override always reported back as ``Continuous`` (a ``Once`` override is not reverted after
the boot), ``InsertMedia`` downloading the image into this lab's ``media/`` directory during the request (an
unreachable or 404 URL: HTTP 400), ``EjectMedia`` deleting the download.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.util
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import bcrypt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pplab._cmd import LabError, kill_group
from pplab.disk import create_disk

from bmclab.notify import BmcEvent, EmulatorApi, NotificationListener, SystemNode

__all__ = ["BmcEvent", "EmulatorRequest", "RedfishBmc", "RedfishLab", "RedfishNode", "generate_certificate"]

log = logging.getLogger("bmclab.redfish")

_UUID_NAMESPACE = uuidlib.UUID("6f1c2f1e-5b0c-4c59-9d61-8e5a3c0b7a11")

# Runs sushy-emulator with the fake driver's power delay pinned and requests serialised (see the module doc).
# argv: config file, delay seconds or "random", the faults file (RedfishLab.fail_next_requests).
_EMULATOR_MAIN = r"""
import io, json, os, ssl, sys, threading
config, delay, faults_path = sys.argv[1], sys.argv[2], sys.argv[3]

# The TLS handshake in each connection's own thread, not in the accept loop: werkzeug wraps the listening socket,
# so every accepted connection shook hands before the next could be accepted, and one client on a lossy link held
# every other client (the lab's own ForceOff included) until its ClientHello got through.
_wrap_socket = ssl.SSLContext.wrap_socket

def _handshake_later(self, sock, server_side=False, do_handshake_on_connect=True, *args, **kwargs):
    return _wrap_socket(self, sock, server_side, do_handshake_on_connect and not server_side, *args, **kwargs)

ssl.SSLContext.wrap_socket = _handshake_later
if delay != "random":
    from sushy_tools.emulator.resources.systems import fakedriver

    class _Pinned:
        @staticmethod
        def randint(a, b):
            return int(delay)

    fakedriver.random = _Pinned
from sushy_tools.emulator import main as emulator

_lock = threading.Lock()
_inner = emulator.app.wsgi_app

def _injected_fault(environ):
    # A status to answer instead of the emulator, while faults.json asks for one for this method. Never for the lab's
    # own listener (urllib): only the client under test sees a BMC that answers 5xx.
    if environ.get("HTTP_USER_AGENT", "").startswith("Python-urllib"):
        return None
    try:
        with open(faults_path) as f:
            faults = json.load(f)
    except FileNotFoundError:
        return None
    method = environ["REQUEST_METHOD"]
    if faults.get(method, 0) <= 0:
        return None
    faults[method] -= 1
    with open(faults_path + ".tmp", "w") as f:
        json.dump(faults, f)
    os.replace(faults_path + ".tmp", faults_path)
    return int(faults.get("status", 503))

def _serialised(environ, start_response):
    # The body is read before the lock is taken: a client on a slow or lossy link must not hold every other
    # client (the lab's own ForceOff included) while its request trickles in.
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length > 0:
        environ["wsgi.input"] = io.BytesIO(environ["wsgi.input"].read(length))
    with _lock:
        status = _injected_fault(environ)
        if status is not None:
            body = json.dumps({"error": {"code": "Base.1.0.GeneralError", "message": "injected fault"}}).encode()
            start_response(f"{status} Injected", [("Content-Type", "application/json"),
                                                  ("Content-Length", str(len(body)))])
            return [body]
        return _inner(environ, start_response)

# Wrapped before main() runs configure(), so the basic-auth middleware ends up outside the lock.
emulator.app.wsgi_app = _serialised
sys.argv = ["sushy-emulator", "--config", config]
sys.exit(emulator.main())
"""


@dataclass(frozen=True)
class RedfishNode:
    """A machine behind the Redfish BMC."""

    name: str
    """The system's name (also the guest's, ``rf-<name>``)."""
    mac: str
    """Its NIC's MAC: the guest's e1000 on the lab LAN; unique among running guests."""
    address: str = ""
    """The address the system reports for that NIC (the fake driver's ``nics[].ip``); informational."""
    uuid: str = ""
    """The system id; default: derived from the name (stable across runs)."""
    disk_size: str = "300G"
    """Size of its sparse install disk."""

    @property
    def system_id(self) -> str:
        """The id under ``/redfish/v1/Systems/``."""
        return self.uuid or str(uuidlib.uuid5(_UUID_NAMESPACE, self.name))


@dataclass(frozen=True)
class EmulatorRequest:
    """One request the emulator answered, as its access log shows it."""

    client: str
    method: str
    path: str
    status: int


# werkzeug's access log line; it colours some request lines (ANSI escapes around the quoted part).
_ACCESS_LINE = re.compile(r'^(\S+) - - \[[^\]]*\] "(?:\x1b\[[0-9;]*m)*(\w+) (\S+) HTTP/[0-9.]+(?:\x1b\[0m)?" (\d{3}) ')


@dataclass(frozen=True)
class RedfishBmc:
    """What a client (the provider) needs to drive one node's BMC, plus the node's disk for assertions."""

    name: str
    url: str
    """The emulator's base URL (``https://127.0.0.1:<port>``)."""
    system_id: str
    username: str
    password: str
    fingerprint: str
    """SHA-256 of the HTTPS certificate (lower-case hex; empty over HTTP)."""
    cert_path: Path | None
    """The self-signed certificate (PEM), for clients that verify against a file; None over HTTP."""
    mac: str
    disk: Path

    @property
    def system_path(self) -> str:
        """``/redfish/v1/Systems/<id>``."""
        return f"/redfish/v1/Systems/{self.system_id}"

    def next_boot(self) -> str | None:
        """What the system's boot override says its next boot uses (``cd``, ``disk``, ``pxe``), or ``None`` with no
        override, as the BMC answers it (the contract suite reads a provider's boot device back with this). The
        emulator reports every override as ``Continuous``, a one-time one included."""
        boot = EmulatorApi(self.url, self.username, self.password, self.cert_path).get_system(self.system_id)
        override = boot.get("Boot") or {}
        if override.get("BootSourceOverrideEnabled") == "Disabled":
            return None
        return {"Cd": "cd", "Hdd": "disk", "Pxe": "pxe"}.get(str(override.get("BootSourceOverrideTarget")))


def generate_certificate(cert_path: Path, key_path: Path, *, host: str = "127.0.0.1", days: int = 30) -> str:
    """Write a self-signed certificate for ``host`` (plus ``localhost``) and its key; return its SHA-256 (hex)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bmclab redfish emulator")])
    now = datetime.datetime.now(datetime.timezone.utc)
    try:
        san: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(host))]
    except ValueError:
        san = [x509.DNSName(host)]
    san.append(x509.DNSName("localhost"))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedfishLab:
    """sushy-tools' Redfish emulator for ``nodes``, with their machines run in QEMU; a context manager.

    ``workdir`` (default: a new temporary directory, removed by :meth:`stop`) holds ``emulator.conf``,
    ``htpasswd``, ``state/`` (the emulator's), ``media/`` (its downloads: its TMPDIR), ``tls/`` and one directory
    per node (``nodes/<name>/disk.raw``, console logs ``console-<n>-cd|disk.log``).
    """

    def __init__(
        self,
        nodes: Sequence[RedfishNode],
        *,
        username: str = "admin",
        password: str | None = None,
        https: bool = True,
        power_delay_s: int | None = 1,
        install_delay_s: int = 3,
        memory_mb: int = 384,
        workdir: Path | None = None,
        start_timeout_s: float = 30,
        listen_host: str = "127.0.0.1",
    ) -> None:
        """Describe the lab; nothing runs until :meth:`start` / ``__enter__``.

        ``password`` defaults to a random one (:attr:`password`). ``power_delay_s`` pins the seconds before a power
        change applies (None: the emulator's random 1-11 s).
        """
        if not nodes:
            raise LabError("RedfishLab needs at least one node")
        names = [n.name for n in nodes]
        if len(set(names)) != len(names) or len({n.system_id for n in nodes}) != len(nodes):
            raise LabError(f"node names and ids must be unique: {names}")
        if len({n.mac.lower() for n in nodes}) != len(nodes):
            raise LabError("node MACs must be unique (they name the guests' taps)")
        if ":" in username:
            raise LabError("a user name cannot contain ':' (htpasswd)")
        self.nodes = list(nodes)
        self.username = username
        self.password = password if password is not None else secrets.token_urlsafe(12)
        self.https = https
        self.power_delay_s = power_delay_s
        self.install_delay_s = install_delay_s
        self.memory_mb = memory_mb
        self.start_timeout_s = start_timeout_s
        self.listen_host = listen_host
        """Where the emulator listens: 127.0.0.1, or also the lab's host address (``0.0.0.0``) for a relay from the
        LAN namespace (:mod:`bmclab.lossy`). :attr:`url` is always the loopback one."""
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="bmclab-redfish-"))
        self.port = 0
        self.fingerprint = ""
        self.cert_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._listener: NotificationListener | None = None

    # ------------------------------------------------------------------------------------------------ facts

    @property
    def url(self) -> str:
        """The emulator's base URL (after :meth:`start`)."""
        return f"{'https' if self.https else 'http'}://127.0.0.1:{self.port}"

    @property
    def system_ids(self) -> list[str]:
        """The systems' ids, in node order."""
        return [n.system_id for n in self.nodes]

    @property
    def log_path(self) -> Path:
        """The emulator's output."""
        return self.workdir / "emulator.log"

    def requests(self) -> list[EmulatorRequest]:
        """Every request the emulator answered so far, in order (the lab's own included: they come from 127.0.0.1
        too, on power changes)."""
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            match = _ACCESS_LINE.match(line)
            if match:
                found.append(EmulatorRequest(match[1], match[2], match[3], int(match[4])))
        return found

    def node_dir(self, name: str) -> Path:
        """Per-node directory (disk, console logs)."""
        return self.workdir / "nodes" / name

    def disk(self, name_or_id: str) -> Path:
        """A node's install disk (by name or system id)."""
        return self.node_dir(self._node(name_or_id).name) / "disk.raw"

    def bmc(self, name_or_id: str) -> RedfishBmc:
        """The BMC facts of one node (by name or system id)."""
        node = self._node(name_or_id)
        return RedfishBmc(
            name=node.name, url=self.url, system_id=node.system_id, username=self.username, password=self.password,
            fingerprint=self.fingerprint, cert_path=self.cert_path, mac=node.mac.lower(), disk=self.disk(node.name),
        )  # fmt: skip

    @property
    def bmcs(self) -> list[RedfishBmc]:
        """Every node's BMC facts, in node order."""
        return [self.bmc(n.name) for n in self.nodes]

    @property
    def listener(self) -> NotificationListener:
        """The notification listener (running after :meth:`start`)."""
        if self._listener is None:
            raise LabError("RedfishLab not started")
        return self._listener

    def events(self, system: str | None = None, kind: str | None = None) -> list[BmcEvent]:
        """What the machines did (boots with which media, power changes...); see :class:`~bmclab.notify.BmcEvent`."""
        return self.listener.events(self._node(system).system_id if system else None, kind)

    @property
    def faults_path(self) -> Path:
        """The emulator's fault file (:meth:`fail_next_requests`)."""
        return self.workdir / "faults.json"

    def fail_next_requests(self, method: str, count: int, status: int = 503) -> None:
        """Answer the next ``count`` ``method`` requests of clients (not the lab's own) with ``status``, a Redfish
        error body, instead of the emulator's answer: a BMC whose service is busy for a moment."""
        tmp = self.faults_path.with_suffix(".new")
        tmp.write_text(json.dumps({method: count, "status": status}))
        tmp.replace(self.faults_path)

    def clear_faults(self) -> None:
        """Forget every failure :meth:`fail_next_requests` asked for that has not come yet."""
        self.faults_path.unlink(missing_ok=True)

    def requests_left_to_fail(self, method: str) -> int:
        """How many of the failures :meth:`fail_next_requests` asked for are still to come."""
        try:
            return int(json.loads(self.faults_path.read_text()).get(method, 0))
        except FileNotFoundError:
            return 0

    def _node(self, name_or_id: str) -> RedfishNode:
        for n in self.nodes:
            if name_or_id in (n.name, n.system_id):
                return n
        raise LabError(f"no Redfish node {name_or_id!r}")

    # ------------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> RedfishLab:
        """Write the configuration, start the listener, then the emulator; wait until it answers."""
        if importlib.util.find_spec("sushy_tools") is None:
            raise LabError(f"sushy-tools is not installed for {sys.executable} (pip install -e ./lab)")
        self.stop_emulator()
        if self._listener is not None:
            self._listener.stop()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "media").mkdir(exist_ok=True)
        self.faults_path.unlink(missing_ok=True)
        state = self.workdir / "state"
        shutil.rmtree(state, ignore_errors=True)  # a previous run's records would override the configured systems
        state.mkdir()
        system_nodes = []
        for n in self.nodes:
            d = self.node_dir(n.name)
            d.mkdir(parents=True, exist_ok=True)
            disk = d / "disk.raw"
            if not disk.exists():
                create_disk(disk, n.disk_size)
            system_nodes.append(SystemNode(uuid=n.system_id, name=n.name, mac=n.mac.lower(), disk=disk, dir=d))

        htpasswd = self.workdir / "htpasswd"
        # Cost 4 (the minimum): the emulator checks bcrypt on every request.
        digest = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=4)).decode()
        htpasswd.write_text(f"{self.username}:{digest}\n")
        htpasswd.chmod(0o600)

        settings: dict[str, object] = {}
        if self.https:
            tls = self.workdir / "tls"
            tls.mkdir(exist_ok=True)
            self.cert_path, key = tls / "cert.pem", tls / "key.pem"
            self.fingerprint = generate_certificate(self.cert_path, key)
            settings |= {"SUSHY_EMULATOR_SSL_CERT": str(self.cert_path), "SUSHY_EMULATOR_SSL_KEY": str(key)}

        self._listener = NotificationListener(
            system_nodes, install_delay_s=self.install_delay_s, memory_mb=self.memory_mb
        ).start()
        self.port = _free_port()
        settings |= {
            "SUSHY_EMULATOR_LISTEN_IP": self.listen_host,
            "SUSHY_EMULATOR_LISTEN_PORT": self.port,
            "SUSHY_EMULATOR_AUTH_FILE": str(htpasswd),
            "SUSHY_EMULATOR_STATE_DIR": str(state),
            "SUSHY_EMULATOR_FAKE_DRIVER": True,
            "SUSHY_EMULATOR_FAKE_SYSTEMS": [
                {
                    "uuid": n.system_id,
                    "name": n.name,
                    "power_state": "Off",
                    "nics": [{"mac": n.mac.lower(), "ip": n.address}],
                    "external_notifier": True,
                }
                for n in self.nodes
            ],
            "EXTERNAL_NOTIFICATION_URL": self._listener.url,
        }
        config = self.workdir / "emulator.conf"
        config.write_text("".join(f"{k} = {v!r}\n" for k, v in settings.items()))
        self._listener.set_emulator(EmulatorApi(self.url, self.username, self.password, self.cert_path))

        delay = "random" if self.power_delay_s is None else str(int(self.power_delay_s))
        # TMPDIR: where InsertMedia downloads. No SUSHY_EMULATOR_CONFIG: it would wrap basic auth around the app twice.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUSHY_EMULATOR")}
        env |= {"TMPDIR": str(self.workdir / "media"), "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("wb") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _EMULATOR_MAIN, str(config), delay, str(self.faults_path)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )  # fmt: skip
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info("redfish_lab_up url=%s systems=%s", self.url, self.system_ids)
        return self

    def _wait_ready(self) -> None:
        context = ssl.create_default_context(cafile=str(self.cert_path)) if self.cert_path else None
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise LabError(f"sushy-emulator exited ({self._proc.returncode}): {self._log_tail()}")
            try:
                # self.url is always http(s)://127.0.0.1:<port>.
                with urllib.request.urlopen(self.url + "/redfish/v1/", timeout=2, context=context) as resp:  # noqa: S310
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise LabError(f"sushy-emulator not answering on {self.url} after {self.start_timeout_s} s: "
                               f"{self._log_tail()}")  # fmt: skip
            time.sleep(0.1)

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def stop_emulator(self) -> None:
        """Stop the emulator process only."""
        kill_group(self._proc)
        self._proc = None

    def stop(self) -> None:
        """Stop the emulator, the listener and every guest; delete downloaded images (and ``workdir`` if it was
        created here). Idempotent."""
        self.stop_emulator()
        if self._listener is not None:
            self._listener.stop()
        shutil.rmtree(self.workdir / "media", ignore_errors=True)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RedfishLab:
        """Start the lab."""
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the lab."""
        self.stop()
