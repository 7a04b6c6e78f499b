"""The system console's OCI pack registries: the appliance's in-cluster one, registered ones, and their sync.

Shapes follow ``docs/palette-system-console-api.md`` section 3 (Palette 4.8 spec, Terraform's use of it):

* ``GET /v1/registries/oci/summary`` -> ``{"items": [v1OciRegistry]}``: the in-cluster registry first (name ``OCI Pack
  Registry``, ``spec.endpoint`` ``https://<vip>:<registry_port>``, ``providerType`` ``pack``, ``registryType``
  ``basic``, ``scope`` ``system``), then the registered ones.
* ``POST .../{uid}/basic/sync`` -> 202 (no body, ``AuditUid`` header): ``InProgress`` for ``registry_sync_s``
  (knob value at the trigger), then ``Completed`` (``message`` says how many packs it found: the ``.zst`` files
  uploaded through the Local API since the cluster was created) or ``Failed`` (knob ``registry_sync_fails``).
  A trigger while a sync runs is accepted (202) and changes nothing. Knob ``registry_sync_stale_s``: for that long
  after a trigger the status still reports the previous run (a lagging status; clients must read ``lastRunTime``).
* The in-cluster registry starts ``Completed`` (the install's own sync, when the cluster became Running).
* ``POST /v1/registries/oci/basic/validate`` (a ``v1BasicOciRegistrySpec``) -> 204 or 400; ``POST
  /v1/registries/oci/basic`` -> 201 ``{"uid"}`` (409 for a name in use) and a sync unless ``skipPackSync=true``.
  Registry passwords are checked for presence and never stored.
"""

from __future__ import annotations

import re
import secrets
import ssl
import time
from typing import Any

from . import content, shapes
from .console import session
from .errors import ApiError, bad_request, not_found
from .node import Node
from .server import Request, Response, Router
from .shapes import BOOL, STR, Enum, Obj
from .timefmt import iso

INTERNAL_NAME = "OCI Pack Registry"
TLS = Obj({"enabled": BOOL, "insecureSkipVerify": BOOL, "certificate": STR, "ca": STR, "key": STR})
AUTH = Obj({"type": Enum(("noAuth", "basic", "token")), "username": STR, "password": STR, "token": STR,
            "tls": TLS}, ("type",))
SPEC = Obj({"endpoint": STR, "basePath": STR, "baseContentPath": STR, "providerType": Enum(("helm", "zarf", "pack")),
            "isSyncSupported": BOOL, "auth": AUTH, "scope": STR}, ("endpoint", "auth"))
REGISTRY = Obj({"metadata": shapes.OBJECT_META, "spec": SPEC}, ("metadata", "spec"))


def internal_registry(record: dict[str, Any]) -> dict[str, Any]:
    """The appliance's in-cluster Zot registry as the console lists it, from the cluster's profile variables."""
    values = {v["name"]: v["value"] for v in record["config"]["spec"].get("profileVariables", [])}
    running_at = record["createdAt"] + record["runningAfter"]
    return {
        "uid": secrets.token_hex(12), "name": INTERNAL_NAME, "internal": True, "createdAt": running_at,
        "spec": {"endpoint": f"https://{record['vip']}:{values.get('registry_port') or '30003'}",
                 "basePath": "", "baseContentPath": values.get("registry_base_path") or "spectro-content",
                 "providerType": "pack", "isSyncSupported": True, "scope": "system",
                 "auth": {"type": "basic", "username": values.get("oci_registry_username") or "admin",
                          "tls": {"enabled": True, "insecureSkipVerify": True, "certificate": ""}}},
        "syncs": [{"at": running_at, "durationS": 0.0, "fails": False, "packs": 0, "packNames": [],
                   "trigger": "install"}],
    }


def sync_status(registry: dict[str, Any], now: float) -> dict[str, Any]:
    """``v1RegistrySyncStatus`` of ``registry`` at ``now``."""
    supported = bool(registry["spec"].get("isSyncSupported", True))
    runs = [r for r in registry["syncs"] if r.get("visibleAt", r["at"]) <= now]
    done = [r for r in runs if r["at"] + r["durationS"] <= now]
    synced = [r for r in done if not r["fails"]]
    answer = {"isSyncSupported": supported, "status": "", "message": "", "lastRunTime": "",
              "lastSyncedTime": iso(synced[-1]["at"] + synced[-1]["durationS"]) if synced else ""}
    if not runs:
        return answer
    last = runs[-1]
    answer["lastRunTime"] = iso(last["at"])
    if last not in done:
        answer["status"] = "InProgress"
    elif last["fails"]:
        answer.update(status="Failed", message=f"sync failed: could not read the pack index of"
                      f" {registry['spec']['endpoint']} (simulated: registry_sync_fails knob)")
    else:
        answer["status"] = "Completed"
        if last["packs"] is not None:
            answer["message"] = f"{last['packs']} pack(s) found"
    return answer


