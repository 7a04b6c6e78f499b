"""The fake platform's machines: one JSON file shared by processes, and how a machine behaves over time.

A machine dict holds its power (``power``, and ``target`` taking effect at ``effective_at``), its virtual-media
``slots`` (slot name -> ``{"locator", "role"}`` or ``None``), its boot device (``boot``, ``boot_once``), and what
it did: ``installs``,
``booted_from``, ``powered_on_at``; an allocated one also its ``owner``, ``agent_name`` and ``deploy`` state.

Like the appliance: powered on from a CD holding the appliance ISO, it "installs" for ``install_seconds`` and
powers itself off; from disk it stays up. A one-time boot override is used up by the boot it applies to.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["advance", "platform_state", "read_state", "slot_names"]


def read_state(path: Path) -> dict[str, Any]:
    """Read a fake platform's state: ``machines`` (created, by node), ``servers`` (enrolled, by BMC), ``pool``
    (allocatable, by id), ``media`` and the ``actions`` log."""
    state: dict[str, Any] = {"machines": {}, "servers": {}, "pool": {}, "media": {}, "actions": []}
    if path.exists():
        state.update(json.loads(path.read_text()))
    return state


@contextmanager
def platform_state(path: Path) -> Iterator[dict[str, Any]]:
    """The state, locked against other processes, written back atomically when the block ends without error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "w") as lock_fh:
        fcntl.flock(lock_fh, fcntl.LOCK_EX)
        state = read_state(path)
        yield state
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
        os.replace(tmp, path)


def slot_names(lifecycle: str) -> list[str]:
    """A VM has two CD drives; a BMC one virtual CD and one removable disk (as Redfish BMCs usually do)."""
    return ["cd0", "cd1"] if lifecycle == "created" else ["cd0", "usb0"]


def new_machine(mid: str, lifecycle: str, mac: str, **extra: Any) -> dict[str, Any]:
    """A powered-off machine with empty slots, booting from disk."""
    return {
        "id": mid,
        "lifecycle": lifecycle,
        "mac": mac,
        "power": "off",
        "target": "off",
        "effective_at": 0.0,
        "slots": {name: None for name in slot_names(lifecycle)},
        "boot": "disk",
        "boot_once": False,
        "powered_on_at": None,
        "booted_from": None,
        "installs": 0,
        **extra,
    }


def _boots_cd(m: dict[str, Any]) -> bool:
    holds_iso = any(v is not None and v["role"] != "seed" for k, v in m["slots"].items() if k.startswith("cd"))
    return bool(m["boot"] == "cd" and holds_iso)


def advance(m: dict[str, Any], *, install_seconds: float, installs: bool, now: float | None = None) -> None:
    """Apply a pending power change and the install cycle, as time passed."""
    now = time.time() if now is None else now
    if m["target"] != m["power"] and now >= m["effective_at"]:
        m["power"] = m["target"]
        if m["power"] == "on":
            m["powered_on_at"] = m["effective_at"]
            m["booted_from"] = "cd" if _boots_cd(m) else "disk"
            if m.get("boot_once"):
                m["boot"], m["boot_once"] = m.get("boot_default", "disk"), False
    installing = m["power"] == "on" and m["booted_from"] == "cd" and installs
    if installing and now - m["powered_on_at"] >= install_seconds:
        m["power"] = m["target"] = "off"
        m["installs"] += 1
