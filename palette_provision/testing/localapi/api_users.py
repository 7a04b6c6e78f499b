"""Routes of ``/v1/users/...`` and ``/v1/ping``: login, renewal, logout, password, current user."""

from __future__ import annotations

from . import shapes
from .auth import password_digest
from .errors import ApiError
from .server import Request, Response, Router, authenticate

COOKIE_ATTRIBUTES = "Path=/; HttpOnly; Secure; SameSite=Strict"


def _cookie(token: str) -> tuple[str, str]:
    return ("Set-Cookie", f"Authorization={token}; {COOKIE_ATTRIBUTES}")


def _lifetime(request: Request) -> float:
    knobs = request.node.knobs.snapshot()
    extended = request.query_bool("extendedSession", False)
    return knobs.extended_token_lifetime_s if extended else knobs.token_lifetime_s


def login(request: Request) -> Response:
    """``POST /v1/users/default/login`` -> 200 ``{Token: {Authorization}, IsFirstLogin}``."""
    node = request.node
    body = request.json()
    shapes.require(body, shapes.LOGIN)
    set_cookie = request.query_bool("setCookie", True)
    lifetime = _lifetime(request)
    with node.lock:
        valid = (body["username"] == node.config.username
                 and password_digest(body["password"]) == node.state["passwordDigest"])
    if not valid:
        node.bump("loginFailures")
        raise ApiError(node.knobs.snapshot().login_failure_status, "InvalidCredentials",
                       "invalid username or password")
    token = node.tokens.issue(body["username"], lifetime)
    with node.lock:
        first = not node.state["firstLoginDone"]
        node.state["firstLoginDone"] = True
        node.state["stats"]["logins"] += 1
        node.save()
    headers = [_cookie(token)] if set_cookie else []
    return Response(200, {"Token": {"Authorization": token}, "IsFirstLogin": first}, headers)


def renew(request: Request) -> Response:
    """``POST /v1/users/default/token/renewal`` -> 200 ``{Authorization}`` (top level)."""
    assert request.claims is not None
    token = request.node.tokens.issue(request.claims.subject, _lifetime(request))
    headers = [_cookie(token)] if request.token_from_cookie else []
    return Response(200, {"Authorization": token}, headers)


def logout(request: Request) -> Response:
    """``POST /v1/users/default/logout`` -> 200, empty body; the token stops working."""
    assert request.claims is not None
    request.node.tokens.revoke(request.claims)
    return Response(200, None, [("Set-Cookie", f"Authorization=; Max-Age=0; {COOKIE_ATTRIBUTES}")])


def reset_password(request: Request) -> Response:
    """``POST /v1/users/default/password/reset`` -> 204; 400 when the old password is wrong."""
    body = request.json()
    shapes.require(body, shapes.PASSWORD_RESET)
    node = request.node
    with node.lock:
        if password_digest(body["oldPassword"]) != node.state["passwordDigest"]:
            raise ApiError(400, "InvalidCredentials", "oldPassword is not the current password",
                           {"field": "oldPassword"})
        if not body["newPassword"]:
            raise ApiError(400, "BadRequest", "newPassword must not be empty",
                           {"field": "newPassword"})
        node.state["passwordDigest"] = password_digest(body["newPassword"])
        node.save()
    return Response(204)


def current_user(request: Request) -> Response:
    """``GET /v1/users/current`` -> ``v1UserSpec``."""
    return Response(200, {"userName": request.node.config.username, "sshKeys": [],
                          "disablePasswordUpdate": False})


def ping(request: Request) -> Response:
    """``GET /v1/ping`` -> ``{"msg": "pong"}``; open unless the ``ping_requires_auth`` knob is set."""
    if request.node.knobs.snapshot().ping_requires_auth:
        authenticate(request)
    return Response(200, {"msg": "pong"})


def register(router: Router) -> None:
    """Add this module's routes."""
    router.add("POST", "/v1/users/default/login", login, auth=False)
    router.add("POST", "/v1/users/default/token/renewal", renew)
    router.add("POST", "/v1/users/default/logout", logout)
    router.add("POST", "/v1/users/default/password/reset", reset_password)
    router.add("GET", "/v1/users/current", current_user)
    router.add("GET", "/v1/ping", ping, auth=False)
