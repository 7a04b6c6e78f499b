"""The cluster profile of the simulated appliance, its variables, and variable validation.

Variables follow the appliance's documented defaults (Pod CIDR 100.64.0.0/18, Service CIDR
100.64.64.0/18, storage pool drive /dev/sdb, CSI placement count 3, registry port 30003, base path
``spectro-content``, OCI registry user ``admin``, a required sensitive password with no default,
registry size 100 GiB). Names and regexes are the simulator's choice (the docs do not publish them).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

PROFILE_UID = "66a1f0c2b7e4d5a6c3b2e101"
PROFILE_NAME = "palette-management-appliance"
PROFILE_VERSION = "4.7.0"
EMBEDDED_ARCHIVE_PATH = "/opt/spectrocloud/clusterconfigs/embedded/palette-appliance-cluster.tgz"
OVERRIDDEN_ARCHIVE_DIR = "/opt/spectrocloud/clusterconfigs/overridden"

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
CIDR_REGEX = rf"^({_OCTET}\.){{3}}{_OCTET}/([0-9]|[12][0-9]|3[0-2])$"
NODEPORT_REGEX = r"^(3[01][0-9]{3}|32[0-6][0-9]{2}|327[0-5][0-9]|3276[0-7])$"


@dataclass(frozen=True)
class VariableDef:
    """One profile variable (``v1Variable``)."""

    name: str
    display_name: str
    description: str
    format: str
    regex: str
    default: str = ""
    required: bool = True
    hidden: bool = False
    immutable: bool = False
    sensitive: bool = False

    def to_json(self) -> dict[str, Any]:
        """Render as ``v1Variable`` (the value starts as the default)."""
        return {
            "name": self.name,
            "displayName": self.display_name,
            "description": self.description,
            "format": self.format,
            "regex": self.regex,
            "defaultValue": self.default,
            "value": self.default,
            "required": self.required,
            "hidden": self.hidden,
            "immutable": self.immutable,
            "isSensitive": self.sensitive,
        }


VARIABLES: tuple[VariableDef, ...] = (
    VariableDef("pod_cidr", "Pod CIDR", "IPv4 CIDR of the pod network", "ipv4cidr", CIDR_REGEX,
                "100.64.0.0/18"),
    VariableDef("service_cidr", "Service CIDR", "IPv4 CIDR of the service network; must not overlap"
                " the pod CIDR", "ipv4cidr", CIDR_REGEX, "100.64.64.0/18"),
    VariableDef("storage_pool_drive", "Storage pool drive", "Disk wiped and used for the Piraeus"
                " storage pool", "string", r"^/dev/[A-Za-z0-9._:/+-]+$", "/dev/sdb"),
    VariableDef("csi_placement_count", "CSI placement count", "Replicas of each volume (also the"
                " MongoDB replica count)", "number", r"^[1-9]$", "3"),
    VariableDef("registry_port", "Registry port", "NodePort of the in-cluster Zot registry",
                "number", NODEPORT_REGEX, "30003"),
    VariableDef("registry_base_path", "Registry base path", "Base path of the in-cluster registry",
                "string", r"^[a-z0-9]+([._-][a-z0-9]+)*$", "spectro-content"),
    VariableDef("oci_registry_username", "OCI pack registry username", "User of the OCI pack"
                " registry", "string", r"^[A-Za-z0-9._-]{1,64}$", "admin"),
    VariableDef("oci_registry_password", "OCI pack registry password", "Password of the OCI pack"
                " registry (8-64 non-blank characters)", "string", r"^\S{8,64}$", "",
                sensitive=True),
    VariableDef("registry_size", "Registry size", "Size of the registry volume (Kubernetes"
                " quantity in Gi)", "string", r"^[1-9][0-9]*Gi$", "100Gi"),
)
VARIABLES_BY_NAME = {variable.name: variable for variable in VARIABLES}

#: The profile's packs, bottom layer first: the infrastructure, then Palette itself (names are the simulator's).
PACKS: tuple[dict[str, str], ...] = tuple(
    {"name": name, "version": version, "layer": layer, "type": kind, "image": image}
    for name, version, layer, kind, image in (
        ("edge-native-byoi", "2.1.0", "os", "spectro", "quay.io/kairos/ubuntu:22.04-core"),
        ("edge-k8s", "1.32.3", "k8s", "spectro", "registry.k8s.io/kube-apiserver:v1.32.3"),
        ("cni-calico", "3.29.2", "cni", "spectro", "quay.io/calico/node:v3.29.2"),
        ("csi-piraeus-operator", "2.8.1", "csi", "spectro", "quay.io/piraeusdatastore/piraeus-operator:v2.8.1"),
        ("zot-registry", "0.1.67", "addon", "helm", "ghcr.io/project-zot/zot-linux-amd64:v2.1.2"),
        ("nginx", "1.12.1", "addon", "helm", "registry.k8s.io/ingress-nginx/controller:v1.12.1"),
        ("spectro-mgmt-plane", "4.7.15", "addon", "spectro", "gcr.io/spectro-images-public/release/hubble-mgmt:4.7.15"),
        ("spectro-ui", "4.7.15", "addon", "spectro", "gcr.io/spectro-images-public/release/spectro-ui:4.7.15"),
    )
)


def archive_details(archive_path: str) -> dict[str, Any]:
    """Return ``v1ClusterConfigArchiveDetails`` for an archive holding the appliance profile."""
    return {
        "archiveUploadPath": archive_path,
        "clusterProfileDetails": [
            {
                "profileUid": PROFILE_UID,
                "profileName": PROFILE_NAME,
                "profileVersion": PROFILE_VERSION,
                "profileType": "cluster",
                "profileDescription": "Self-hosted Palette on PXK-E, Calico, Piraeus and Zot",
                "profileTags": "appliance",
                "packs": [{"name": p["name"], "version": p["version"], "values": "", "logo": ""} for p in PACKS],
                "variables": [variable.to_json() for variable in VARIABLES],
            }
        ],
    }


def _check_value(variable: VariableDef, value: str, values: dict[str, str]) -> str:
    """Return the failure reason for ``value`` ("" when valid)."""
    if value == "":
        return "a value is required" if variable.required and not variable.default else ""
    if not re.fullmatch(variable.regex, value):
        return f"value does not match the regex {variable.regex}"
    if variable.name == "service_cidr":
        pod = values.get("pod_cidr", VARIABLES_BY_NAME["pod_cidr"].default)
        try:
            if ipaddress.ip_network(value, strict=False).overlaps(
                ipaddress.ip_network(pod, strict=False)
            ):
                return f"service CIDR {value} overlaps the pod CIDR {pod}"
        except ValueError:
            return ""
    return ""


def validate_variables(items: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Validate ``[{name, profileUid, value}]``; return one result per item plus missing required ones.

    Each result is ``{name, profileUid, profileName, isValid, regex, validationFailureReason}``.
    """
    results: list[dict[str, Any]] = []
    supplied = {item["name"]: item["value"] for item in items if item["profileUid"] == PROFILE_UID}
    for item in items:
        name, uid, value = item["name"], item["profileUid"], item["value"]
        variable = VARIABLES_BY_NAME.get(name)
        if uid != PROFILE_UID:
            reason, regex, profile_name = f"unknown profileUid {uid!r}", "", ""
        elif variable is None:
            reason, regex, profile_name = f"unknown variable {name!r}", "", PROFILE_NAME
        else:
            reason = _check_value(variable, value, supplied)
            regex, profile_name = variable.regex, PROFILE_NAME
        results.append(_result(name, uid, profile_name, regex, reason))
    for variable in VARIABLES:
        if variable.required and not variable.default and variable.name not in supplied:
            results.append(_result(variable.name, PROFILE_UID, PROFILE_NAME, variable.regex,
                                   "required variable is missing"))
    return results


def _result(name: str, uid: str, profile_name: str, regex: str, reason: str) -> dict[str, Any]:
    return {
        "name": name,
        "profileUid": uid,
        "profileName": profile_name,
        "isValid": reason == "",
        "regex": regex,
        "validationFailureReason": reason,
    }
