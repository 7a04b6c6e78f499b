"""Timed transitions: Deploying → Deployed / Failed deployment (optionally through an on-deploy hook), and
Releasing / Disk erasing → Ready. Each runs in a background thread that gives up when the machine moved on
(``seq`` changed: released, redeployed)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from .region import Region, Status

__all__ = ["cancel", "release_machine", "resume", "start_deploy"]


def cancel(region: Region, sid: str) -> None:
    """Stop whatever runs for a machine (deploy worker, release timer, on-deploy hook; hold ``region.lock``)."""
    previous = region.cancels.pop(sid, None)
    if previous is not None:
        previous.set()
    process = region.hook_processes.pop(sid, None)
    if process is not None and process.poll() is None:
        process.kill()
    machine = region.machine(sid)
    if machine is not None:
        machine["deploy_seq"] += 1


def _new_seq(region: Region, machine: dict[str, Any]) -> tuple[int, threading.Event]:
    """Cancel whatever ran for the machine and start a new operation (hold ``region.lock``)."""
    cancel(region, machine["system_id"])
    event = threading.Event()
    region.cancels[machine["system_id"]] = event
    return machine["deploy_seq"], event


def _current(region: Region, sid: str, seq: int, status: int) -> dict[str, Any] | None:
    machine = region.machine(sid)
    if machine is None or machine["deploy_seq"] != seq or machine["status"] != status:
        return None
    return machine


def start_deploy(region: Region, machine: dict[str, Any]) -> None:
    """Start the Deploying → Deployed/Failed worker for ``machine`` (already Deploying; hold ``region.lock``)."""
    seq, stop = _new_seq(region, machine)
    machine["deploy_started"] = time.time()
    threading.Thread(target=_deploy_worker, args=(region, machine["system_id"], seq, stop),
                     name=f"deploy-{machine['system_id']}", daemon=True).start()


def _hook_env(region: Region, machine: dict[str, Any], work: Path) -> dict[str, str]:
    work.mkdir(parents=True, exist_ok=True)
    user_data = work / "user-data"
    fd = os.open(user_data, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(base64.b64decode(machine["user_data_b64"] or ""))
    hook = region.config.on_deploy
    env = dict(os.environ)
    env.update(hook.env if hook else {})
    env.update({
        "MAAS_SIM_SYSTEM_ID": machine["system_id"], "MAAS_SIM_HOSTNAME": machine["hostname"],
        "MAAS_SIM_OSYSTEM": machine["osystem"], "MAAS_SIM_DISTRO_SERIES": machine["distro_series"],
        "MAAS_SIM_ARCHITECTURE": machine["architecture"], "MAAS_SIM_USER_DATA_FILE": str(user_data),
        "MAAS_SIM_IMAGE_FILE": machine.get("image_path") or "", "MAAS_SIM_IMAGE_FILETYPE":
        machine.get("image_filetype") or "", "MAAS_SIM_ADDRESS": machine["address"] or "",
        "MAAS_SIM_MACS": ",".join(machine["macs"]), "MAAS_SIM_RESULT_FILE": str(work / "result.json"),
        "MAAS_SIM_STATE_DIR": str(region.state_dir),
    })
    return env


def _run_hook(region: Region, sid: str, seq: int, stop: threading.Event) -> tuple[bool, str, list[str] | None]:
    """Run the on-deploy hook; (succeeded, status message, ip addresses from its result file or ``None``)."""
    hook = region.config.on_deploy
    assert hook is not None
    work = region.hooks_dir / f"{sid}-{seq}"
    with region.lock:
        machine = _current(region, sid, seq, Status.DEPLOYING)
        if machine is None:
            return False, "", None
        env = _hook_env(region, machine, work)
        with open(region.hooks_dir / f"{sid}-{seq}.log", "ab") as log:
            process = subprocess.Popen(hook.argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                       cwd=work, start_new_session=True)
        region.hook_processes[sid] = process
    try:
        code = process.wait(hook.timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return False, f"Installation failed: the on-deploy hook ran longer than {hook.timeout_s:.0f}s.", None
    finally:
        with region.lock:
            if region.hook_processes.get(sid) is process:
                del region.hook_processes[sid]
    if stop.is_set():
        return False, "", None
    result: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        loaded = json.loads((work / "result.json").read_text())
        result = loaded if isinstance(loaded, dict) else {}
    ips = result.get("ip_addresses")
    ips = [str(ip) for ip in ips] if isinstance(ips, list) else None
    if code != 0:
        message = str(result.get("status_message") or f"Installation failed (on-deploy hook exited {code}).")
        return False, message, ips
    return True, str(result.get("status_message") or "Deployed"), ips


def _deploy_worker(region: Region, sid: str, seq: int, stop: threading.Event) -> None:
    started = time.monotonic()
    knobs = region.knobs.snapshot()
    with region.lock:
        machine = _current(region, sid, seq, Status.DEPLOYING)
        if machine is None:
            return
        fail = knobs.fail_deploy or sid in knobs.fail_deploy_ids or machine["hostname"] in knobs.fail_deploy_ids
    ok, message, ips = False, knobs.fail_deploy_message, None
    if not fail:
        ok, message, ips = _run_hook(region, sid, seq, stop) if region.config.on_deploy else (True, "Deployed", None)
    if stop.wait(max(0.0, knobs.deploy_delay_s - (time.monotonic() - started))):
        return
    with region.lock:
        machine = _current(region, sid, seq, Status.DEPLOYING)
        if machine is None:
            return
        if ok:
            machine["power_state"] = "on"
            machine["ip_addresses"] = ips if ips is not None else ([machine["address"]] if machine["address"] else [])
            region.set_status(machine, Status.DEPLOYED, message)
        else:
            region.set_status(machine, Status.FAILED_DEPLOYMENT, message)
            region.add_event(machine, "Node installation failure", message, level="ERROR")
        region.cancels.pop(sid, None)
        region.save()


def run_release_hook(region: Region, machine: dict[str, Any]) -> None:
    """The on-release hook (the lab stops the machine's guest), waited for; its failure is logged, not raised."""
    hook = region.config.on_release
    if hook is None:
        return
    env = {**os.environ, **hook.env, "MAAS_SIM_SYSTEM_ID": machine["system_id"],
           "MAAS_SIM_HOSTNAME": machine["hostname"], "MAAS_SIM_STATE_DIR": str(region.state_dir)}  # fmt: skip
    region.hooks_dir.mkdir(parents=True, exist_ok=True)
    with open(region.hooks_dir / f"{machine['system_id']}-release.log", "ab") as log:
        try:
            subprocess.run(hook.argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, timeout=hook.timeout_s,
                           check=False)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.write(f"on_release failed: {type(exc).__name__}\n".encode())


def release_machine(region: Region, machine: dict[str, Any], *, erase: bool, delay: float) -> None:
    """Clear the machine's owner and power it off; Ready now, or after ``delay`` in Releasing / Disk erasing."""
    run_release_hook(region, machine)
    seq, stop = _new_seq(region, machine)
    machine.update(owner=None, agent_name="", comment="", osystem="", distro_series="", user_data_b64=None,
                   ip_addresses=[], power_state="off", image_path=None, image_filetype=None)
    if delay <= 0 and not erase:
        region.set_status(machine, Status.READY)
        region.cancels.pop(machine["system_id"], None)
        return
    status = Status.DISK_ERASING if erase else Status.RELEASING
    region.set_status(machine, status, "Erasing disks" if erase else "Releasing")
    machine["release_until"] = time.time() + delay
    _schedule_ready(region, machine["system_id"], seq, status, delay=delay, stop=stop)


def _schedule_ready(region: Region, sid: str, seq: int, status: int, *, delay: float, stop: threading.Event) -> None:
    def finish() -> None:
        if stop.wait(max(0.0, delay)):
            return
        with region.lock:
            machine = _current(region, sid, seq, status)
            if machine is not None:
                region.set_status(machine, Status.READY)
                region.cancels.pop(sid, None)
                region.save()

    threading.Thread(target=finish, name=f"release-{sid}", daemon=True).start()


def resume(region: Region) -> None:
    """After a restart: restart the workers of machines left Deploying, Releasing or Disk erasing."""
    with region.lock:
        for machine in region.machines.values():
            if machine["status"] == Status.DEPLOYING:
                start_deploy(region, machine)
            elif machine["status"] in (Status.RELEASING, Status.DISK_ERASING):
                seq, stop = _new_seq(region, machine)
                delay = float(machine.get("release_until") or 0) - time.time()
                _schedule_ready(region, machine["system_id"], seq, machine["status"], delay=delay, stop=stop)
