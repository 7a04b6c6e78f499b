"""``machines/``: list, read, allocate, deploy, release and the power operations."""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

from . import lifecycle
from .boot import find_custom_image, usable_custom_names
from .errors import bad_request, conflict, not_found, validation_error
from .machines import filter_machines, find_allocatable, render_machine
from .region import STATUS_NAMES, Region, Status
from .server import API, Request, Response, Router

MACHINES = f"{API}machines/"
MACHINE = f"{API}machines/{{system_id}}/"
UBUNTU = {"noble": "24.04", "jammy": "22.04", "focal": "20.04"}
RELEASABLE = {Status.ALLOCATED, Status.DEPLOYING, Status.DEPLOYED, Status.FAILED_DEPLOYMENT, Status.BROKEN,
              Status.FAILED_RELEASING, Status.FAILED_DISK_ERASING, 5}


def _by_admin(comment: str | None) -> str:
    return f"(admin) - {comment[:200]}" if comment else "(admin)"


def _machine(request: Request) -> dict[str, Any]:
    machine = request.region.machine(request.params["system_id"])
    if machine is None:
        raise not_found("Machine")
    return machine


def list_machines(request: Request) -> Response:
    """``GET machines/`` with the ``hostname``, ``id``, ``mac_address``, ``zone``, ``pool``, ``agent_name``,
    ``domain``, ``arch``, ``tags`` filters (each repeatable)."""
    region = request.region
    with region.lock:
        found = filter_machines(region.machines.values(), request.query)
        return Response(200, [render_machine(m, region) for m in found])


def read_machine(request: Request) -> Response:
    """``GET machines/{system_id}/``."""
    with request.region.lock:
        return Response(200, render_machine(_machine(request), request.region))


def _acquire(region: Region, machine: dict[str, Any], agent_name: str, comment: str) -> None:
    machine.update(owner=region.config.username, agent_name=agent_name, comment=comment)
    region.set_status(machine, Status.ALLOCATED)
    if comment:
        region.add_event(machine, "User acquiring node", _by_admin(comment))
    sid = machine["system_id"]
    region.data["allocations"][sid] = region.data["allocations"].get(sid, 0) + 1
    region.data["allocation_log"].append({"system_id": sid, "hostname": machine["hostname"],
                                          "agent_name": agent_name, "comment": comment, "time": time.time()})


def allocate(request: Request) -> Response:
    """``POST machines/?op=allocate``: the first Ready machine matching the constraints, now Allocated (409 when
    none; ``dry_run`` changes nothing)."""
    form = request.form()
    dry_run = form.get_bool("dry_run")
    region = request.region
    with region.lock:
        machine = find_allocatable(region, form)
        if dry_run:
            region.data["dry_runs"] += 1
        else:
            _acquire(region, machine, form.get("agent_name") or "", form.get("comment") or "")
        region.save()
        body = render_machine(machine, region)
        body["constraints_by_type"] = {}
        return Response(200, body)


