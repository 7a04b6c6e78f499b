"""``version/`` (anonymous), ``users/?op=whoami`` and ``events/?op=query``."""

from __future__ import annotations

from urllib.parse import urlencode

from .errors import bad_request
from .server import API, Request, Response, Router

LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
CAPABILITIES = ["networks-management", "static-ipaddresses", "ipv6-deployment-ubuntu", "devices-management",
                "storage-deployment-ubuntu", "network-deployment-ubuntu", "bridging-interface-ubuntu",
                "bridging-automatic-ubuntu", "authenticate-api"]


def version(request: Request) -> Response:
    """``GET version/`` (no authentication, as in MAAS)."""
    return Response(200, {"capabilities": CAPABILITIES, "version": request.region.config.version,
                          "subversion": "maas-simulator"})


def whoami(request: Request) -> Response:
    """``GET users/?op=whoami``."""
    name = request.region.config.username
    return Response(200, {"is_superuser": True, "username": name, "email": f"{name}@example.com", "is_local": True,
                          "resource_uri": f"{API}users/{name}/"})


def _int(request: Request, name: str) -> int | None:
    values = request.query.get(name)
    if not values:
        return None
    try:
        return int(values[-1])
    except ValueError:
        raise bad_request(f"Invalid {name}: {values[-1][:20]!r} is not an integer.") from None


def query_events(request: Request) -> Response:
    """``GET events/?op=query`` (``id``, ``hostname``, ``mac_address``, ``zone``, ``agent_name``, ``level``,
    ``limit``, ``before``, ``after``): newest first, MAAS's ``{count, events, next_uri, prev_uri}``."""
    level = (request.query.get("level") or ["INFO"])[-1]
    if level not in LEVELS:
        raise bad_request(f"Unrecognised log level: {level[:20]}")
    limit = _int(request, "limit") or DEFAULT_LIMIT
    if limit > MAX_LIMIT:
        raise bad_request(f"Requested number of events {limit} is greater than limit: {MAX_LIMIT}")
    limit = max(limit, 1)
    before, after = _int(request, "before"), _int(request, "after")
    if before is not None and after is not None:
        raise bad_request("There is undetermined behaviour when both `after` and `before` are specified.")
    region = request.region
    with region.lock:
        machines = list(region.machines.values())
        for name, key in (("id", "system_id"), ("hostname", "hostname"), ("zone", "zone"),
                          ("agent_name", "agent_name")):
            if request.query.get(name):
                machines = [m for m in machines if m[key] in request.query[name]]
        if request.query.get("mac_address"):
            wanted = {v.lower() for v in request.query["mac_address"]}
            machines = [m for m in machines if wanted & set(m["macs"])]
        ids = {m["system_id"] for m in machines}
        events = [e for e in region.data["events"] if e["node"] in ids and LEVELS.get(e["level"], 20) >= LEVELS[level]]
    if after is not None:
        events = list(reversed([e for e in events if e["id"] > after][:limit]))
    else:
        events = [e for e in reversed(events) if before is None or e["id"] < before][:limit]
    base = {k: v for k, v in request.query.items() if k not in ("before", "after")}
    newest = events[0]["id"] if events else (before - 1 if before is not None else None)
    next_uri = f"{API}events/?" + urlencode({**base, **({"after": [str(newest)]} if newest is not None else {})},
                                            doseq=True)
    prev_uri = (f"{API}events/?" + urlencode({**base, "before": [str(events[-1]["id"])]}, doseq=True)
                if events else None)
    return Response(200, {"count": len(events), "events": events, "next_uri": next_uri, "prev_uri": prev_uri})


def register(router: Router) -> None:
    """Add this module's routes."""
    router.add("GET", f"{API}version/", version, auth=False)
    router.add("GET", f"{API}users/", whoami, op="whoami")
    router.add("GET", f"{API}events/", query_events, op="query")
