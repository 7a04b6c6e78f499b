"""The bare-metal provider's settings: the plan's ``platform`` section and each ``nodes.hosts[i]`` entry."""

from __future__ import annotations

import ipaddress
from typing import Literal

from palette_provision.plan import SecretRef
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

__all__ = ["BaremetalNodeSettings", "BaremetalSettings", "BmcRange", "BmcSettings", "MediaServerSettings"]

#: IPMI's maximum user name and password lengths (16 and 20 bytes; some BMCs accept a byte less).
_IPMI_USER_MAX, _IPMI_PASSWORD_MAX = 16, 20


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BmcSettings(_Model):
    """One server's BMC: how to reach it and log in."""

    protocol: Literal["ipmi", "redfish"] = Field(description="ipmi (IPMI 2.0 over LAN) or redfish (HTTPS).")
    address: str = Field(min_length=1, max_length=253, description="The BMC's address or host name.")
    port: int | None = Field(default=None, ge=1, le=65535, description="Default: 623 for IPMI, 443 for Redfish.")
    username: str = Field(min_length=1, max_length=64)
    password: SecretRef = Field(description="A secret reference (env:NAME, file:PATH).")
    tls: Literal["verify", "insecure"] = Field(
        default="verify",
        description="Redfish: verify the BMC's certificate (system store, ca_bundle, or the pinned fingerprint), "
        "or, logged as a warning, nothing.",
    )
    ca_bundle: str | None = Field(default=None, description="Redfish: a CA bundle to verify the BMC's certificate.")
    fingerprint: str | None = Field(
        default=None,
        description="Redfish: the SHA-256 of the BMC's certificate, pinned (self-signed BMC certificates).",
    )
    system_id: str | None = Field(
        default=None, description="Redfish: the system to drive, when the BMC manages several (its Id or path)."
    )

    @property
    def effective_port(self) -> int:
        """The port, defaulted by protocol."""
        return self.port or (623 if self.protocol == "ipmi" else 443)

    @model_validator(mode="after")
    def _consistent(self) -> BmcSettings:
        if self.protocol == "ipmi" and (self.ca_bundle or self.fingerprint or self.system_id):
            raise PydanticCustomError(
                "baremetal", "ca_bundle, fingerprint and system_id are Redfish settings; this BMC speaks IPMI"
            )
        if self.tls == "insecure" and (self.ca_bundle or self.fingerprint):
            raise PydanticCustomError(
                "baremetal", "tls: insecure verifies nothing; drop ca_bundle/fingerprint or verify"
            )
        if self.protocol == "ipmi" and len(self.username) >= _IPMI_USER_MAX:
            raise PydanticCustomError("baremetal", f"an IPMI user name has fewer than {_IPMI_USER_MAX} characters")
        return self


class BaremetalNodeSettings(_Model):
    """A ``nodes.hosts[i]`` entry's provider keys: the BMC, how the ISO reaches the server, its MAC."""

    bmc: BmcSettings
    media: Literal["virtual-media", "preinserted"] = Field(
        default="virtual-media",
        description="virtual-media: the provider inserts the ISO and the seed through the BMC; preinserted: an "
        "operator attached the ISO. On a Redfish BMC the seed still goes through virtual media; an IPMI BMC has "
        "none, so the operator attaches the seed too (apply stops once to say where it is).",
    )
    mac: str | None = Field(
        default=None, pattern=r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$", description="The NIC's MAC (DHCP nodes)."
    )

    @model_validator(mode="after")
    def _media_fits_the_bmc(self) -> BaremetalNodeSettings:
        if self.bmc.protocol == "ipmi" and self.media != "preinserted":
            raise PydanticCustomError(
                "baremetal",
                "IPMI has no virtual media: set media: preinserted and attach the appliance ISO and the node's seed "
                "yourself (apply stops once, before the boot, to say where the seed is)",
            )
        return self

    @property
    def operator_seed(self) -> bool:
        """The operator attaches the seed too: the BMC has no virtual media to insert it through."""
        return self.bmc.protocol == "ipmi"

    @property
    def needs_media_server(self) -> bool:
        """Whether the BMC fetches anything from the media server."""
        return not self.operator_seed


