"""The vSphere provider's settings: the schema of a plan's ``platform:`` section when ``provider: vsphere``."""

from __future__ import annotations

import re
from typing import Literal

from palette_provision.plan import SecretRef
from palette_provision.tls import normalize_fingerprint
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

__all__ = ["VsphereSettings"]

# Datastore paths travel in "[ds] folder/name" strings and /folder URLs: keep folder names to a safe alphabet.
_FOLDER = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


class VsphereSettings(BaseModel):
    """Where and how to reach vCenter (or a standalone ESXi host), and where the VMs go.

    Inventory names are the names shown in the vSphere client. ``folder`` and ``resource_pool`` are paths
    (``a/b``) below the datacenter's VM folder and the cluster's (or host's) root pool; leave them out for the
    root. Give ``cluster``, ``esxi_host`` or both (a host inside the cluster).
    """

    # hide_input_in_errors: a password typed inline by mistake must not be echoed back in the error.
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        arbitrary_types_allowed=True,
        hide_input_in_errors=True,
    )

    server: str = Field(description="vCenter (or ESXi) host name or address.")
    port: int = Field(default=443, ge=1, le=65535, description="HTTPS port of the SDK endpoint.")
    username: str = Field(description="vSphere user, e.g. administrator@vsphere.local.")
    password: SecretRef = Field(description="Reference to the password: 'env:NAME' or 'file:PATH'.")
    tls: Literal["verify", "pin", "insecure"] | None = Field(
        default=None,
        description="'verify' (system store or ca_bundle; the default), 'pin' (server certificate's SHA-256, "
        "the default when thumbprint is given) or 'insecure' (no verification; logged as a warning).",
    )
    ca_bundle: str | None = Field(
        default=None,
        description="CA bundle (PEM) to verify against instead of the system store.",
    )
    thumbprint: str | None = Field(
        default=None,
        description="SHA-256 thumbprint of the server certificate, 'AB:CD:...' or plain hex.",
    )
    datacenter: str = Field(description="Datacenter name.")
    cluster: str | None = Field(default=None, description="Cluster name (the VMs go in its resource pool).")
    esxi_host: str | None = Field(
        default=None,
        description="ESXi host name: a standalone host, or a host of cluster.",
    )
    resource_pool: str | None = Field(default=None, description="Resource pool path below the root pool.")
    folder: str | None = Field(default=None, description="VM folder path below the datacenter's VM folder.")
    datastore: str = Field(description="Datastore for the VMs' disks and the staged ISO and seeds.")
    network: str = Field(description="Standard portgroup or distributed portgroup name.")
    vm_prefix: str = Field(default="", description="Prefix of every VM name: '<vm_prefix><node name>'.")
    media_folder: str = Field(
        default="palette-provision",
        description="Datastore folder for the ISO and seeds.",
    )
    guest_id: str = Field(default="ubuntu64Guest", description="vSphere guest OS identifier.")
    task_timeout: float = Field(default=600.0, gt=0, description="Seconds to wait for one vSphere task.")
    max_concurrent_operations: int = Field(
        default=16, ge=1, le=256,
        description="At most this many nodes create, reconfigure or power VMs on this vCenter at once.",
    )
    upload_attempts: int = Field(default=5, ge=1, le=50, description="Tries per upload on transient errors.")
    upload_timeout: float = Field(
        default=6 * 3600.0,
        gt=0,
        description="Seconds for one file's upload, all attempts and pauses included.",
    )
    http_timeout: float = Field(
        default=300.0,
        gt=0,
        description="Seconds without progress before an HTTP call fails.",
    )

    @field_validator("thumbprint")
    @classmethod
    def _thumbprint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return normalize_fingerprint(value)
        except ValueError as exc:
            raise PydanticCustomError("thumbprint", str(exc)) from None

    @field_validator("media_folder", "folder", "resource_pool")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip("/")
        if not _FOLDER.match(value):
            raise PydanticCustomError("path", "use letters, digits, '.', '_', '-' and '/' between names")
        return value

    @field_validator("vm_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if any(c in value for c in "/\\%[]"):
            raise PydanticCustomError("vm_prefix", "must not contain '/', '\\', '%', '[' or ']'")
        return value

    @model_validator(mode="after")
    def _tls_choice(self) -> VsphereSettings:
        mode = self.tls_mode
        if mode == "pin" and self.thumbprint is None:
            raise PydanticCustomError("tls", "tls: pin needs the server certificate's thumbprint")
        if mode != "pin" and self.thumbprint is not None:
            raise PydanticCustomError("tls", "thumbprint is only used with tls: pin")
        if mode != "verify" and self.ca_bundle is not None:
            raise PydanticCustomError("tls", "ca_bundle is only used with tls: verify")
        if self.cluster is None and self.esxi_host is None:
            raise PydanticCustomError("placement", "give cluster, esxi_host or both")
        return self

    @property
    def tls_mode(self) -> Literal["verify", "pin", "insecure"]:
        """The effective TLS mode: ``tls`` if set, else ``pin`` with a thumbprint, else ``verify``."""
        if self.tls is not None:
            return self.tls
        return "pin" if self.thumbprint is not None else "verify"
