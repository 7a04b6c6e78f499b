"""Plumbing shared by the HTTP simulators (``localapi/``: Palette Local API, ``maas/``: MAAS region), done once here.

The fault-knob store (:class:`KnobBox`), the threaded HTTP(S) server and its request loop (:class:`SimHTTPServer`,
:class:`SimRequestHandler`), the self-signed certificate kept in the state dir, and the process entry (common
arguments, ready line, SIGTERM). What a simulator answers stays in its package: routes, error bodies, authentication,
which faults apply and how. Server side only; the launchers live beside each simulator.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import ipaddress
import json
import os
import re
import signal
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

from palette_provision.media_server._tls import generate_self_signed as make_certificate
from palette_provision.testing.localapi.body import BodyReader
from palette_provision.testing.localapi.errors import ApiError, bad_request

SIM_PREFIX = "/__sim__/"
"""Paths of a simulator's control API (not the simulated product's; never delayed, dropped or failed)."""
BODY_LIMIT = 1 << 20
"""Largest body read whole (a JSON body) or drained after an answer; past it, the connection is closed instead."""
COUNTERS = ("fail_next", "drop_next")
"""The knobs every simulator has that count down: ``{key: n}`` (see :meth:`KnobBox.take`)."""


class KnobSet:
    """Base of a simulator's ``Knobs`` dataclass (not one itself, so the subclass's fields keep their order)."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]
    fail_next: dict[str, int]
    drop_next: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        """Return the knobs as a JSON-ready dict."""
        return dataclasses.asdict(self)


K = TypeVar("K", bound=KnobSet)


class KnobBox(Generic[K]):
    """Thread-safe holder of a simulator's current knobs; readers get a snapshot copy.

    A value is checked against the type of the knob's default: a bool takes a bool, a float a non-negative number (an
    int is accepted), an int an int, a list a list of strings, a str a string; ``fail_next`` / ``drop_next`` map keys
    to non-negative counts. A subclass adds its own rules in :meth:`check`.
    """

    nonnegative_ints: ClassVar[bool] = False
    """Whether int knobs refuse negative values."""

    def __init__(self, defaults: Callable[[], K], initial: Mapping[str, Any] | None = None) -> None:
        self._defaults = defaults
        self._lock = threading.Lock()
        self._knobs = defaults()
        if initial:
            self.update(initial)

    def check(self, name: str, value: Any) -> None:
        """Refuse (``ValueError``) a value of the right type that knob ``name`` still does not take."""

    def snapshot(self) -> K:
        """Return a copy of the current knobs."""
        with self._lock:
            knobs = self._knobs
            # The counters (and lists) change in place: a snapshot must not share them.
            copies = {name: value.copy() for name, value in vars(knobs).items() if isinstance(value, (dict, list))}
            return dataclasses.replace(knobs, **copies)

    def update(self, changes: Mapping[str, Any], replace: bool = False) -> K:
        """Apply ``changes`` (unknown names or wrong types raise ``ValueError``; nothing is applied then).

        ``fail_next`` / ``drop_next`` merge per key (a count of 0 removes the key). With ``replace``, every knob not in
        ``changes`` returns to its default first.
        """
        names = {f.name for f in dataclasses.fields(self._knobs)}
        with self._lock:
            staged: dict[str, Any] = {}
            for name, value in changes.items():
                if name not in names:
                    raise ValueError(f"unknown knob {name!r}; known: {sorted(names)}")
                staged[name] = self._coerce(name, getattr(self._knobs, name), value)
            if replace:
                self._knobs = self._defaults()
            for name, value in staged.items():
                if name in COUNTERS:
                    counters: dict[str, int] = getattr(self._knobs, name)
                    for key, count in value.items():
                        if count == 0:
                            counters.pop(key, None)
                        else:
                            counters[key] = count
                else:
                    setattr(self._knobs, name, value)
        return self.snapshot()

    def _coerce(self, name: str, current: object, value: object) -> Any:
        """Check ``value`` against the type of the knob's current value; the value to store."""
        if name in COUNTERS:
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
                for k, v in value.items()
            ):
                raise ValueError(f"knob {name!r} must map path prefixes to non-negative integers")
            return dict(value)
        coerced: object = value
        if isinstance(current, list):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"knob {name!r} must be a list of strings")
            coerced = list(value)
        elif isinstance(current, bool):
            if not isinstance(value, bool):
                raise ValueError(f"knob {name!r} must be a boolean")
        elif isinstance(current, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"knob {name!r} must be a non-negative number")
            coerced = float(value)
        elif isinstance(current, int):
            if isinstance(value, bool) or not isinstance(value, int) or (self.nonnegative_ints and value < 0):
                kind = "a non-negative integer" if self.nonnegative_ints else "an integer"
                raise ValueError(f"knob {name!r} must be {kind}")
        elif not isinstance(value, str):
            raise ValueError(f"knob {name!r} must be a string")
        self.check(name, coerced)
        return coerced

    def take(self, kind: str, path: str, method: str = "") -> bool:
        """Consume one ``fail_next`` / ``drop_next`` count matching the request; True if one applied.

        A key is a path prefix (any method) or ``"METHOD /path/prefix"`` (that method only), so a fault can hit one
        call without hitting the others that share its path prefix. ``path`` is what the simulator matches keys
        against (the MAAS simulator appends the request's ``?op=``). The longest matching key wins.
        """
        with self._lock:
            counters: dict[str, int] = getattr(self._knobs, kind)
            for key in sorted(counters, key=len, reverse=True):
                want_method, _, prefix = key.rpartition(" ")
                if want_method and want_method.upper() != method.upper():
                    continue
                if path.startswith(prefix):
                    counters[key] -= 1
                    if counters[key] <= 0:
                        del counters[key]
                    return True
        return False


