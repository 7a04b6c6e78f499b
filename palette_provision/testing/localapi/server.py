"""HTTP plumbing of the Local API: request/response objects, routing, auth and fault injection, on the simulators'
shared server (``palette_provision.testing._simhttp``)."""

from __future__ import annotations

import json
import re
import ssl
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from typing import Any
from urllib.parse import parse_qsl

from palette_provision.testing import _simhttp
from palette_provision.testing._simhttp import BODY_LIMIT, SIM_PREFIX

from .auth import Claims, token_from_request
from .body import BodyReader
from .errors import ApiError, bad_request, unauthorized
from .node import Node


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
        raw = self.body.read_all(BODY_LIMIT)
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
        self.routes.append(Route(method, _simhttp.route_pattern(template), handler, auth))

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


class SimHTTPServer(_simhttp.SimHTTPServer):
    """The node's HTTPS server (and its VIP listeners').

    ``faults`` applies the node's fault knobs (``drop_next``, ``delay_s``, ``fail_next``) and counts requests in
    ``node.requests``; the VIP listeners run without them, counting in ``requests``. ``error_body`` renders an
    :class:`ApiError` (``v1Error`` by default; the kube-apiserver stand-in renders a ``Status``).
    """

    # The TLS handshake gets 30 s; the handler then waits up to its ``timeout`` for each request.
    accept_timeout = 30.0

    def __init__(self, address: tuple[str, int], node: Node, router: Router,
                 context: ssl.SSLContext, verbose: bool = False, *, faults: bool = True,
                 error_body: Callable[[ApiError], Any] = v1_error_body) -> None:
        super().__init__(address, SimRequestHandler, context, verbose)
        self.node, self.router = node, router
        self.faults, self.error_body = faults, error_body
        self.requests: Counter[str] = node.requests if faults else Counter()


class SimRequestHandler(_simhttp.SimRequestHandler[Response]):
    """Turns HTTP requests into :class:`Request` objects, applies the fault knobs and routes them."""

    timeout = 120
    server: SimHTTPServer

    def answer(self, path: str, query: str, body: BodyReader) -> Response:
        """Count the request, apply the fault knobs (not to ``/__sim__/``), route, authenticate, handle."""
        node = self.server.node
        request = Request(node, self.command, path, dict(parse_qsl(query, keep_blank_values=True)), self.headers, body)
        if not self.server.faults:
            with node.lock:
                self.server.requests[f"{self.command} {path}"] += 1
        elif not path.startswith(SIM_PREFIX):
            with node.lock:
                node.requests[f"{self.command} {path}"] += 1
            if node.knobs.take("drop_next", path, self.command):
                raise _simhttp.DropConnection
            knobs = node.knobs.snapshot()
            if knobs.delay_s and path.startswith(knobs.delay_prefix):
                time.sleep(knobs.delay_s)
            if node.knobs.take("fail_next", path, self.command):
                raise ApiError(500, "InjectedFailure", "failure injected by the simulator")
        route, request.params = self.server.router.match(self.command, path)
        if route.auth:
            authenticate(request)
        return route.handler(request)

    def error_answer(self, exc: Exception) -> Response:
        """An :class:`ApiError` in the server's error body; anything else is a 500 (traceback on stderr)."""
        if not isinstance(exc, ApiError):
            traceback.print_exc(file=sys.stderr)
            exc = ApiError(500, "InternalError", f"simulator error: {exc}")
        return Response(exc.status, self.server.error_body(exc), exc.headers)

    def send(self, response: Response) -> None:
        """JSON-encode the body (``bytes`` are sent as they are, ``None`` empty), then send the answer."""
        if isinstance(response.body, bytes):
            data = response.body
        else:
            data = b"" if response.body is None else json.dumps(response.body).encode()
        self.write_answer(response.status, response.headers, data, response.content_type if data else None)
