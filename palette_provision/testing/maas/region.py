"""The simulated region's state: machines, events, boot resources, call history; kept in ``<state-dir>/state.json``.

Every change is written at once (atomically), so a simulator restarted on the same state dir keeps its machines,
allocations and uploads. Handlers hold :attr:`Region.lock` while they read or change :attr:`Region.data`.
"""

from __future__ import annotations

import collections
import copy
import hashlib
import json
import os
import secrets
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from .config import MaasConfig
from .knobs import KnobBox
from .oauth import ApiKey, NonceStore

__all__ = ["STATUS_NAMES", "Region", "Status"]


class Status:
    """MAAS node status codes (``NODE_STATUS``)."""

    NEW = 0
    COMMISSIONING = 1
    READY = 4
    DEPLOYED = 6
    BROKEN = 8
    DEPLOYING = 9
    ALLOCATED = 10
    FAILED_DEPLOYMENT = 11
    RELEASING = 12
    FAILED_RELEASING = 13
    DISK_ERASING = 14
    FAILED_DISK_ERASING = 15


STATUS_NAMES = {
    0: "New", 1: "Commissioning", 2: "Failed commissioning", 3: "Missing", 4: "Ready", 5: "Reserved",
    6: "Deployed", 7: "Retired", 8: "Broken", 9: "Deploying", 10: "Allocated", 11: "Failed deployment",
    12: "Releasing", 13: "Releasing failed", 14: "Disk erasing", 15: "Failed disk erasing", 16: "Rescue mode",
    17: "Entering rescue mode", 18: "Failed to enter rescue mode", 19: "Exiting rescue mode",
    20: "Failed to exit rescue mode", 21: "Testing", 22: "Failed testing",
}

MAX_EVENTS = 2000
EVENT_TIME = "%a, %d %b. %Y %H:%M:%S"


def _new_api_key() -> str:
    # MAAS keys: an 18-character consumer key, an 18-character token key, a 32-character token secret.
    def part(n: int) -> str:
        return "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghjkmnpqrstuvwxyz23456789") for _ in range(n))

    return f"{part(18)}:{part(18)}:{part(32)}"


def _synced_image() -> dict[str, Any]:
    """The one synced image a fresh region has (Ubuntu 24.04), so listings look like a real region's."""
    sha = hashlib.sha256(b"ubuntu/noble squashfs").hexdigest()
    files = [{"id": 1, "filename": "squashfs", "filetype": "squashfs", "sha256": sha, "size": 1, "received": 1,
              "complete": True, "path": None}]
    return {"id": 1, "type": "Synced", "name": "ubuntu/noble", "architecture": "amd64/ga-24.04", "title": "",
            "subarches": "generic,ga-24.04", "base_image": "", "sets": [{"version": "20250101", "label": "stable",
                                                                        "files": files}]}


def _fresh_data(config: MaasConfig) -> dict[str, Any]:
    return {
        "machines": {m["system_id"]: copy.deepcopy(m) for m in config.machines},
        "events": [], "next_event_id": 1,
        "boot_resources": {"1": _synced_image()}, "next_resource_id": 100, "next_file_id": 1000,
        "allocations": {}, "allocation_log": [], "dry_runs": 0, "deploys": [], "releases": [],
        "uploads": {"puts": 0, "bytes": 0, "dropped": 0, "sha_mismatches": 0, "completed": 0},
    }


class Region:
    """One simulated MAAS region (state + knobs + credentials)."""

    def __init__(self, config: MaasConfig, state_dir: Path, *, knobs: dict[str, Any] | None = None,
                 api_key: str | None = None) -> None:
        self.config = config
        self.state_dir = state_dir
        self.state_file = state_dir / "state.json"
        self.images_dir = state_dir / "images"
        self.tmp_dir = state_dir / "tmp"
        self.hooks_dir = state_dir / "hooks"
        for folder in (self.images_dir, self.tmp_dir, self.hooks_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        #: Held for a whole upload PUT (one chunk stored at a time).
        self.upload_lock = threading.Lock()
        self.knobs = KnobBox(knobs)
        self.nonces = NonceStore()
        self.requests: collections.Counter[str] = collections.Counter()
        self.auth_failures: collections.Counter[str] = collections.Counter()
        #: Per machine: set to cancel its running deploy / release timer; its on-deploy hook process, if running.
        self.cancels: dict[str, threading.Event] = {}
        self.hook_processes: dict[str, subprocess.Popen[bytes]] = {}
        self.data: dict[str, Any] = self._load()
        key_text = api_key or config.api_key or self.data.get("api_key") or _new_api_key()
        self.api_key = ApiKey.parse(key_text)
        self.data["api_key"] = str(self.api_key)
        self.save()

    # ------------------------------------------------------------------------------------------ persistence
    def _load(self) -> dict[str, Any]:
        if not self.state_file.exists():
            return _fresh_data(self.config)
        data: dict[str, Any] = json.loads(self.state_file.read_text())
        for machine in self.config.machines:  # machines added to the config since the state was written
            known = {m["hostname"] for m in data["machines"].values()}
            if machine["system_id"] not in data["machines"] and machine["hostname"] not in known:
                data["machines"][machine["system_id"]] = copy.deepcopy(machine)
        return data

    def save(self) -> None:
        """Write the state atomically (call with :attr:`lock` held, or before serving)."""
        with self.lock:
            tmp = self.state_file.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(self.data, handle)
            os.replace(tmp, self.state_file)

    def reset(self) -> None:
        """Back to the configuration's machines; history, events and uploads forgotten (the API key is kept)."""
        with self.lock:
            for path in self.images_dir.iterdir():
                path.unlink(missing_ok=True)
            api_key = self.data["api_key"]
            self.data = _fresh_data(self.config)
            self.data["api_key"] = api_key
            self.requests.clear()
            self.auth_failures.clear()
            self.save()

    # ------------------------------------------------------------------------------------------ helpers
    @property
    def machines(self) -> dict[str, dict[str, Any]]:
        """Machines by system id (hold :attr:`lock`)."""
        machines: dict[str, dict[str, Any]] = self.data["machines"]
        return machines

    def machine(self, system_id: str) -> dict[str, Any] | None:
        """The machine record, or ``None``."""
        return self.machines.get(system_id)

    def count_request(self, key: str) -> None:
        """Count one API request (``METHOD path[?op=x]``)."""
        with self.lock:
            self.requests[key] += 1

    def count_auth_failure(self, reason: str) -> None:
        """Count one refused Authorization header, by reason."""
        with self.lock:
            self.auth_failures[reason[:120]] += 1

    def add_event(self, machine: dict[str, Any], kind: str, description: str, level: str = "INFO") -> None:
        """Append an event about ``machine`` (hold :attr:`lock`)."""
        event_id = self.data["next_event_id"]
        self.data["next_event_id"] = event_id + 1
        self.data["events"].append({
            "username": self.config.username if machine.get("owner") else "unknown",
            "node": machine["system_id"], "hostname": machine["hostname"], "id": event_id, "level": level,
            "created": time.strftime(EVENT_TIME, time.gmtime()), "type": kind, "description": description,
        })
        del self.data["events"][:-MAX_EVENTS]

    def set_status(self, machine: dict[str, Any], status: int, message: str = "") -> None:
        """Move ``machine`` to ``status`` with MAAS's ``Node changed status`` event (hold :attr:`lock`)."""
        old = machine["status"]
        machine["status"] = status
        machine["status_message"] = message
        if old != status:
            self.add_event(machine, "Node changed status",
                           f"From '{STATUS_NAMES.get(old, old)}' to '{STATUS_NAMES.get(status, status)}'")