def generate_self_signed(cert_path: Path, key_path: Path, common_name: str, names: list[str]) -> None:
    """Write a fresh P-256 key (mode 0600) and a 1-year self-signed certificate (SANs from ``names``: IP SANs for
    what parses as an address, DNS SANs otherwise), through the project's one certificate maker."""
    make_certificate(cert_path, key_path, names, days=365, reuse=False, common_name=common_name, key_type="ec")


def cert_sha256(cert_path: Path) -> str:
    """Return the lowercase hex SHA-256 of the certificate's DER encoding."""
    der = ssl.PEM_cert_to_DER_cert(cert_path.read_text())
    return hashlib.sha256(der).hexdigest()


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """Build the server-side TLS context (TLS 1.2+)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    return context


def certificate_pair(state_dir: Path, common_name: str, listen_host: str, *, extra_names: Sequence[str] = (),
                     cert_file: Path | None = None, key_file: Path | None = None) -> tuple[Path, Path]:
    """Return (cert, key) paths: the given pair, else the state dir's ``tls.crt`` / ``tls.key`` (made on first start).

    The pair is kept across restarts, as an appliance or a region keeps its certificate, so a client that pinned the
    fingerprint still connects after a simulator restart. SANs: ``common_name``, localhost, 127.0.0.1, ::1,
    ``extra_names``, and the listen host unless it is the unspecified address.
    """
    if cert_file is not None and key_file is not None:
        return cert_file, key_file
    cert, key = state_dir / "tls.crt", state_dir / "tls.key"
    if cert.exists() and key.exists():
        return cert, key
    names = [common_name, "localhost", "127.0.0.1", "::1", *extra_names]
    try:
        if not ipaddress.ip_address(listen_host).is_unspecified:
            names.append(listen_host)
    except ValueError:
        names.append(listen_host)
    generate_self_signed(cert, key, common_name, names)
    return cert, key


def parse_listen(listen: str) -> tuple[str, int]:
    """Parse ``host:port`` or ``[v6]:port`` (port 0 = any free port)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise ValueError(f"--listen must be HOST:PORT, got {listen!r}")
    return host, int(port)


def route_pattern(template: str) -> re.Pattern[str]:
    """Compile a route template (``{name}`` matches one path segment, as group ``name``) for ``fullmatch``."""
    return re.compile(re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)))


class DropConnection(Exception):
    """Raised by a handler (or a fault knob) to close the connection without answering."""


class SimHTTPServer(ThreadingHTTPServer):
    """Threaded HTTP server; with a TLS ``context`` (which may be replaced while serving), HTTPS, the handshake
    running in each connection's thread. Open connections are tracked so :meth:`drop_connections` can cut them."""

    daemon_threads = True
    allow_reuse_address = True
    accept_timeout: ClassVar[float] = 60.0
    """Socket timeout from accept on (the TLS handshake included), until the handler sets its ``timeout``, if any."""

    def __init__(self, address: tuple[str, int], handler: type[SimRequestHandler[Any]],
                 context: ssl.SSLContext | None, verbose: bool) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)
        self.handler, self.context, self.verbose = handler, context, verbose
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Set the accepted socket up, wrap it in TLS (when configured), then serve it."""
        try:
            request.settimeout(self.accept_timeout)
            # Without this, a response written in two pieces waits ~40 ms for a delayed ACK.
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # The TLS socket takes over the accepted socket's descriptor.
            conn = request if self.context is None else self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        with self._open_lock:
            self._open.add(conn)
        try:
            self.handler(conn, client_address, self)
        finally:
            with self._open_lock:
                self._open.discard(conn)
            if conn is not request:  # a plain socket is shut down and closed by the server (shutdown_request)
                with contextlib.suppress(OSError):
                    conn.close()

    def drop_connections(self) -> None:
        """Cut every open connection (kept-alive ones included), as a host going away or a new certificate would."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


