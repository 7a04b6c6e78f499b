"""The system console's API at the VIP (``https://<vip>/v1/...``): login, the forced password change, health.

Follows ``docs/palette-system-console-api.md`` (its section 6 is this simulator's contract). The console's state
lives in the cluster record (``cluster["console"]``): a new cluster is a new Palette install with ``admin``/``admin``.

* Every call answers 503 ``ClusterNotReady`` until the cluster is ``Running`` (and while it is deleted).
* Open: ``GET /system`` (HTML), ``GET /v1/health/ping``, ``GET /v1/health/ready``, ``POST /v1/auth/syslogin``.
* Everything else needs the token (raw ``Authorization`` header, ``Bearer`` refused, or ``Cookie: Authorization=``):
  401 without a valid one; then, until the first password change, 403 ``PasswordResetRequired`` except on
  ``PATCH /v1/system/admin/password/reset``.
* Knob ``console_unavailable_next``: the next n logins answer 503 ``ServiceUnavailable`` (a console starting up).
* 5 failed logins in a row for ``admin`` lock the account for ``console_lockout_s``: 423 ``AccountLocked`` (also
  for the right password) with ``Retry-After``; the streak restarts after the lock and after a good login.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

from . import cluster, shapes
from .auth import TokenService, password_digest, token_from_request
from .errors import ApiError, bad_request, not_found, unauthorized
from .node import Node
from .server import Request, Response, Router
from .timefmt import iso

ADMIN = "admin"
DEFAULT_PASSWORD = "admin"  # noqa: S105 - the appliance's documented first-login password
LOCK_AFTER = 5
VERSION = "4.7.15"
NAMESPACES = ("cp-system", "hubble-system", "ingress-nginx", "jet-system", "ui-system")
SYSLOGIN = shapes.Obj({"username": shapes.STR, "password": shapes.STR, "emailId": shapes.STR},
                      ("username", "password"))
RESET = shapes.Obj({"email": shapes.STR, "oldPassword": shapes.STR, "newPassword": shapes.STR},
                   ("email", "oldPassword", "newPassword"))
CHANGE = shapes.Obj({"currentPassword": shapes.STR, "newPassword": shapes.STR}, ("currentPassword", "newPassword"))
SYSTEM_HTML = (b"<!doctype html><html><head><title>Palette System Console</title></head>"
               b"<body><div id=\"root\">Palette system console (simulated)</div></body></html>")


def fresh_state(record: dict[str, Any]) -> dict[str, Any]:
    """The console of a new install (``admin``/``admin``, no email), kept in ``record["console"]``."""
    return {
        "secret": secrets.token_hex(32), "adminUid": secrets.token_hex(12),
        "passwordDigest": password_digest(DEFAULT_PASSWORD), "previousDigest": None,
        "passwordReset": False, "email": "", "passwordUpdatedAt": record["createdAt"],
        "logins": 0, "loginFailures": 0, "failedStreak": 0, "lockedUntil": 0.0, "locks": 0,
        "passwordChanges": [], "registries": [],
    }


def _tokens(console: dict[str, Any]) -> TokenService:
    return TokenService(bytes.fromhex(console["secret"]), "palette-system-console")


def running_console(node: Node) -> dict[str, Any]:
    """The console record of a ``Running`` cluster (lock held by the caller); 503 otherwise."""
    now = time.time()
    record = cluster.current(node, now)
    if record is None or "console" not in record or cluster.state_of(record, now) != "Running":
        state = "absent" if record is None else cluster.state_of(record, now)
        raise ApiError(503, "ClusterNotReady", f"Palette is not running (cluster {state})")
    console: dict[str, Any] = record["console"]
    return console


def session(request: Request, *, before_reset: bool = False) -> dict[str, Any]:
    """Check the console token (401) and the first password change (403); return the console record.

    Call with ``request.node.lock`` held."""
    console = running_console(request.node)
    token, reason = token_from_request(request.headers.get("Authorization"), request.headers.get("Cookie"))
    if token is None:
        raise unauthorized(reason)
    claims, reason = _tokens(console).verify(token)
    if claims is None:
        raise unauthorized(reason)
    if not before_reset and not console["passwordReset"]:
        raise ApiError(403, "PasswordResetRequired",
                       "the first-login password must be changed (PATCH /v1/system/admin/password/reset) first")
    return console


def _user_token(console: dict[str, Any]) -> dict[str, Any]:
    return {"IsEmailSet": bool(console["email"]), "IsEmailVerified": bool(console["email"]), "IsMfa": False,
            "IsPasswordReset": console["passwordReset"]}


def syslogin(request: Request) -> Response:
    """``POST /v1/auth/syslogin`` -> 200 ``v1SysUserToken``; 401 bad credentials; 423 while locked."""
    body = request.json()
    shapes.require(body, SYSLOGIN)
    set_cookie = request.query_bool("setCookie", False)
    node, now = request.node, time.time()
    lifetime = node.knobs.snapshot().console_token_lifetime_s
    lockout = node.knobs.snapshot().console_lockout_s
    with node.lock:
        console = running_console(node)
        starting = node.knobs.snapshot().console_unavailable_next
        if starting > 0:
            node.knobs.update({"console_unavailable_next": starting - 1})
            raise ApiError(503, "ServiceUnavailable", "the system console is starting (simulated)")
        is_admin = body["username"] == ADMIN
        if is_admin and now < console["lockedUntil"]:
            left = int(console["lockedUntil"] - now) + 1
            raise ApiError(423, "AccountLocked", f"the account {ADMIN} is locked for {left} more seconds after"
                           f" {LOCK_AFTER} failed logins", {"retryAfterSeconds": left},
                           headers=[("Retry-After", str(left))])
        if not is_admin or password_digest(body["password"]) != console["passwordDigest"]:
            console["loginFailures"] += 1
            if is_admin:
                console["failedStreak"] += 1
                if console["failedStreak"] >= LOCK_AFTER:
                    console["lockedUntil"], console["failedStreak"] = now + lockout, 0
                    console["locks"] += 1
            node.save()
            raise ApiError(401, "InvalidCredentials", "invalid username or password")
        console["failedStreak"] = 0
        console["logins"] += 1
        token = _tokens(console).issue(ADMIN, lifetime)
        answer = {"Authorization": token, **_user_token(console)}
        node.save()
    cookie = ("Set-Cookie", f"Authorization={token}; Path=/; HttpOnly; Secure; SameSite=Strict")
    return Response(200, answer, [cookie] if set_cookie else [])


def policy_failures(password: str) -> list[str]:
    """The documented system-admin password rules ``password`` breaks (never quoting it)."""
    rules = [
        (len(password) >= 14, "at least 14 characters"),
        (re.search(r"[A-Z]", password) is not None, "an uppercase letter"),
        (re.search(r"[a-z]", password) is not None, "a lowercase letter"),
        (re.search(r"[0-9]", password) is not None, "a digit"),
        (re.search(r"[^A-Za-z0-9]", password) is not None, "a special character"),
    ]
    return [text for ok, text in rules if not ok]


def _change(node: Node, console: dict[str, Any], old: str, new: str, *, field: str, via: str,
            email: str | None = None) -> None:
    """Check and apply a password change (lock held): 401 wrong old password, 400 policy."""
    if password_digest(old) != console["passwordDigest"]:
        raise ApiError(401, "InvalidCredentials", f"{field} is not the current password", {"field": field})
    failures = policy_failures(new)
    if failures:
        raise bad_request("newPassword does not meet the password policy: it needs " + ", ".join(failures),
                          field="newPassword", rules=failures)
    if password_digest(new) in (console["passwordDigest"], console["previousDigest"]):
        raise bad_request("newPassword must differ from the previous password", field="newPassword")
    now = time.time()
    console["previousDigest"], console["passwordDigest"] = console["passwordDigest"], password_digest(new)
    console["passwordReset"], console["passwordUpdatedAt"] = True, now
    if email is not None:
        console["email"] = email
    console["passwordChanges"].append({"at": now, "via": via})
    node.save()


def reset_password(request: Request) -> Response:
    """``PATCH /v1/system/admin/password/reset`` ``{email, oldPassword, newPassword}`` -> 204."""
    body = request.json()
    with request.node.lock:
        console = session(request, before_reset=True)
        shapes.require(body, RESET)
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", body["email"]):
            raise bad_request("email is not an email address", field="email")
        _change(request.node, console, body["oldPassword"], body["newPassword"], field="oldPassword",
                via="reset", email=body["email"])
    return Response(204, headers=[("AuditUid", secrets.token_hex(12))])


def change_password(request: Request) -> Response:
    """``PATCH /v1/system/admins/{uid}/changePassword`` ``{currentPassword, newPassword}`` -> 204."""
    body = request.json()
    with request.node.lock:
        console = session(request)
        shapes.require(body, CHANGE)
        if request.params["uid"] != console["adminUid"]:
            raise not_found(f"no system admin with uid {request.params['uid']}")
        _change(request.node, console, body["currentPassword"], body["newPassword"], field="currentPassword",
                via="changePassword")
    return Response(204, headers=[("AuditUid", secrets.token_hex(12))])


def users_me(request: Request) -> Response:
    """``GET /v1/system/users/me``: the system admin."""
    with request.node.lock:
        console = session(request)
        return Response(200, {
            "metadata": {"uid": console["adminUid"], "name": ADMIN},
            "spec": {"emailId": console["email"], "adminType": "admin", "firstName": "", "lastName": ""},
            "status": {"isPasswordReset": console["passwordReset"], "isEmailSet": bool(console["email"]),
                       "isEmailVerified": bool(console["email"]), "isMfaEnabled": False,
                       "lastPasswordUpdateTime": iso(console["passwordUpdatedAt"])},
        })


def installed_version(request: Request) -> Response:
    """``GET /v1/system/version/installed``."""
    with request.node.lock:
        session(request)
    return Response(200, {"version": VERSION})


def app_health(request: Request) -> Response:
    """``GET /v1/mgmt/app/health`` -> ``v1MgmtAppEnvHealthStatus`` (knob ``console_unhealthy``)."""
    with request.node.lock:
        session(request)
    sick = request.node.knobs.snapshot().console_unhealthy
    message = "hubble-system: deployment hubble-mgmt has 0/2 ready replicas (simulated: console_unhealthy knob)"
    namespaces = {ns: {"isHealthy": not (sick and ns == "hubble-system"),
                       "message": message if sick and ns == "hubble-system" else ""} for ns in NAMESPACES}
    return Response(200, {"isHealthy": not sick, "messages": [message] if sick else [], "namespaces": namespaces})


def app_healthz(request: Request) -> Response:
    """``GET /v1/mgmt/app/healthz`` -> ``v1MgmtAppHealth`` (``podHealth`` empty)."""
    with request.node.lock:
        session(request)
    return Response(200, {"isHealthy": not request.node.knobs.snapshot().console_unhealthy, "podHealth": []})


def ping(request: Request) -> Response:
    """``GET /v1/health/ping`` and ``/v1/health/ready`` -> ``{"msg": "ok"}`` (open)."""
    with request.node.lock:
        running_console(request.node)
    return Response(200, {"msg": "ok"})


def system_page(request: Request) -> Response:
    """``GET /system``: the UI's HTML shell (open)."""
    with request.node.lock:
        running_console(request.node)
    return Response(200, SYSTEM_HTML, content_type="text/html; charset=utf-8")


