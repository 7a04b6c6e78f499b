"""The MAAS provider's settings: the plan's ``platform`` section and each ``nodes.hosts[i]`` entry."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Literal

from palette_provision.plan import SecretRef
from palette_provision_baremetal._settings import MediaServerSettings
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

__all__ = ["MaasConstraints", "MaasImage", "MaasNodeSettings", "MaasSettings"]

#: A MAAS custom image's name (``custom/<name>``): lower-case letters, digits, ``-`` and ``.``.
_IMAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}$")
#: MAAS's words for a custom image's file type, by the file's extension.
FILETYPES = {".raw": "ddraw", ".img": "ddraw", ".gz": "ddgz", ".xz": "ddxz", ".tgz": "tgz", ".tar.gz": "tgz"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MaasConstraints(_Model):
    """What a machine must offer to be allocated (MAAS's ``allocate`` constraints); unset ones do not constrain."""

    arch: str | None = Field(default=None, max_length=64, description="e.g. amd64, amd64/generic")
    cpu_count: int | None = Field(default=None, ge=1, le=4096, description="at least this many CPUs")
    mem: int | None = Field(default=None, ge=1, description="at least this much memory, MiB")
    storage: str | None = Field(default=None, max_length=256, description="MAAS storage syntax, e.g. root:100,data:500")
    tags: tuple[str, ...] = Field(default=(), description="every one of these tags")
    not_tags: tuple[str, ...] = Field(default=(), description="none of these tags")
    zone: str | None = Field(default=None, max_length=256)
    pool: str | None = Field(default=None, max_length=256)

    @field_validator("tags", "not_tags")
    @classmethod
    def _tag_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for tag in value:
            if not re.fullmatch(r"[\w-]{1,256}", tag):
                raise PydanticCustomError("maas", "a tag name is letters, digits, '_' and '-'")
        return value

    def merged(self, other: MaasConstraints | None) -> MaasConstraints:
        """These constraints with ``other``'s set fields taking precedence (a node's over the platform's)."""
        if other is None:
            return self
        return self.model_copy(update=other.model_dump(exclude_unset=True))

    def form(self) -> dict[str, str | list[str]]:
        """The allocate call's form fields (MAAS's names)."""
        fields: dict[str, str | list[str]] = {}
        for key in ("arch", "cpu_count", "mem", "storage", "zone", "pool"):
            value = getattr(self, key)
            if value is not None:
                fields[key] = str(value)
        if self.tags:
            fields["tags"] = list(self.tags)
        if self.not_tags:
            fields["not_tags"] = list(self.not_tags)
        return fields


class MaasImage(_Model):
    """The appliance as a disk image MAAS deploys (``custom/<name>``), uploaded once from ``file`` if absent."""

    name: str = Field(description="The boot resource's name without custom/, e.g. palette-appliance-4-6")
    file: str | None = Field(
        default=None, description="The image to upload when MAAS lacks it (raw, .gz, .xz, .tgz); else it must exist."
    )
    filetype: Literal["ddraw", "ddgz", "ddxz", "ddtgz", "tgz"] | None = Field(
        default=None, description="MAAS's file type; default: from the file's extension."
    )
    architecture: str = Field(default="amd64/generic", max_length=64)
    title: str | None = Field(default=None, max_length=256)
    chunk_size: int = Field(
        default=4 << 20, ge=64 << 10, le=1 << 30,
        description="Bytes per upload PUT (MAAS's CLI uses 4 MiB); a cut connection costs at most one chunk.",
    )  # fmt: skip

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _IMAGE_NAME.match(value):
            raise PydanticCustomError("maas", "an image name is lower-case letters, digits, '.' and '-' (no custom/)")
        return value

    @property
    def resource_name(self) -> str:
        """The boot resource's full name."""
        return f"custom/{self.name}"

    def effective_filetype(self) -> str:
        """The file type to declare: given, else from ``file``'s extension (``ddraw`` when it has none we know)."""
        if self.filetype is not None:
            return self.filetype
        name = PurePosixPath(self.file or "").name.lower()
        for suffix in sorted(FILETYPES, key=len, reverse=True):
            if name.endswith(suffix):
                return FILETYPES[suffix]
        return "ddraw"


class MaasSettings(_Model):
    """The plan's ``platform`` section for ``provider: maas``."""

    url: str = Field(description="The region's URL, e.g. https://maas.example:5240/MAAS")
    api_key: SecretRef = Field(description="A secret reference to the API key (consumer:token:secret).")
    tls: Literal["verify", "insecure"] = Field(
        default="verify", description="Verify the region's certificate (system store, ca_bundle or fingerprint)."
    )
    ca_bundle: str | None = None
    fingerprint: str | None = Field(default=None, description="The SHA-256 of the region's certificate, pinned.")
    mode: Literal["image", "bmc"] = Field(
        description="image: deploy image.name with the seed as user-data; bmc: allocate through MAAS, then boot the "
        "appliance ISO through each machine's BMC (Redfish virtual media, or IPMI with media attached by hand)."
    )
    image: MaasImage | None = Field(default=None, description="The image (mode: image).")
    constraints: MaasConstraints = Field(default_factory=MaasConstraints, description="For every node.")
    erase_on_release: bool = Field(default=False, description="destroy asks MAAS to erase the disks (quick erase).")
    comment: str | None = Field(default=None, max_length=200, description="Added to MAAS's event log entries.")
    # --- bmc mode: the bare-metal provider's settings for the BMCs MAAS names
    media_server: MediaServerSettings = Field(default_factory=MediaServerSettings)
    bmc_tls: Literal["verify", "insecure"] = Field(
        default="verify", description="bmc mode: verify the Redfish BMCs' certificates, or (logged) not."
    )
    bmc_ca_bundle: str | None = None
    min_command_interval_s: float = Field(default=0.5, ge=0, le=60)
    bmc_retry_s: float = Field(default=120, gt=0)
    power_timeout_s: float = Field(default=120, gt=0)
    request_timeout_s: float = Field(default=60, gt=0, le=600)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise PydanticCustomError("maas", "the MAAS URL is http(s)://host[:port]/MAAS")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _consistent(self) -> MaasSettings:
        if self.mode == "image" and self.image is None:
            raise PydanticCustomError("maas", "mode: image needs image.name (and image.file to upload it)")
        if self.tls == "insecure" and (self.ca_bundle or self.fingerprint):
            raise PydanticCustomError("maas", "tls: insecure verifies nothing; drop ca_bundle/fingerprint or verify")
        return self

    @property
    def api_root(self) -> str:
        """``<url>/api/2.0``: the URL given may or may not end in /MAAS."""
        return f"{self.url}/api/2.0" if self.url.endswith("/MAAS") else f"{self.url}/MAAS/api/2.0"


class MaasNodeSettings(_Model):
    """A ``nodes.hosts[i]`` entry's provider keys: which machine (by system id or hostname) or what it must offer."""

    system_id: str | None = Field(default=None, pattern=r"^[a-z0-9]{4,16}$", description="allocate this machine")
    hostname: str | None = Field(default=None, max_length=253, description="allocate the machine of this name")
    constraints: MaasConstraints | None = Field(default=None, description="over the platform's, for this node")
    media: Literal["virtual-media", "preinserted"] = Field(
        default="virtual-media", description="bmc mode: as the bare-metal provider's (IPMI: preinserted)."
    )
    bmc_fingerprint: str | None = Field(
        default=None, description="bmc mode: the SHA-256 of this machine's Redfish BMC certificate, pinned."
    )
