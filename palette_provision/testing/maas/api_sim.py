"""Test-only control routes under ``/__sim__/`` (no OAuth; never delayed or dropped).

* ``GET /__sim__/state``: what tests assert on (see the README for its shape).
* ``GET|POST /__sim__/knobs``: read / change knobs (``?replace=true``: onto the defaults); 400 on unknown names.
* ``POST /__sim__/reset``: machines back to the configuration, history and uploads forgotten; body = knobs.
* ``POST /__sim__/machines``: add a Ready machine (body: one machine entry of the configuration file).
* ``POST /__sim__/machines/{system_id}``: override fields of a machine (``status``, ``status_message``,
  ``power_state``, ``ip_addresses``, ``address``, ``tags``, ``zone``, ``pool``, ``power_type``, ``power_parameters``).
"""

from __future__ import annotations

import base64
import os
from typing import Any

from . import lifecycle
from .config import machine_from_config
from .errors import bad_request, not_found
from .region import STATUS_NAMES, Region
from .server import Request, Response, Router

SETTABLE = {"status": int, "status_message": str, "power_state": str, "ip_addresses": list, "address": str,
            "tags": list, "zone": str, "pool": str, "power_type": str, "power_parameters": dict}


def machine_view(region: Region, machine: dict[str, Any]) -> dict[str, Any]:
    """The simulator's full record of a machine, with ``user_data`` decoded (UTF-8, invalid bytes replaced)."""
    view = {k: v for k, v in machine.items() if k != "user_data_b64"}
    raw = base64.b64decode(machine["user_data_b64"]) if machine.get("user_data_b64") else None
    view["user_data"] = None if raw is None else raw.decode("utf-8", errors="replace")
    view["user_data_b64"] = machine.get("user_data_b64")
    view["status_name"] = STATUS_NAMES.get(machine["status"], str(machine["status"]))
    view["allocations"] = region.data["allocations"].get(machine["system_id"], 0)
    return view


def _resources(region: Region) -> list[dict[str, Any]]:
    result = []
    for resource in region.data["boot_resources"].values():
        files = [dict(f) for s in resource["sets"] for f in s["files"]]
        result.append({"id": resource["id"], "type": resource["type"], "name": resource["name"],
                       "architecture": resource["architecture"], "files": files})
    return result


def state(request: Request) -> Response:
    """A summary of the region for assertions."""
    region = request.region
    with region.lock:
        data = region.data
        return Response(200, {
            "pid": os.getpid(),
            "machines": {sid: machine_view(region, m) for sid, m in region.machines.items()},
            "allocations": dict(data["allocations"]), "allocation_log": list(data["allocation_log"]),
            "dry_runs": data["dry_runs"], "deploys": list(data["deploys"]), "releases": list(data["releases"]),
            "boot_resources": _resources(region), "uploads": dict(data["uploads"]),
            "events": len(data["events"]), "requests": dict(region.requests),
            "auth_failures": dict(region.auth_failures), "knobs": region.knobs.snapshot().to_json(),
        })


def get_knobs(request: Request) -> Response:
    """The knobs in force."""
    return Response(200, request.region.knobs.snapshot().to_json())


def set_knobs(request: Request) -> Response:
    """Merge the JSON body into the knobs (``?replace=true``: onto the defaults)."""
    body = request.json()
    if not isinstance(body, dict):
        raise bad_request("knobs must be a JSON object")
    replace = (request.query.get("replace") or ["false"])[-1] == "true"
    try:
        return Response(200, request.region.knobs.update(body, replace=replace).to_json())
    except ValueError as exc:
        raise bad_request(str(exc)) from exc


def reset(request: Request) -> Response:
    """Back to the configuration's machines, knobs = defaults + body."""
    body = request.json()
    if not isinstance(body, dict):
        raise bad_request("knobs must be a JSON object")
    region = request.region
    try:
        knobs = region.knobs.update(body, replace=True)
    except ValueError as exc:
        raise bad_request(str(exc)) from exc
    with region.lock:
        for sid in list(region.cancels):
            lifecycle.cancel(region, sid)
    region.reset()
    return Response(200, knobs.to_json())


def add_machine(request: Request) -> Response:
    """Add a Ready machine; 400 on a bad entry or a hostname / system id already known."""
    region = request.region
    try:
        machine = machine_from_config(request.json())
    except ValueError as exc:
        raise bad_request(str(exc)) from exc
    with region.lock:
        if machine["system_id"] in region.machines or any(
            m["hostname"] == machine["hostname"] for m in region.machines.values()
        ):
            raise bad_request(f"machine {machine['hostname']} ({machine['system_id']}) exists already")
        region.machines[machine["system_id"]] = machine
        region.save()
        return Response(200, machine_view(region, machine))


def set_machine(request: Request) -> Response:
    """Override some fields of a machine (see :data:`SETTABLE`)."""
    body = request.json()
    if not isinstance(body, dict):
        raise bad_request("a JSON object of fields is required")
    for name, value in body.items():
        kind = SETTABLE.get(name)
        if kind is None or not isinstance(value, kind) or isinstance(value, bool):
            raise bad_request(f"field {name!r} cannot be set this way (settable: {sorted(SETTABLE)})")
    region = request.region
    with region.lock:
        machine = region.machine(request.params["system_id"])
        if machine is None:
            raise not_found("Machine")
        if "status" in body:
            lifecycle.cancel(region, machine["system_id"])
            region.set_status(machine, body.pop("status"), str(body.pop("status_message", "")))
        machine.update(body)
        region.save()
        return Response(200, machine_view(region, machine))


def register(router: Router) -> None:
    """Add this module's routes (no OAuth)."""
    router.add("GET", "/__sim__/state", state, auth=False)
    router.add("GET", "/__sim__/knobs", get_knobs, auth=False)
    router.add("POST", "/__sim__/knobs", set_knobs, auth=False)
    router.add("POST", "/__sim__/reset", reset, auth=False)
    router.add("POST", "/__sim__/machines", add_machine, auth=False)
    router.add("POST", "/__sim__/machines/{system_id}", set_machine, auth=False)