def summary(console: dict[str, Any] | None) -> dict[str, Any] | None:
    """What ``/__sim__/state`` reports of the console (no secret, no digest)."""
    if console is None:
        return None
    return {"passwordChanged": console["passwordReset"], "email": console["email"], "logins": console["logins"],
            "loginFailures": console["loginFailures"], "failedStreak": console["failedStreak"],
            "lockedUntil": console["lockedUntil"], "locks": console["locks"],
            "passwordChanges": console["passwordChanges"], "adminUid": console["adminUid"]}


def register(router: Router) -> None:
    """Add the console's routes (auth is checked by each handler, not by the router)."""
    router.add("GET", "/system", system_page, auth=False)
    router.add("GET", "/system/", system_page, auth=False)
    router.add("GET", "/v1/health/ping", ping, auth=False)
    router.add("GET", "/v1/health/ready", ping, auth=False)
    router.add("POST", "/v1/auth/syslogin", syslogin, auth=False)
    router.add("PATCH", "/v1/system/admin/password/reset", reset_password, auth=False)
    router.add("PATCH", "/v1/system/admins/{uid}/changePassword", change_password, auth=False)
    router.add("GET", "/v1/system/users/me", users_me, auth=False)
    router.add("GET", "/v1/system/version/installed", installed_version, auth=False)
    router.add("GET", "/v1/mgmt/app/health", app_health, auth=False)
    router.add("GET", "/v1/mgmt/app/healthz", app_healthz, auth=False)
