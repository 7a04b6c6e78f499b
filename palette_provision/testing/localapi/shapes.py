"""Strict request-shape checking against the published schemas (closed objects, exact types).

A tiny schema language: :class:`Obj` (closed object with typed fields and required names),
:class:`Arr`, :class:`Map`, :class:`Enum` and the scalars :data:`STR`, :data:`BOOL`, :data:`INT`,
:data:`ANY`. :func:`check` returns every violation as ``"<dotted.path>: <problem>"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import bad_request


@dataclass(frozen=True)
class Scalar:
    """A JSON scalar type: ``string``, ``boolean``, ``integer`` or ``any``."""

    kind: str


@dataclass(frozen=True)
class Enum:
    """A string restricted to ``values``."""

    values: tuple[str, ...]


@dataclass(frozen=True)
class Arr:
    """An array of ``item``."""

    item: Spec


@dataclass(frozen=True)
class Map:
    """An object with free keys and values of type ``value``."""

    value: Spec


@dataclass(frozen=True)
class Obj:
    """A closed object: only ``fields`` are allowed, ``required`` must be present."""

    fields: dict[str, Spec]
    required: tuple[str, ...] = field(default=())


Spec = Scalar | Enum | Arr | Map | Obj
STR, BOOL, INT, ANY = Scalar("string"), Scalar("boolean"), Scalar("integer"), Scalar("any")


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(value), type(value).__name__)


def check(value: Any, spec: Spec, path: str) -> list[str]:
    """Return the shape violations of ``value`` against ``spec`` (empty list when it conforms)."""
    where = path or "body"
    if isinstance(spec, Scalar):
        if spec.kind == "any":
            return []
        ok = {
            "string": isinstance(value, str),
            "boolean": isinstance(value, bool),
            "integer": isinstance(value, int) and not isinstance(value, bool),
        }[spec.kind]
        return [] if ok else [f"{where}: must be {spec.kind}, got {_type_name(value)}"]
    if isinstance(spec, Enum):
        if not isinstance(value, str) or value not in spec.values:
            return [f"{where}: must be one of {list(spec.values)}, got {value!r}"]
        return []
    if isinstance(spec, Arr):
        if not isinstance(value, list):
            return [f"{where}: must be array, got {_type_name(value)}"]
        errors: list[str] = []
        for index, item in enumerate(value):
            errors += check(item, spec.item, f"{path}[{index}]")
        return errors
    if not isinstance(value, dict):
        return [f"{where}: must be object, got {_type_name(value)}"]
    if isinstance(spec, Map):
        errors = []
        for key, item in value.items():
            errors += check(item, spec.value, f"{path}.{key}" if path else key)
        return errors
    errors = []
    prefix = f"{path}." if path else ""
    for name in spec.required:
        if name not in value:
            errors.append(f"{prefix}{name}: is required")
    for key, item in value.items():
        if key not in spec.fields:
            errors.append(f"{prefix}{key}: unknown field (allowed: {sorted(spec.fields)})")
        else:
            errors += check(item, spec.fields[key], f"{prefix}{key}")
    return errors


def require(body: Any, spec: Spec) -> None:
    """Raise a 400 naming the first offending field when ``body`` does not match ``spec``."""
    errors = check(body, spec, "")
    if errors:
        raise bad_request(errors[0], field=errors[0].split(":", 1)[0], errors=errors)


META = Obj({"id": STR, "name": STR, "creationTimestamp": STR, "lastModifiedTimestamp": STR,
            "labels": Map(STR), "tags": Map(ANY)})
OBJECT_META = Obj({"name": STR, "namespace": STR, "uid": STR, "resourceVersion": STR,
                   "selfLink": STR, "annotations": Map(STR), "labels": Map(STR),
                   "creationTimestamp": STR, "deletionTimestamp": STR,
                   "lastModifiedTimestamp": STR})
NIC = Obj({"nicName": STR, "macAddr": STR, "ip": STR, "subnet": STR, "gateway": STR,
           "dns": Arr(STR), "isDefault": BOOL})
HEALTH = Obj({"status": Enum(("Healthy", "Unhealthy")), "reason": STR})
CONDITION = Obj({"type": STR, "status": STR, "reason": STR, "message": STR,
                 "lastProbeTime": STR, "lastTransitionTime": STR}, ("type", "status"))
NODE_INFO = Obj({"nodeName": STR, "ipv4": STR, "age": STR, "architecture": STR,
                 "k8sVersion": STR, "nodeState": STR, "health": HEALTH,
                 "conditions": Arr(CONDITION)})
HOST = Obj({"hostUid": STR, "hostName": STR, "hostAddress": STR, "caCert": STR,
            "IsCandidateCaption": BOOL, "twoNodeCandidatePriority": Enum(("primary", "secondary")),
            "networkInfo": Arr(NIC), "nic": NIC, "nicName": STR, "staticIP": STR,
            "tags": Map(ANY), "nodeInfo": NODE_INFO})
TAINT = Obj({"key": STR, "value": STR,
             "effect": Enum(("NoSchedule", "PreferNoSchedule", "NoExecute")), "timeAdded": STR})
MACHINE_POOL = Obj(
    {"name": STR, "isControlPlane": BOOL, "useControlPlaneAsWorker": BOOL, "size": INT,
     "minSize": INT, "maxSize": INT, "labels": Arr(STR), "additionalLabels": Map(STR),
     "additionalTags": Map(STR), "taints": Arr(TAINT), "osType": STR, "nodeRepaveInterval": INT,
     "updateStrategy": Obj({"type": Enum(("RollingUpdateScaleOut", "RollingUpdateScaleIn"))}),
     "machinePoolProperties": Obj({"archType": Enum(("arm64", "amd64"))}),
     "hosts": Arr(HOST)},
    ("hosts",),
)
CLUSTER_CONFIG = Obj({
    "controlPlaneEndpoint": Obj({"host": STR, "type": STR, "ddnsSearchDomain": STR}),
    "ntpServers": Arr(STR), "sshKeys": Arr(STR), "staticIp": BOOL,
    "overlayNetworkConfiguration": Obj({"cidr": STR, "enable": BOOL}),
})
PROFILE_VARIABLE = Obj({"name": STR, "profileUid": STR, "value": STR},
                       ("name", "profileUid", "value"))
CLUSTER_CONFIGURATION = Obj(
    {
        "metadata": META,
        "spec": Obj({
            "archiveUploadPath": STR,
            "scheduleAt": STR,
            "profileVariables": Arr(PROFILE_VARIABLE),
            "cloudConfig": Obj({
                "metadata": OBJECT_META,
                "spec": Obj({"clusterConfig": CLUSTER_CONFIG,
                             "machinePoolConfig": Arr(MACHINE_POOL)},
                            ("clusterConfig", "machinePoolConfig")),
            }),
        }),
    },
    ("metadata", "spec"),
)
VALIDATE_VARIABLES = Obj(
    {"archiveUploadPath": STR, "variables": Arr(PROFILE_VARIABLE), "metadata": META},
    ("variables",),
)
LINK_TOKEN = Obj({"token": STR}, ("token",))
LOGIN = Obj({"username": STR, "password": STR}, ("username", "password"))
PASSWORD_RESET = Obj({"oldPassword": STR, "newPassword": STR}, ("oldPassword", "newPassword"))