R = TypeVar("R")


class SimRequestHandler(BaseHTTPRequestHandler, Generic[R]):
    """One connection's request loop: body framing, the simulator's answer, draining, sending.

    A simulator's handler implements :meth:`answer` (routing, faults, authentication; its own response type ``R``),
    :meth:`error_answer` (any exception, among them the ``ApiError`` of a malformed body) and :meth:`send` (encoding,
    then :meth:`write_answer`). :class:`DropConnection` closes the connection without an answer.
    """

    protocol_version = "HTTP/1.1"
    server: SimHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Log to stderr only in verbose mode."""
        if self.server.verbose:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def do_GET(self) -> None:
        """Dispatch every method the same way."""
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def answer(self, path: str, query: str, body: BodyReader) -> R:
        """Answer ``self.command`` on ``path`` (``query``: the raw query string; ``body``: not read yet)."""
        raise NotImplementedError

    def error_answer(self, exc: Exception) -> R:
        """The answer to an exception raised while answering (called in the ``except`` block)."""
        raise NotImplementedError

    def send(self, response: R) -> None:
        """Encode ``response``, then :meth:`write_answer`."""
        raise NotImplementedError

    def _body_reader(self) -> BodyReader:
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        header = self.headers.get("Content-Length")
        try:
            length = int(header) if header is not None else None
        except ValueError:
            length = -1
        if length is not None and length < 0:
            self.close_connection = True
            raise bad_request("invalid Content-Length header")
        return BodyReader(self.rfile, length, chunked)

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        body = BodyReader(self.rfile, 0, False)
        try:
            body = self._body_reader()
            response = self.answer(parts.path, parts.query, body)
        except DropConnection:
            self.close_connection = True
            return
        except Exception as exc:
            response = self.error_answer(exc)
        # What the handler left unread precedes the next request on this connection: read it, or close.
        try:
            if not body.exhausted and not body.drain(BODY_LIMIT):
                self.close_connection = True
        except (OSError, ApiError):
            self.close_connection = True
        self.send(response)

    def write_answer(self, status: int, headers: list[tuple[str, str]], data: bytes, content_type: str | None) -> None:
        """Send status, headers (``Content-Type`` unless ``None``, ``Content-Length``) and ``data``."""
        try:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            if content_type is not None:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            # Headers and body leave in one write (one TLS record for small answers).
            self._headers_buffer.append(b"\r\n" + data)  # type: ignore[attr-defined]
            self.flush_headers()
        except OSError:
            self.close_connection = True


class Served(Protocol):
    """A simulator whose server is bound, not yet serving (its ``Simulator``): what :func:`serve` runs."""

    def ready_line(self, pid: int) -> dict[str, Any]: ...
    def serve_forever(self) -> None: ...
    def shutdown(self) -> None: ...
    def close(self) -> None: ...


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments every simulator takes: where to listen, its state dir, knobs, certificate, access log."""
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to bind (port 0 = any)")
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--knobs", default="{}", help="JSON object of knobs")
    parser.add_argument("--cert-file", type=Path)
    parser.add_argument("--key-file", type=Path)
    parser.add_argument("--verbose", action="store_true", help="access log on stderr")


def server_arguments_error(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments of :func:`add_server_arguments`, or ``None``."""
    if (args.cert_file is None) != (args.key_file is None):
        return "--cert-file and --key-file go together"
    return None


def exit_error(message: str) -> int:
    """Print ``error: <message>`` on stderr; return the exit code of a bad command line or configuration (2)."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def serve(simulator: Served) -> int:
    """Print the ready line (one JSON object, one line), serve until SIGTERM/SIGINT, then close; the exit code (0)."""

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever() to return, and the handler runs in the serving thread.
        threading.Thread(target=simulator.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stdout.write(json.dumps(simulator.ready_line(os.getpid())) + "\n")
    sys.stdout.flush()
    simulator.serve_forever()
    simulator.close()
    return 0
