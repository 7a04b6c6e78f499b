"""The simulator's configuration file (JSON): the region's machines, its user, and the on-deploy hook.

::

    {
      "api_key": "ck:tk:ts",            # optional (else $MAAS_SIM_API_KEY, else kept from the state dir, else new)
      "username": "admin",
      "version": "3.5.4",
      "tags": ["spare"], "zones": ["default", "lab"], "pools": ["default", "palette"],   # extra known names
      "machines": [
        {"hostname": "node1", "system_id": "abc123", "architecture": "amd64/generic", "cpu_count": 4,
         "memory": 8192, "disks": [100], "tags": ["palette"], "zone": "default", "pool": "default",
         "mac": "52:54:00:00:00:11", "address": "10.251.0.11",
         "power_type": "redfish", "power_parameters": {"power_address": "https://10.252.1.2:8000",
                                                      "power_user": "admin", "power_pass": "...", "node_id": "..."}}
      ],
      "on_deploy": {"argv": ["/path/boot-guest", "--flag"], "timeout_s": 900, "env": {"EXTRA": "1"}},
      "on_release": {"argv": ["/path/stop-guest"], "timeout_s": 30}     # run (waited for) when a machine is
    }                                                                   # released or powered off

Aliases: ``arch`` for ``architecture``, ``cpu`` for ``cpu_count``, ``macs`` (a list) for ``mac``, ``storage`` (MB) for
``disks`` (GB). Everything but ``hostname`` has a default.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DeployHook", "MaasConfig", "machine_from_config", "system_id_for"]

HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
SYSTEM_ID = re.compile(r"^[a-z0-9]{1,16}$")
ALPHABET = "abcdefghjkmnpqrstuvwxy0123456789"


@dataclass(frozen=True)
class DeployHook:
    """A command run when a machine enters Deploying (see the README for its environment)."""

    argv: list[str]
    timeout_s: float = 900.0
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class MaasConfig:
    """The parsed configuration file."""

    api_key: str | None = None
    username: str = "admin"
    version: str = "3.5.4"
    tags: list[str] = field(default_factory=list)
    zones: list[str] = field(default_factory=lambda: ["default"])
    pools: list[str] = field(default_factory=lambda: ["default"])
    machines: list[dict[str, Any]] = field(default_factory=list)
    on_deploy: DeployHook | None = None
    on_release: DeployHook | None = None

    @classmethod
    def from_json(cls, data: Any) -> MaasConfig:
        """Build from the decoded JSON (``ValueError`` naming the first problem)."""
        if not isinstance(data, dict):
            raise ValueError("the configuration must be a JSON object")
        known = {"api_key", "username", "version", "tags", "zones", "pools", "machines", "on_deploy", "on_release"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown configuration keys: {unknown}")
        config = cls(api_key=_opt_str(data, "api_key"), username=str(data.get("username", "admin")),
                     version=str(data.get("version", "3.5.4")), tags=_str_list(data, "tags"))
        config.zones = sorted({"default", *_str_list(data, "zones")})
        config.pools = sorted({"default", *_str_list(data, "pools")})
        machines = data.get("machines", [])
        if not isinstance(machines, list):
            raise ValueError("machines must be a list")
        seen: set[str] = set()
        for index, entry in enumerate(machines):
            machine = machine_from_config(entry, where=f"machines[{index}]")
            for key in (machine["hostname"], machine["system_id"]):
                if key in seen:
                    raise ValueError(f"machines[{index}]: {key} appears twice")
                seen.add(key)
            config.machines.append(machine)
        config.on_deploy = _hook(data, "on_deploy")
        config.on_release = _hook(data, "on_release")
        return config


def _hook(data: Mapping[str, Any], key: str) -> DeployHook | None:
    hook = data.get(key)
    if hook is None:
        return None
    if not isinstance(hook, dict) or not isinstance(hook.get("argv"), list) or not hook["argv"] or not all(
        isinstance(a, str) for a in hook["argv"]
    ):
        raise ValueError(f"{key} must be {{argv: [str, ...], timeout_s?, env?}}")
    env = hook.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise ValueError(f"{key}.env must map names to strings")
    return DeployHook(list(hook["argv"]), float(hook.get("timeout_s", 900.0)), dict(env))


def system_id_for(hostname: str) -> str:
    """A stable six-character system id derived from the hostname (MAAS ids look like ``d8n3re``)."""
    digest = hashlib.sha256(hostname.encode()).digest()
    return "".join(ALPHABET[b % len(ALPHABET)] for b in digest[:6])


def _opt_str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    return value


def _str_list(data: Mapping[str, Any], name: str) -> list[str]:
    value = data.get(name, [])
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{name} must be a list of non-empty strings")
    return list(value)


def _number(data: Mapping[str, Any], names: tuple[str, ...], default: float, where: str) -> float:
    for name in names:
        if name in data:
            value = data[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{where}.{name} must be a non-negative number")
            return float(value)
    return default


def machine_from_config(entry: Any, *, where: str = "machine") -> dict[str, Any]:
    """Validate one machine entry and return the simulator's internal record (a Ready machine)."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be an object")
    hostname = entry.get("hostname")
    if not isinstance(hostname, str) or not HOSTNAME.match(hostname):
        raise ValueError(f"{where}.hostname must be a DNS label")
    system_id = entry.get("system_id") or system_id_for(hostname)
    if not isinstance(system_id, str) or not SYSTEM_ID.match(system_id):
        raise ValueError(f"{where}.system_id must be 1-16 lower-case letters or digits")
    arch = str(entry.get("architecture") or entry.get("arch") or "amd64/generic")
    if "/" not in arch:
        arch += "/generic"
    if "disks" in entry:
        disks = entry["disks"]
        if not isinstance(disks, list) or not all(isinstance(d, (int, float)) and d > 0 for d in disks):
            raise ValueError(f"{where}.disks must be a list of sizes in GB")
        disks = [float(d) for d in disks]
    else:
        disks = [_number(entry, ("storage",), 100000.0, where) / 1000.0]
    macs = entry.get("macs") or ([entry["mac"]] if entry.get("mac") else [])
    if not macs:
        digest = hashlib.sha256(hostname.encode()).digest()
        macs = ["52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])]
    if not all(isinstance(m, str) and re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", m.lower()) for m in macs):
        raise ValueError(f"{where}.mac must be MAC addresses aa:bb:cc:dd:ee:ff")
    address = entry.get("address")
    if address is not None and not isinstance(address, str):
        raise ValueError(f"{where}.address must be a string")
    power = entry.get("power_parameters", {})
    if not isinstance(power, dict):
        raise ValueError(f"{where}.power_parameters must be an object")
    status = entry.get("status", 4)
    if isinstance(status, bool) or not isinstance(status, int):
        raise ValueError(f"{where}.status must be a MAAS status code")
    return {
        "system_id": system_id, "hostname": hostname, "domain": str(entry.get("domain", "maas")),
        "architecture": arch, "cpu_count": int(_number(entry, ("cpu_count", "cpu"), 4, where)),
        "memory": int(_number(entry, ("memory",), 8192, where)), "disks": disks,
        "tags": _str_list(entry, "tags"), "zone": str(entry.get("zone", "default")),
        "pool": str(entry.get("pool", "default")), "macs": [m.lower() for m in macs], "address": address,
        "power_type": str(entry.get("power_type", "manual")), "power_parameters": dict(power),
        "status": status, "status_message": "", "power_state": "off", "owner": None, "agent_name": "",
        "comment": "", "osystem": "", "distro_series": "", "user_data_b64": None, "ip_addresses": [],
        "deploy_seq": 0, "deploy_started": None, "image_path": None, "last_release": None,
    }