def _meta(registry: dict[str, Any]) -> dict[str, Any]:
    return {"name": registry["name"], "uid": registry["uid"], "creationTimestamp": iso(registry["createdAt"]),
            "lastModifiedTimestamp": iso(registry.get("updatedAt", registry["createdAt"])), "annotations": {},
            "labels": {}}


def _summary_item(registry: dict[str, Any], now: float) -> dict[str, Any]:
    spec = registry["spec"]
    return {"metadata": _meta(registry),
            "spec": {"endpoint": spec["endpoint"], "providerType": spec.get("providerType", "helm"),
                     "registryType": "basic", "scope": spec.get("scope") or "system",
                     "isPrivate": spec["auth"]["type"] != "noAuth", "containsSpectroManifest": False,
                     "defaultRegion": ""},
            "status": {"sync": sync_status(registry, now)}}


def _find(console: dict[str, Any], uid: str) -> dict[str, Any]:
    for registry in console["registries"]:
        if registry["uid"] == uid:
            result: dict[str, Any] = registry
            return result
    raise not_found(f"no OCI registry with uid {uid}")


def _start_sync(node: Node, record: dict[str, Any], registry: dict[str, Any], trigger: str) -> None:
    knobs, now = node.knobs.snapshot(), time.time()
    if sync_status(registry, now)["status"] == "InProgress" or any(r.get("visibleAt", 0) > now
                                                                    for r in registry["syncs"]):
        return
    packs: list[str] | None = None
    if registry.get("internal"):
        packs = sorted(p["fileName"] for p in content.pack_uploads(node, record["createdAt"]))
    registry["syncs"].append({"at": now, "durationS": knobs.registry_sync_s, "fails": knobs.registry_sync_fails,
                              "packs": None if packs is None else len(packs), "packNames": packs or [],
                              "trigger": trigger, "visibleAt": now + knobs.registry_sync_stale_s})
    del registry["syncs"][:-50]


def _check_spec(spec: dict[str, Any], where: str) -> dict[str, Any]:
    """Meaning checks of a ``v1BasicOciRegistrySpec`` (400); return it without secrets."""
    if not re.fullmatch(r"(https?://)?[A-Za-z0-9.\-\[\]:]+(/\S*)?", spec["endpoint"]):
        raise bad_request(f"{where}.endpoint: not a registry address", field=f"{where}.endpoint")
    auth = spec["auth"]
    needed = {"basic": ("username", "password"), "token": ("token",)}.get(auth["type"], ())
    for name in needed:
        if not auth.get(name):
            raise bad_request(f"{where}.auth.{name}: required for auth type {auth['type']}",
                              field=f"{where}.auth.{name}")
    if spec.get("providerType") == "pack" and not spec.get("isSyncSupported"):
        raise bad_request(f"{where}.isSyncSupported: must be true for providerType pack",
                          field=f"{where}.isSyncSupported")
    if spec.get("isSyncSupported") and not spec.get("baseContentPath"):
        raise bad_request(f"{where}.baseContentPath: required when isSyncSupported",
                          field=f"{where}.baseContentPath")
    certificate = auth.get("tls", {}).get("certificate", "")
    if certificate:
        try:
            ssl.PEM_cert_to_DER_cert(certificate.strip())
        except ValueError:
            raise bad_request(f"{where}.auth.tls.certificate: not a PEM certificate",
                              field=f"{where}.auth.tls.certificate") from None
    kept = {k: v for k, v in spec.items() if k != "auth"}
    kept["auth"] = {k: v for k, v in auth.items() if k not in ("password", "token")}
    return kept


def summary(request: Request) -> Response:
    """``GET /v1/registries/oci/summary``."""
    now = time.time()
    with request.node.lock:
        console = session(request)
        return Response(200, {"items": [_summary_item(r, now) for r in console["registries"]]})


def validate(request: Request) -> Response:
    """``POST /v1/registries/oci/basic/validate`` -> 204, or 400 naming the field."""
    body = request.json()
    with request.node.lock:
        session(request)
    shapes.require(body, SPEC)
    _check_spec(body, "spec")
    return Response(204)


