"""MAAS's answers, checked before use: every field read through :class:`_Fields` (a missing or mistyped one is a
:class:`~._errors.MaasProtocolError` naming it), text bounded and cleaned of control characters, secrets wrapped."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from palette_provision.secrets import Secret

from palette_provision_maas._errors import PROVIDER, MaasNotFound, MaasProtocolError

__all__ = [
    "BootFile",
    "BootResource",
    "MaasEvent",
    "MaasUser",
    "MaasVersion",
    "Machine",
    "UploadStatus",
    "clean_text",
    "parse_json",
    "power_parameters_of",
]

# ----------------------------------------------------------------------------------------------- answer shapes
_SENSITIVE = re.compile(r"pass|secret|token|_key$|^key$|k_g|community|private", re.IGNORECASE)


def clean_text(value: Any, limit: int = 300) -> str:
    """Remote text as data: a JSON ``{field: [messages]}`` flattened, control characters dropped, whitespace
    collapsed, at most ``limit`` characters. Never a ``repr``."""
    if isinstance(value, httpx.Response):
        try:
            value = value.json()
        except (ValueError, RecursionError):
            value = value.text[: limit * 4]
    if isinstance(value, dict):
        value = "; ".join(f"{k}: {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in value.items())
    elif isinstance(value, list):
        value = " ".join(map(str, value))
    text = " ".join("".join(c if c.isprintable() else " " for c in str(value)[: limit * 4]).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Fields:
    """Typed access to one JSON object of an answer; a wrong shape is a :class:`MaasProtocolError`."""

    def __init__(self, data: Any, what: str) -> None:
        if not isinstance(data, dict):
            raise MaasProtocolError(f"MAAS answered a {what} that is not a JSON object", provider=PROVIDER)
        self.data, self.what = data, what

    def _bad(self, key: str, kind: str) -> MaasProtocolError:
        return MaasProtocolError(f"MAAS answered a {self.what} whose '{key}' is not {kind}", provider=PROVIDER)

    def text(self, key: str, default: str | None = None, limit: int = 500) -> str:
        value = self.data.get(key, default)
        if value is None and default is not None:
            value = default
        if not isinstance(value, str):
            raise self._bad(key, "a string")
        return clean_text(value, limit)

    def opt_text(self, key: str) -> str | None:
        return None if self.data.get(key) is None else self.text(key)

    def integer(self, key: str, default: int | None = None) -> int:
        value = self.data.get(key)
        value = default if value is None else value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(key, "an integer")
        return value

    def number(self, key: str, default: float) -> float:
        value = self.data.get(key)
        value = default if value is None else value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._bad(key, "a number")
        return float(value)

    def flag(self, key: str) -> bool:
        value = self.data.get(key)
        if not isinstance(value, bool):
            raise self._bad(key, "a boolean")
        return value

    def texts(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key)
        value = [] if value is None else value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._bad(key, "a list of strings")
        return tuple(clean_text(v, 200) for v in value)

    def name_of(self, key: str) -> str:
        value = self.data.get(key)
        return "" if value is None else _Fields(value, f"{self.what}'s {key}").text("name")

    def objects(self, key: str) -> list[Any]:
        value = self.data.get(key)
        value = [] if value is None else value
        if isinstance(value, dict):
            value = list(value.values())
        if not isinstance(value, list):
            raise self._bad(key, "a list")
        return value


def parse_json(response: httpx.Response, what: str, url: str) -> Any:
    """The decoded JSON answer (``None`` for an empty one)."""
    if not response.content:
        return None
    try:
        return response.json()
    except (ValueError, RecursionError) as exc:
        raise MaasProtocolError(f"MAAS at {url}: {what} answered something that is not JSON",
                                provider=PROVIDER) from exc


@dataclass(frozen=True)
class Machine:
    """A machine as ``GET machines/`` shows it (the fields we use). ``memory`` MiB, ``storage`` MB."""

    system_id: str
    hostname: str
    fqdn: str
    status: int
    status_name: str
    status_message: str
    power_state: str
    power_type: str
    architecture: str
    cpu_count: int
    memory: int
    storage: float
    tag_names: tuple[str, ...]
    zone: str
    pool: str
    ip_addresses: tuple[str, ...]
    mac_addresses: tuple[str, ...]
    owner: str | None
    osystem: str
    distro_series: str

    @classmethod
    def parse(cls, data: Any) -> Machine:
        """Check and convert one machine object."""
        f = _Fields(data, "machine")
        macs = tuple(_Fields(i, "machine interface").text("mac_address") for i in f.objects("interface_set"))
        return cls(
            system_id=f.text("system_id", limit=64), hostname=f.text("hostname", limit=255),
            fqdn=f.text("fqdn", default=""), status=f.integer("status"), status_name=f.text("status_name", limit=60),
            status_message=f.text("status_message", default=""), power_state=f.text("power_state", default="unknown"),
            power_type=f.text("power_type", default=""), architecture=f.text("architecture", default=""),
            cpu_count=f.integer("cpu_count", 0), memory=f.integer("memory", 0), storage=f.number("storage", 0.0),
            tag_names=f.texts("tag_names"), zone=f.name_of("zone"), pool=f.name_of("pool"),
            ip_addresses=f.texts("ip_addresses"), mac_addresses=macs, owner=f.opt_text("owner"),
            osystem=f.text("osystem", default=""), distro_series=f.text("distro_series", default=""),
        )


@dataclass(frozen=True)
class MaasEvent:
    """One event of ``events/?op=query`` (texts cleaned, bounded)."""

    id: int
    type: str
    description: str
    level: str
    created: str
    node: str | None

    @classmethod
    def parse(cls, data: Any) -> MaasEvent:
        """Check and convert one event object."""
        f = _Fields(data, "event")
        return cls(id=f.integer("id"), type=f.text("type", default=""), description=f.text("description", default=""),
                   level=f.text("level", default=""), created=f.text("created", default=""), node=f.opt_text("node"))


@dataclass(frozen=True)
class MaasVersion:
    """``GET version/``."""

    version: str
    subversion: str
    capabilities: tuple[str, ...]

    @classmethod
    def parse(cls, data: Any) -> MaasVersion:
        """Check and convert the version object."""
        f = _Fields(data, "version")
        return cls(f.text("version"), f.text("subversion", default=""), f.texts("capabilities"))


@dataclass(frozen=True)
class MaasUser:
    """``GET users/?op=whoami``."""

    username: str
    is_superuser: bool

    @classmethod
    def parse(cls, data: Any) -> MaasUser:
        """Check and convert the user object."""
        f = _Fields(data, "user")
        return cls(f.text("username"), f.flag("is_superuser"))


@dataclass(frozen=True)
class UploadStatus:
    """How much of an uploaded file MAAS holds."""

    received: int
    size: int
    complete: bool


@dataclass(frozen=True)
class BootFile:
    """A file of a boot resource set. ``upload_uri`` and ``progress`` only while incomplete (MAAS shows them so)."""

    filename: str
    filetype: str
    sha256: str
    size: int
    complete: bool
    progress: float | None
    upload_uri: str | None

    @property
    def received(self) -> int:
        """Bytes MAAS holds: ``size`` when complete, else from ``progress`` (100 * received / size)."""
        if self.complete:
            return self.size
        return max(0, min(self.size, round((self.progress or 0.0) * self.size / 100.0)))

    @classmethod
    def parse(cls, data: Any) -> BootFile:
        """Check and convert one file object."""
        f = _Fields(data, "boot resource file")
        progress = None if f.data.get("progress") is None else f.number("progress", 0.0)
        return cls(f.text("filename"), f.text("filetype", default=""), f.text("sha256", limit=64), f.integer("size"),
                   f.flag("complete"), progress, f.opt_text("upload_uri"))


@dataclass(frozen=True)
class BootResource:
    """A boot resource; ``sets`` (newest first) maps a version to its files (empty when listed without them)."""

    id: int
    type: str
    name: str
    architecture: str
    title: str
    sets: tuple[tuple[str, bool, tuple[BootFile, ...]], ...]

    @property
    def complete(self) -> bool:
        """True when the newest set is complete."""
        return bool(self.sets) and self.sets[0][1]

    @property
    def files(self) -> tuple[BootFile, ...]:
        """The files of the newest set."""
        return self.sets[0][2] if self.sets else ()

    def upload_status(self, upload_path: str) -> UploadStatus:
        """The status of the file behind ``upload_path`` (MAAS drops the URI once the file is complete)."""
        for rfile in self.files:
            if rfile.upload_uri is not None and urlsplit(rfile.upload_uri).path == upload_path:
                return UploadStatus(rfile.received, rfile.size, False)
        complete = [f for f in self.files if f.complete]
        if complete and len(complete) == len(self.files):
            return UploadStatus(complete[0].size, complete[0].size, True)
        raise MaasNotFound(f"boot resource {self.id} has no file to upload at that URI any more", status=404,
                           text="", resource=self.name)

    @classmethod
    def parse(cls, data: Any) -> BootResource:
        """Check and convert one boot resource object."""
        f = _Fields(data, "boot resource")
        sets = []
        for item in f.objects("sets"):
            s = _Fields(item, "boot resource set")
            files = tuple(BootFile.parse(x) for x in s.objects("files"))
            sets.append((s.text("version", limit=40), s.flag("complete"), files))
        sets.sort(key=lambda entry: [int(p) if p.isdigit() else 0 for p in entry[0].split(".")], reverse=True)
        return cls(f.integer("id"), f.text("type", default=""), f.text("name"), f.text("architecture", default=""),
                   f.text("title", default=""), tuple(sets))


def power_parameters_of(answer: Any, system_id: str, url: str) -> dict[str, Any]:
    """Power parameters with passwords, keys and tokens wrapped as :class:`Secret`; scalars only."""
    if not isinstance(answer, dict):
        raise MaasProtocolError(f"MAAS at {url}: power_parameters answered no object", provider=PROVIDER)
    result: dict[str, Any] = {}
    for key, value in answer.items():
        if not isinstance(key, str) or not (value is None or isinstance(value, (str, int, float, bool))):
            raise MaasProtocolError(f"MAAS at {url}: power_parameters of {system_id} hold a non-scalar value",
                                    provider=PROVIDER)
        if _SENSITIVE.search(key) and value not in (None, ""):
            result[key] = Secret(str(value), source=f"maas:{system_id}:power_parameters.{key}")
        else:
            result[key] = value
    return result