def _resolve_os(region: Region, machine: dict[str, Any], osystem: str, series: str) -> tuple[str, str, Any]:
    """(osystem, distro_series, custom image file or None), or MAAS's 400 for an unknown series."""
    if not series:
        osystem, series = "ubuntu", "noble"
    if "/" in series:
        os_part, release = series.split("/", 1)
        if osystem and osystem != os_part:
            raise validation_error({"distro_series": [
                f"{release[:60]} in distro_series does not match with operating system {os_part[:40]}"]})
        osystem, series = os_part, release
    if osystem in ("", "ubuntu"):
        for name, version in UBUNTU.items():
            if series in (name, version):
                return "ubuntu", name, None
    if osystem in ("", "custom"):
        found = find_custom_image(region, series, machine["architecture"])
        if found is not None:
            resource, rfile = found
            resource["last_deployed"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
            return "custom", series, rfile
    choices = ["''"] + [f"'ubuntu/{n}'" for n in UBUNTU] + [f"'{n}'" for n in usable_custom_names(region)]
    shown = f"{osystem}/{series}" if osystem else series
    raise validation_error({"distro_series": [
        f"'{shown[:80]}' is not a valid distro_series.  It should be one of: {', '.join(choices)}."]})


def deploy(request: Request) -> Response:
    """``POST machines/{id}/?op=deploy`` (``user_data`` base64, ``distro_series``, ``osystem``, ``agent_name``,
    ``comment``...): Allocated → Deploying; Deployed or Failed deployment later."""
    form = request.form()
    for removed in ("install_rackd", "install_kvm", "register_vmhost"):
        if form.get_bool(removed):
            raise bad_request(f"Support for {removed} allocation parameter has been removed.")
    user_data_text = form.get("user_data")
    try:
        user_data = base64.b64decode(user_data_text, validate=True) if user_data_text else b""
    except (binascii.Error, ValueError):
        raise bad_request("Invalid user_data: it must be base64-encoded.") from None
    region = request.region
    with region.lock:
        machine = _machine(request)
        if machine["status"] == Status.READY and region.knobs.snapshot().deploy_allocates_ready:
            _acquire(region, machine, form.get("agent_name") or "", form.get("comment") or "")
        if machine["status"] != Status.ALLOCATED:
            raise conflict(f"Can't deploy a machine that is in the '{STATUS_NAMES.get(machine['status'])}' state")
        osystem, series, image = _resolve_os(region, machine, form.get("osystem") or "",
                                             form.get("distro_series") or "")
        machine.update(osystem=osystem, distro_series=series, user_data_b64=base64.b64encode(user_data).decode(),
                       power_state="on", image_path=image["path"] if image else None,
                       image_filetype=image["filetype"] if image else None, ip_addresses=[])
        region.set_status(machine, Status.DEPLOYING, "Deploying")
        region.add_event(machine, "Powering on", _by_admin(form.get("comment")))
        region.data["deploys"].append({
            "system_id": machine["system_id"], "hostname": machine["hostname"], "osystem": osystem,
            "distro_series": series, "agent_name": form.get("agent_name") or "", "comment": form.get("comment") or "",
            "user_data_bytes": len(user_data), "time": time.time()})
        lifecycle.start_deploy(region, machine)
        region.save()
        return Response(200, render_machine(machine, region))


def release(request: Request) -> Response:
    """``POST machines/{id}/?op=release`` (``erase``, ``quick_erase``, ``secure_erase``, ``force``, ``comment``)."""
    form = request.form()
    flags = {name: form.get_bool(name) for name in ("erase", "quick_erase", "secure_erase", "force")}
    comment = form.get("comment") or ""
    region = request.region
    with region.lock:
        machine = _machine(request)
        status = machine["status"]
        if status in (Status.READY, Status.RELEASING):
            return Response(200, render_machine(machine, region))  # MAAS: already released, a retried call succeeds
        if status not in RELEASABLE:
            raise conflict(f"Machine cannot be released in its current state ('{STATUS_NAMES.get(status)}').")
        region.data["releases"].append({"system_id": machine["system_id"], "hostname": machine["hostname"],
                                        "from_status": STATUS_NAMES.get(status), **flags, "comment": comment,
                                        "time": time.time()})
        machine["last_release"] = {**flags, "comment": comment}
        if comment:
            region.add_event(machine, "User releasing node", _by_admin(comment))
        knobs = region.knobs.snapshot()
        lifecycle.release_machine(region, machine, erase=flags["erase"],
                                  delay=knobs.erase_delay_s if flags["erase"] else knobs.release_delay_s)
        region.save()
        return Response(200, render_machine(machine, region))


def power_on(request: Request) -> Response:
    """``POST machines/{id}/?op=power_on``: 409 unless the machine is allocated."""
    with request.region.lock:
        machine = _machine(request)
        if machine["owner"] is None:
            raise conflict("Can't start node: it hasn't been allocated.")
        machine["power_state"] = "on"
        request.region.add_event(machine, "Powering on", _by_admin(request.form().get("comment")))
        request.region.save()
        return Response(200, render_machine(machine, request.region))


def power_off(request: Request) -> Response:
    """``POST machines/{id}/?op=power_off`` (``stop_mode`` accepted)."""
    with request.region.lock:
        machine = _machine(request)
        lifecycle.run_release_hook(request.region, machine)
        machine["power_state"] = "off"
        request.region.add_event(machine, "Powering off", _by_admin(request.form().get("comment")))
        request.region.save()
        return Response(200, render_machine(machine, request.region))


def query_power_state(request: Request) -> Response:
    """``GET machines/{id}/?op=query_power_state``: ``{"state": "on"|"off"}``."""
    with request.region.lock:
        return Response(200, {"state": _machine(request)["power_state"]})


def power_parameters(request: Request) -> Response:
    """``GET machines/{id}/?op=power_parameters``: the BMC parameters as configured (passwords included)."""
    with request.region.lock:
        return Response(200, dict(_machine(request)["power_parameters"]))


def register(router: Router) -> None:
    """Add this module's routes."""
    router.add("GET", MACHINES, list_machines)
    router.add("POST", MACHINES, allocate, op="allocate")
    router.add("GET", MACHINE, read_machine)
    router.add("POST", MACHINE, deploy, op="deploy")
    router.add("POST", MACHINE, release, op="release")
    router.add("POST", MACHINE, power_on, op="power_on")
    router.add("POST", MACHINE, power_off, op="power_off")
    router.add("GET", MACHINE, query_power_state, op="query_power_state")
    router.add("GET", MACHINE, power_parameters, op="power_parameters")