def create(request: Request) -> Response:
    """``POST /v1/registries/oci/basic`` -> 201 ``{"uid"}``; 409 when the name is in use."""
    body = request.json()
    node = request.node
    with node.lock:
        console = session(request)
        shapes.require(body, REGISTRY)
        name = body["metadata"].get("name", "")
        if not name:
            raise bad_request("metadata.name: is required", field="metadata.name")
        spec = _check_spec(body["spec"], "spec")
        if any(r["name"] == name for r in console["registries"]):
            raise ApiError(409, "Conflict", f"an OCI registry named {name!r} already exists")
        registry = {"uid": secrets.token_hex(12), "name": name, "internal": False, "createdAt": time.time(),
                    "spec": spec, "passwordSet": bool(body["spec"]["auth"].get("password")), "syncs": []}
        console["registries"].append(registry)
        if spec.get("isSyncSupported") and not request.query_bool("skipPackSync", False):
            _start_sync(node, node.state["cluster"], registry, "create")
        node.save()
    return Response(201, {"uid": registry["uid"]}, [("AuditUid", secrets.token_hex(12))])


def get_one(request: Request) -> Response:
    """``GET /v1/registries/oci/{uid}/basic`` -> ``v1BasicOciRegistry`` (no password)."""
    now = time.time()
    with request.node.lock:
        registry = _find(session(request), request.params["uid"])
        return Response(200, {"metadata": _meta(registry), "spec": registry["spec"],
                              "status": {"syncStatus": sync_status(registry, now)}})


def _external(request: Request) -> tuple[dict[str, Any], dict[str, Any]]:
    console = session(request)
    registry = _find(console, request.params["uid"])
    if registry.get("internal"):
        raise ApiError(403, "Forbidden", "the in-cluster OCI pack registry is managed by the appliance")
    return console, registry


def update(request: Request) -> Response:
    """``PUT /v1/registries/oci/{uid}/basic`` -> 204 (registered registries only)."""
    body = request.json()
    with request.node.lock:
        _, registry = _external(request)
        shapes.require(body, REGISTRY)
        registry["spec"], registry["updatedAt"] = _check_spec(body["spec"], "spec"), time.time()
        request.node.save()
    return Response(204)


def delete(request: Request) -> Response:
    """``DELETE /v1/registries/oci/{uid}/basic`` -> 204 (registered registries only)."""
    with request.node.lock:
        console, registry = _external(request)
        console["registries"].remove(registry)
        request.node.save()
    return Response(204)


def trigger_sync(request: Request) -> Response:
    """``POST /v1/registries/oci/{uid}/basic/sync`` (``forceSync``) -> 202, no body."""
    request.query_bool("forceSync", False)
    node = request.node
    with node.lock:
        registry = _find(session(request), request.params["uid"])
        _start_sync(node, node.state["cluster"], registry, "sync")
        node.save()
    return Response(202, headers=[("AuditUid", secrets.token_hex(12))])


def get_sync_status(request: Request) -> Response:
    """``GET /v1/registries/oci/{uid}/basic/sync/status`` -> ``v1RegistrySyncStatus``."""
    now = time.time()
    with request.node.lock:
        registry = _find(session(request), request.params["uid"])
        return Response(200, sync_status(registry, now))


def state_view(console: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The registries and their sync runs for ``/__sim__/state``."""
    if console is None:
        return []
    now = time.time()
    return [{"uid": r["uid"], "name": r["name"], "internal": r.get("internal", False), "spec": r["spec"],
             "status": sync_status(r, now), "syncs": r["syncs"]} for r in console["registries"]]


def register(router: Router) -> None:
    """Add the registry routes (auth checked by each handler)."""
    base = "/v1/registries/oci"
    router.add("GET", f"{base}/summary", summary, auth=False)
    router.add("POST", f"{base}/basic/validate", validate, auth=False)
    router.add("POST", f"{base}/basic", create, auth=False)
    router.add("GET", f"{base}/{{uid}}/basic", get_one, auth=False)
    router.add("PUT", f"{base}/{{uid}}/basic", update, auth=False)
    router.add("DELETE", f"{base}/{{uid}}/basic", delete, auth=False)
    router.add("POST", f"{base}/{{uid}}/basic/sync", trigger_sync, auth=False)
    router.add("GET", f"{base}/{{uid}}/basic/sync/status", get_sync_status, auth=False)