class BmcRange(_Model):
    """Servers whose BMCs have consecutive addresses and one account: node ``i`` (from 0) is the ``i``-th address.

    For racks set up alike (``nodes.count`` servers, no ``nodes.hosts`` list)::

        bmc_range: {addresses: 10.0.0.11-10.0.0.18, protocol: redfish, username: admin,
                    password: env:BMC_PASSWORD, ca_bundle: /etc/ssl/bmc-ca.pem}
    """

    addresses: str = Field(description="first-last IPv4 addresses (10.0.0.11-10.0.0.18, or 10.0.0.11-18).")
    protocol: Literal["ipmi", "redfish"]
    port: int | None = Field(default=None, ge=1, le=65535)
    username: str = Field(min_length=1, max_length=64)
    password: SecretRef
    tls: Literal["verify", "insecure"] = "verify"
    ca_bundle: str | None = Field(default=None, description="Redfish: one CA for the range (no per-BMC pin here).")
    system_id: str | None = None
    media: Literal["virtual-media", "preinserted"] = "virtual-media"

    @model_validator(mode="after")
    def _range(self) -> BmcRange:
        self.bounds()  # raises for a malformed range
        try:
            self.node_settings(0)  # the BMC and node rules, as for a listed node
        except ValidationError as exc:
            raise PydanticCustomError("baremetal", str(exc.errors()[0]["msg"])) from None
        return self

    def bounds(self) -> tuple[ipaddress.IPv4Address, int]:
        """The first address and how many the range holds."""
        first_text, sep, last_text = self.addresses.partition("-")
        try:
            first = ipaddress.IPv4Address(first_text.strip())
            if not sep:
                return first, 1
            last_text = last_text.strip()
            if last_text.isdigit() and int(last_text) < 256:  # 10.0.0.11-18: the last octet only
                last = ipaddress.IPv4Address(".".join([*str(first).split(".")[:3], last_text]))
            else:
                last = ipaddress.IPv4Address(last_text)
        except ValueError:
            raise PydanticCustomError(
                "baremetal", "a range is first-last IPv4 addresses, e.g. 10.0.0.11-10.0.0.18"
            ) from None
        if last < first:
            raise PydanticCustomError("baremetal", "the range's last address comes before its first")
        return first, int(last) - int(first) + 1

    def node_settings(self, index: int) -> BaremetalNodeSettings:
        """The settings of the ``index``-th node (from 0)."""
        first, size = self.bounds()
        if index >= size:
            raise IndexError(f"the range holds {size} addresses")
        bmc = BmcSettings(protocol=self.protocol, address=str(first + index), port=self.port, username=self.username,
                          password=self.password, tls=self.tls, ca_bundle=self.ca_bundle, system_id=self.system_id)
        return BaremetalNodeSettings(bmc=bmc, media=self.media)


class MediaServerSettings(_Model):
    """Where the media server listens and the address BMCs fetch from."""

    bind: str = Field(default="0.0.0.0:0", description="host:port to listen on (port 0: any free port, kept).")
    advertise_host: str | None = Field(
        default=None, description="The host BMCs use in URLs (default: the bind host, which must then not be 0.0.0.0)."
    )


class BaremetalSettings(_Model):
    """The plan's ``platform`` section for ``provider: baremetal``."""

    media_server: MediaServerSettings = Field(default_factory=MediaServerSettings)
    bmc_range: BmcRange | None = Field(
        default=None, description="Instead of listing nodes.hosts: BMCs at consecutive addresses, one account."
    )
    min_command_interval_s: float = Field(
        default=0.5, ge=0, le=60, description="The least time between two sessions to one BMC."
    )
    power_timeout_s: float = Field(default=120, gt=0, description="How long a BMC may take to apply a power change.")
    bmc_retry_s: float = Field(
        default=120, gt=0, description="How long a command is retried while its BMC does not answer (a lossy link)."
    )
    request_timeout_s: float = Field(
        default=60, gt=0, le=600,
        description="Redfish: how long one request may wait for its answer before it is given up and retried (a "
        "request stalled on a lossy link). sushy's default; lower it on lossy management networks.",
    )  # fmt: skip
    reinstall: bool = Field(
        default=False,
        description="Allow nodes that are powered on at preflight (they will be powered off and reinstalled).",
    )

    def advertise_issue(self) -> str | None:
        """Why BMCs could not be given the media server's URL (checked only when a node needs the server)."""
        host = self.media_server.bind.rsplit(":", 1)[0]
        if host in ("0.0.0.0", "", "::", "[::]") and not self.media_server.advertise_host:  # noqa: S104 - a check
            return "media_server.advertise_host is needed when media_server.bind listens on every address"
        return None
