"""HTTP plumbing of the MAAS region: request/response objects, routing by path and ``?op=``, OAuth and the fault
knobs (latency, dropped connections, injected 503s), on the simulators' shared server
(``palette_provision.testing._simhttp``)."""

from __future__ import annotations

import json
import re
import ssl
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from palette_provision.testing import _simhttp
from palette_provision.testing._simhttp import BODY_LIMIT, SIM_PREFIX
from palette_provision.testing.localapi.body import BodyReader
from palette_provision.testing.localapi.errors import ApiError as LocalApiError

from .errors import DropConnection, MaasApiError, bad_request
from .forms import Form, parse_form
from .oauth import check_authorization

if TYPE_CHECKING:
    from .region import Region

API = "/MAAS/api/2.0/"


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
        raw = self.body.read_all(BODY_LIMIT)
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
        self.routes.append(Route(method, _simhttp.route_pattern(template), op, handler, auth))

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


class SimHTTPServer(_simhttp.SimHTTPServer):
    """The region's HTTP server (HTTPS with a TLS context)."""

    def __init__(self, address: tuple[str, int], region: Region, router: Router,
                 context: ssl.SSLContext | None, verbose: bool = False) -> None:
        super().__init__(address, SimRequestHandler, context, verbose)
        self.region, self.router = region, router


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


class SimRequestHandler(_simhttp.SimRequestHandler[Response]):
    """Turns HTTP requests into :class:`Request` objects, applies the fault knobs, checks OAuth and routes them."""

    server: SimHTTPServer

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

    def answer(self, path: str, query: str, body: BodyReader) -> Response:
        """Apply the fault knobs (not to ``/__sim__/``), route by path and ``op``, check OAuth, handle."""
        region = self.server.region
        values: dict[str, list[str]] = {}
        for name, value in parse_qsl(query, keep_blank_values=True):
            values.setdefault(name, []).append(value)
        request = Request(region, self.command, path, values, self.headers, body)
        try:
            op = _op_of(request)
            if not path.startswith(SIM_PREFIX):
                self._faults(request, op)
            route, request.params = self.server.router.match(self.command, path, op)
            if route.auth:
                try:
                    check_authorization(self.headers.get("Authorization"), region.api_key, region.nonces,
                                        window=region.knobs.snapshot().timestamp_window_s)
                except MaasApiError as exc:
                    region.count_auth_failure(str(exc))
                    raise
            return route.handler(request)
        finally:
            if request._form is not None:
                request._form.discard()

    def error_answer(self, exc: Exception) -> Response:
        """MAAS's error bodies; anything unexpected is a 500 (traceback on stderr)."""
        if isinstance(exc, MaasApiError):
            return Response(exc.status, exc.body, exc.headers)
        if isinstance(exc, LocalApiError):  # the shared body / multipart readers raise these (malformed bodies)
            return Response(exc.status, exc.message)
        traceback.print_exc(file=sys.stderr)
        return Response(500, f"simulator error: {type(exc).__name__}: {exc}")

    def send(self, response: Response) -> None:
        """Encode the body (``str``: text/plain, ``None``: empty, anything else: JSON), then send the answer."""
        if response.body is None:
            data, content_type = b"", None
        elif isinstance(response.body, str):
            data, content_type = response.body.encode(), "text/plain; charset=utf-8"
        else:
            data, content_type = json.dumps(response.body).encode(), "application/json; charset=utf-8"
        self.write_answer(response.status, response.headers, data, content_type)
