"""The bmc mode's BMC side: the bare-metal provider, driving each allocated machine's BMC as MAAS describes it.

MAAS knows every machine's BMC (``?op=power_parameters``: its power driver, address, user and password). Once a
machine is allocated, :class:`BmcBridge` turns that into the bare-metal provider's settings for the node
(:meth:`BaremetalProvider.adopt`), so power, boot device, virtual media, the media server and address reports work
exactly as on bare metal: one BMC session at a time, always closed, TLS verified or pinned.

MAAS's words, and what we make of them: ``power_type`` ``redfish`` (``power_address`` a host, ``host:port`` or an
``https://`` URL; ``node_id`` the Redfish system) and ``ipmi`` (``power_address`` a host or ``host:port``; the node
must say ``media: preinserted``, IPMI having no virtual media). Other drivers (``virsh``, ``amt``, ``manual``...) are
refused at preflight, naming the machine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from palette_provision.errors import ConfigurationError, ProviderError
from palette_provision.plan import NodeSpec
from palette_provision.provider import Machine, ProviderContext
from palette_provision.secrets import Secret
from palette_provision_baremetal import BaremetalNodeSettings, BaremetalProvider, BaremetalSettings, BmcSettings

from palette_provision_maas._errors import PROVIDER
from palette_provision_maas._settings import MaasNodeSettings, MaasSettings

__all__ = ["DRIVEN_POWER_TYPES", "BmcBridge", "bmc_settings"]

#: MAAS power drivers the bmc mode drives, and the protocol each speaks.
DRIVEN_POWER_TYPES = {"redfish": "redfish", "ipmi": "ipmi"}


def _host_port(address: str, default_port: int) -> tuple[str, int]:
    text = address.strip()
    if "://" in text:
        parts = urlsplit(text)
        return parts.hostname or "", parts.port or default_port
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else default_port
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host, int(port)
    return text, default_port


def bmc_settings(
    power_type: str, params: dict[str, Any], *, settings: MaasSettings, node: MaasNodeSettings, where: str
) -> BmcSettings:
    """The bare-metal provider's BMC settings from MAAS's power parameters (checked: a clear error otherwise)."""
    protocol = DRIVEN_POWER_TYPES.get(power_type)
    if protocol is None:
        raise ConfigurationError(f"{where} is powered through MAAS's {power_type or 'unset'} driver; the bmc mode "
                                 "drives redfish and ipmi BMCs", field="platform.mode", provider=PROVIDER)  # fmt: skip
    address = params.get("power_address")
    user = params.get("power_user")
    password = params.get("power_pass")
    if not isinstance(address, str) or not address or not isinstance(user, str) or not user:
        raise ConfigurationError(f"{where}: MAAS's power parameters give no BMC address or user", provider=PROVIDER)
    if not isinstance(password, Secret):
        raise ConfigurationError(f"{where}: MAAS's power parameters give no BMC password", provider=PROVIDER)
    host, port = _host_port(address, 443 if protocol == "redfish" else 623)
    data: dict[str, Any] = {"protocol": protocol, "address": host, "port": port, "username": user,
                            "password": password}  # fmt: skip
    if protocol == "redfish":
        node_id = params.get("node_id")
        if isinstance(node_id, str) and node_id:
            data["system_id"] = node_id
        if settings.bmc_tls == "insecure":
            data["tls"] = "insecure"
        elif node.bmc_fingerprint:
            data["fingerprint"] = node.bmc_fingerprint
        elif settings.bmc_ca_bundle:
            data["ca_bundle"] = settings.bmc_ca_bundle
    try:
        return BmcSettings.model_validate(data)
    except ValueError as exc:
        raise ConfigurationError(f"{where}: MAAS's power parameters do not make a usable BMC ({type(exc).__name__})",
                                 provider=PROVIDER) from None  # fmt: skip


class BmcBridge:
    """The bare-metal provider behind the bmc mode, its nodes adopted from MAAS's power parameters on first use."""

    def __init__(
        self,
        settings: MaasSettings,
        context: ProviderContext,
        power_parameters: Callable[[str], tuple[str, dict[str, Any]]],
        node_spec: Callable[[str], NodeSpec | None],
        machine_of: Callable[[str], Machine | None],
    ) -> None:
        self.maas = settings
        self.settings = BaremetalSettings(
            media_server=settings.media_server, min_command_interval_s=settings.min_command_interval_s,
            power_timeout_s=settings.power_timeout_s, bmc_retry_s=settings.bmc_retry_s,
            request_timeout_s=settings.request_timeout_s, reinstall=True,
        )  # fmt: skip
        inner = ProviderContext(deployment=context.deployment, state_dir=context.state_dir / "bmc", log=context.log,
                                owned_machines=context.owned_machines)  # fmt: skip
        # The machines (and so their BMCs) are known only once allocated: the ISO goes on the media server anyway.
        self.provider = BaremetalProvider(self.settings, inner, serve_media=True)
        self._power_parameters = power_parameters
        self._node_spec = node_spec
        self._machine_of = machine_of
        self._adopted: dict[str, str] = {}

    def _node(self, name: str) -> tuple[NodeSpec, MaasNodeSettings]:
        spec = self._node_spec(name)
        if spec is None:
            raise ProviderError(f"{name} is not a node of this plan", provider=PROVIDER, resource=name)
        settings = spec.settings if isinstance(spec.settings, MaasNodeSettings) else MaasNodeSettings()
        return spec, settings

    def check_power_type(self, spec: NodeSpec, power_type: str, hostname: str) -> None:
        """Preflight: the machine MAAS would give ``spec`` has a BMC we drive, and IPMI ones are preinserted."""
        where = f"nodes.hosts[{spec.index}]" if spec.settings is not None else "platform.constraints"
        if power_type not in DRIVEN_POWER_TYPES:
            raise ConfigurationError(
                f"MAAS would give {spec.name} the machine {hostname}, powered through its {power_type or 'unset'} "
                "driver; the bmc mode drives redfish and ipmi BMCs", field=where, provider=PROVIDER,
            )  # fmt: skip
        _, settings = self._node(spec.name)
        if power_type == "ipmi" and settings.media != "preinserted":
            raise ConfigurationError(
                f"MAAS would give {spec.name} the IPMI machine {hostname}: IPMI has no virtual media, so set "
                "media: preinserted and attach the ISO and the seed yourself", field=f"{where}.media",
                provider=PROVIDER,
            )  # fmt: skip

    def for_machine(self, machine: Machine) -> BaremetalProvider:
        """The bare-metal provider, with ``machine``'s node adopted from MAAS's power parameters (read once)."""
        if self._adopted.get(machine.node) != machine.id:
            spec, settings = self._node(machine.node)
            power_type, params = self._power_parameters(machine.id)
            where = f"{machine.name} ({machine.id}, for {machine.node})"
            bmc = bmc_settings(power_type, params, settings=self.maas, node=settings, where=where)
            mac = machine.attributes.get("mac")
            node_settings = BaremetalNodeSettings(bmc=bmc, media=settings.media, mac=mac if mac else None)
            self.provider.adopt(spec.model_copy(update={"settings": node_settings}))
            self._adopted[machine.node] = machine.id
        return self.provider

    def for_node(self, node: str) -> BaremetalProvider:
        """:meth:`for_machine` for the machine MAAS gave ``node`` in this run (acquired before anything else)."""
        machine = self._machine_of(node)
        if machine is None:
            raise ProviderError(f"{node} has no MAAS machine yet", provider=PROVIDER, resource=node)
        return self.for_machine(machine)

    def close(self) -> None:
        """Close the bare-metal side (its sessions are closed per command already; the media server's rule)."""
        self.provider.close()
