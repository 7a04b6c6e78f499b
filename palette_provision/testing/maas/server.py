"""HTTP plumbing: a threaded HTTP(S) server, request/response objects, routing by path and ``?op=``, OAuth and the
fault knobs (latency, dropped connections, injected 503s)."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from palette_provision.testing.localapi.body import BodyReader
from palette_provision.testing.localapi.errors import ApiError as LocalApiError

from .errors import DropConnection, MaasApiError, bad_request
from .forms import Form, parse_form
from .oauth import check_authorization

if TYPE_CHECKING:
    from .region import Region

API = "/MAAS/api/2.0/"
SIM_PREFIX = "/__sim__/"
DRAIN_LIMIT = 1 << 20


@dataclass
class Request:
    """One parsed request handed to a route handler."""

    region: Region
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: BodyReader
    params: dict[str, str] = field(default_factory=dict)
    _form: Form | None = None

    def form(self) -> Form:
        """The form body (url-encoded or multipart), parsed on first use; empty for other bodies."""
        if self._form is None:
            self._form = parse_form(self.headers.get("Content-Type"), self.body, self.region.tmp_dir)
        return self._form

    def json(self) -> Any:
        """The JSON body (control API only); 400 when absent or invalid."""
        raw = self.body.read_all(DRAIN_LIMIT)
        try:
            return json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            raise bad_request(f"request body is not valid JSON: {exc}") from exc


@dataclass
class Response:
    """A handler's answer: ``str`` → text/plain, ``None`` → empty, anything else → JSON."""

    status: int
    body: Any = None
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Response]


@dataclass(frozen=True)
class Route:
    """A method + path pattern + ``op`` (``None``: the request has no ``op``) bound to a handler."""

    method: str
    pattern: re.Pattern[str]
    op: str | None
    handler: Handler
    auth: bool


class Router:
    """Maps requests to routes: 404 ``Unknown API endpoint``, 405 for another method, 400 for an unknown op."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, template: str, handler: Handler, *, op: str | None = None, auth: bool = True) -> None:
        """Register ``handler`` for ``method`` on ``template`` (``{name}`` segments) and ``op``."""
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
        self.routes.append(Route(method, re.compile(regex), op, handler, auth))

    def match(self, method: str, path: str, op: str | None) -> tuple[Route, dict[str, str]]:
        """Return the route and its path parameters, or raise 404/405/400."""
        path_known = methods_known = False
        for route in self.routes:
            found = route.pattern.fullmatch(path)
            if not found:
                continue
            path_known = True
            if route.method != method:
                continue
            methods_known = True
            if route.op == op:
                return route, found.groupdict()
        if not path_known:
            raise MaasApiError(404, f"Unknown API endpoint: {path}.")
        if not methods_known:
            raise MaasApiError(405, f"Method Not Allowed: {method}")
        raise bad_request(f"Unrecognised signature: method={method} op={op}")


class SimHTTPServer(ThreadingHTTPServer):
    """Threaded HTTP server; with a TLS context, the handshake runs in each connection's thread."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], region: Region, router: Router,
                 context: ssl.SSLContext | None, verbose: bool = False) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, SimRequestHandler)
        self.region, self.router, self.context, self.verbose = region, router, context, verbose

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Wrap the accepted socket in TLS (when configured), then serve it."""
        request.settimeout(60)
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.context is None:
            SimRequestHandler(request, client_address, self)
            return
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        try:
            SimRequestHandler(tls, client_address, self)
        finally:
            with contextlib.suppress(OSError):
                tls.close()


def _op_of(request: Request) -> str | None:
    ops = request.query.get("op")
    if ops:
        return ops[-1]
    if request.method in ("POST", "PUT"):
        # piston also reads ``op`` from a form body.
        content_type = (request.headers.get("Content-Type") or "").lower()
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            values = request.form().fields.get("op")
            return values[-1] if values else None
    return None


class SimRequestHandler(BaseHTTPRequestHandler):
    """Turns HTTP requests into :class:`Request` objects and routes them."""

    protocol_version = "HTTP/1.1"
    server: SimHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Log to stderr only in verbose mode."""
        if self.server.verbose:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def do_GET(self) -> None:
        """Dispatch every method the same way."""
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

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

    def _faults(self, request: Request, op: str | None) -> None:
        region = self.server.region
        key = request.path + (f"?op={op}" if op else "")
        region.count_request(f"{request.method} {key}")
        knobs = region.knobs.snapshot()
        if (knobs.drop_prefix and request.path.startswith(knobs.drop_prefix)) or region.knobs.take(
            "drop_next", key, request.method
        ):
            raise DropConnection
        if knobs.latency_s and request.path.startswith(knobs.latency_prefix):
            time.sleep(knobs.latency_s)
        if region.knobs.take("fail_next", key, request.method):
            raise MaasApiError(503, "Service Unavailable (injected by the MAAS simulator)")

    def _dispatch(self) -> None:
        region = self.server.region
        parts = urlsplit(self.path)
        body = BodyReader(self.rfile, 0, False)
        request: Request | None = None
        try:
            body = self._body_reader()
            query: dict[str, list[str]] = {}
            for name, value in parse_qsl(parts.query, keep_blank_values=True):
                query.setdefault(name, []).append(value)
            request = Request(region, self.command, parts.path, query, self.headers, body)
            op = _op_of(request)
            if not request.path.startswith(SIM_PREFIX):
                self._faults(request, op)
            route, request.params = self.server.router.match(self.command, request.path, op)
            if route.auth:
                try:
                    check_authorization(self.headers.get("Authorization"), region.api_key, region.nonces,
                                        window=region.knobs.snapshot().timestamp_window_s)
                except MaasApiError as exc:
                    region.count_auth_failure(str(exc))
                    raise
            response = route.handler(request)
        except DropConnection:
            self.close_connection = True
            return
        except MaasApiError as exc:
            response = Response(exc.status, exc.body, exc.headers)
        except LocalApiError as exc:  # the shared body / multipart readers raise these (malformed bodies)
            response = Response(exc.status, exc.message)
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            response = Response(500, f"simulator error: {type(exc).__name__}: {exc}")
        finally:
            if request is not None and request._form is not None:
                request._form.discard()
        try:
            if not body.exhausted and not body.drain(DRAIN_LIMIT):
                self.close_connection = True
        except (OSError, LocalApiError):
            self.close_connection = True
        self._send(response)

    def _send(self, response: Response) -> None:
        if response.body is None:
            data, content_type = b"", None
        elif isinstance(response.body, str):
            data, content_type = response.body.encode(), "text/plain; charset=utf-8"
        else:
            data, content_type = json.dumps(response.body).encode(), "application/json; charset=utf-8"
        try:
            self.send_response(response.status)
            for name, value in response.headers:
                self.send_header(name, value)
            if content_type:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self._headers_buffer.append(b"\r\n" + data)  # type: ignore[attr-defined]
            self.flush_headers()
        except OSError:
            self.close_connection = True
