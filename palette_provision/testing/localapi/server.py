"""HTTP plumbing: TLS server, request/response objects, routing, auth and fault injection."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .auth import Claims, token_from_request
from .body import BodyReader
from .errors import ApiError, bad_request, unauthorized
from .node import Node

JSON_LIMIT = 1 << 20
SIM_PREFIX = "/__sim__/"


@dataclass
class Request:
    """One parsed request handed to a route handler."""

    node: Node
    method: str
    path: str
    query: dict[str, str]
    headers: Message
    body: BodyReader
    params: dict[str, str] = field(default_factory=dict)
    claims: Claims | None = None
    token: str | None = None
    token_from_cookie: bool = False

    def json(self) -> Any:
        """Decode the JSON body (400 when absent or invalid)."""
        raw = self.body.read_all(JSON_LIMIT)
        if not raw.strip():
            raise bad_request("a JSON request body is required")
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise bad_request(f"request body is not valid JSON: {exc}") from exc

    def query_bool(self, name: str, default: bool) -> bool:
        """Return a boolean query parameter (``true``/``false``; 400 otherwise)."""
        value = self.query.get(name)
        if value is None:
            return default
        if value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise bad_request(f"query parameter {name} must be true or false", field=name)


@dataclass
class Response:
    """A handler's answer: status, body and extra headers.

    The body is JSON-encoded, except ``None`` (empty) and ``bytes`` (sent as is, with ``content_type``).
    """

    status: int
    body: Any = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"


Handler = Callable[[Request], Response]


@dataclass(frozen=True)
class Route:
    """A method + path pattern (``{name}`` segments) bound to a handler."""

    method: str
    pattern: re.Pattern[str]
    handler: Handler
    auth: bool


class Router:
    """Maps requests to routes; reports 404 for unknown paths and 405 for wrong methods."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, template: str, handler: Handler, auth: bool = True) -> None:
        """Register ``handler`` for ``method`` on ``template`` (e.g. ``/v1/x/{name}``)."""
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
        self.routes.append(Route(method, re.compile(regex), handler, auth))

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """Return the route and its path parameters, or raise 404/405."""
        allowed = []
        for route in self.routes:
            found = route.pattern.fullmatch(path)
            if found:
                if route.method == method:
                    return route, found.groupdict()
                allowed.append(route.method)
        if allowed:
            raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on {path}",
                           {"allowed": sorted(set(allowed))})
        raise ApiError(404, "NotFound", f"no such endpoint: {path}")


def authenticate(request: Request) -> Claims:
    """Check the session token of ``request`` (header or cookie); raise 401 when missing/invalid."""
    header = request.headers.get("Authorization")
    token, reason = token_from_request(header, request.headers.get("Cookie"))
    if token is None:
        raise unauthorized(reason)
    claims, reason = request.node.tokens.verify(token)
    if claims is None:
        raise unauthorized(reason)
    request.claims, request.token, request.token_from_cookie = claims, token, not header
    return claims


def v1_error_body(error: ApiError) -> Any:
    """The Local API's (and the system console's) error body: ``v1Error``."""
    return error.body()


class SimHTTPServer(ThreadingHTTPServer):
    """Threaded HTTPS server; the TLS handshake runs in each connection's thread.

    ``faults`` applies the node's fault knobs (``drop_next``, ``delay_s``, ``fail_next``) and counts requests in
    ``node.requests``; the VIP listeners run without them, counting in ``requests``. ``error_body`` renders an
    :class:`ApiError` (``v1Error`` by default; the kube-apiserver stand-in renders a ``Status``).
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], node: Node, router: Router,
                 context: ssl.SSLContext, verbose: bool = False, *, faults: bool = True,
                 error_body: Callable[[ApiError], Any] = v1_error_body) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, SimRequestHandler)
        self.node, self.router, self.context, self.verbose = node, router, context, verbose
        self.faults, self.error_body = faults, error_body
        self.requests: Counter[str] = node.requests if faults else Counter()
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Wrap the accepted socket in TLS, then serve it."""
        try:
            request.settimeout(30)
            # Without this, a response written in two pieces waits ~40 ms for a delayed ACK.
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tls = self.context.wrap_socket(request, server_side=True)  # takes over the socket's descriptor
        except (OSError, ssl.SSLError):
            return
        with self._open_lock:
            self._open.add(tls)
        try:
            SimRequestHandler(tls, client_address, self)
        finally:
            with self._open_lock:
                self._open.discard(tls)
            with contextlib.suppress(OSError):
                tls.close()

    def drop_connections(self) -> None:
        """Cut every open connection (kept-alive ones included), as a host going away or a new certificate would."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class SimRequestHandler(BaseHTTPRequestHandler):
    """Turns HTTP requests into :class:`Request` objects and routes them."""

    protocol_version = "HTTP/1.1"
    timeout = 120
    server: SimHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Log to stderr only in verbose mode."""
        if self.server.verbose:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def do_GET(self) -> None:
        """Dispatch GET."""
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _body_reader(self) -> BodyReader:
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        length_header = self.headers.get("Content-Length")
        try:
            length = int(length_header) if length_header is not None else None
        except ValueError:
            length = -1
        if length is not None and length < 0:
            self.close_connection = True
            raise bad_request("invalid Content-Length header")
        return BodyReader(self.rfile, length, chunked)

    def _dispatch(self) -> None:
        node = self.server.node
        parts = urlsplit(self.path)
        path = parts.path
        body = BodyReader(self.rfile, 0, False)
        try:
            body = self._body_reader()
            request = Request(node, self.command, path,
                              dict(parse_qsl(parts.query, keep_blank_values=True)),
                              self.headers, body)
            if not self.server.faults:
                with node.lock:
                    self.server.requests[f"{self.command} {path}"] += 1
            elif not path.startswith(SIM_PREFIX):
                with node.lock:
                    node.requests[f"{self.command} {path}"] += 1
                if node.knobs.take("drop_next", path, self.command):
                    self.close_connection = True
                    return
                knobs = node.knobs.snapshot()
                if knobs.delay_s and path.startswith(knobs.delay_prefix):
                    time.sleep(knobs.delay_s)
                if node.knobs.take("fail_next", path, self.command):
                    raise ApiError(500, "InjectedFailure", "failure injected by the simulator")
            route, request.params = self.server.router.match(self.command, path)
            if route.auth:
                authenticate(request)
            response = route.handler(request)
        except ApiError as exc:
            response = Response(exc.status, self.server.error_body(exc), exc.headers)
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            response = Response(500, self.server.error_body(ApiError(500, "InternalError", f"simulator error: {exc}")))
        try:
            if not body.exhausted and not body.drain(JSON_LIMIT):
                self.close_connection = True
        except (OSError, ApiError):
            self.close_connection = True
        self._send(response)

    def _send(self, response: Response) -> None:
        if isinstance(response.body, bytes):
            data = response.body
        else:
            data = b"" if response.body is None else json.dumps(response.body).encode()
        try:
            self.send_response(response.status)
            for name, value in response.headers:
                self.send_header(name, value)
            if data:
                self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            # Headers and body leave in one write (one TLS record for small answers).
            self._headers_buffer.append(b"\r\n" + data)  # type: ignore[attr-defined]
            self.flush_headers()
        except OSError:
            self.close_connection = True
