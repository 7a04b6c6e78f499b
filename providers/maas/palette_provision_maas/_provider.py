"""The MAAS provider: machines allocated from a MAAS region, deployed as a custom image or booted through their BMCs.

Two modes (``platform.mode``), two install methods:

* ``image`` (*deploy image*): allocate, deploy ``custom/<image.name>`` with the node's seed as user-data, wait for
  ``Deployed`` (``Failed deployment`` stops the wait at once, with MAAS's last status message and event), release on
  ``destroy``. The image is uploaded once, in chunks, when MAAS lacks it (:mod:`._image`).
* ``bmc`` (*boot from media*): allocate through MAAS (its inventory, zones and pools stay the source of truth),
  read the machine's power parameters, and drive its BMC as the bare-metal provider does (Redfish virtual media
  from the media server; IPMI with media an operator attached): MAAS never deploys anything. ``destroy`` ejects and
  clears the boot override through the BMC, then releases.

Every allocation carries ``agent_name`` (``palette-provision/<deployment>/<node>``) and a comment naming the
deployment, so a run that lost its journal record finds its machine again and never allocates a second one.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from palette_provision.errors import ConfigurationError, PlanIssue, ProviderError
from palette_provision.plan import DeploymentPlan, NodeSpec
from palette_provision.provider import (
    DeployState,
    DeployStatus,
    InstallMethod,
    Lifecycle,
    Machine,
    PowerState,
    ProviderContext,
    SeedFormat,
)
from pydantic import BaseModel

from palette_provision_maas._bmc import BmcBridge
from palette_provision_maas._capacity import could_match, left_without
from palette_provision_maas._client import MaasClient
from palette_provision_maas._errors import PROVIDER, MaasApiError, MaasConflict, MaasNotFound
from palette_provision_maas._image import ImageUploader
from palette_provision_maas._settings import MaasConstraints, MaasNodeSettings, MaasSettings
from palette_provision_maas._shapes import Machine as MaasMachine

__all__ = ["MaasProvider"]

#: MAAS's status codes we act on (``status`` of a machine).
READY, ALLOCATED, DEPLOYING, DEPLOYED, FAILED_DEPLOYMENT = 4, 10, 9, 6, 11
#: Statuses of a machine that is no longer ours to use (released or on its way back).
_GIVEN_BACK = {READY, 0, 1, 12, 13, 14, 19, 20}  # Ready, New, Commissioning..., Releasing, Disk erasing
_POWER = {"on": PowerState.ON, "off": PowerState.OFF}


class MaasProvider:
    """Machines from a MAAS region (see the module docstring)."""

    name: ClassVar[str] = PROVIDER
    settings_model: ClassVar[type[BaseModel]] = MaasSettings
    node_settings_model: ClassVar[type[BaseModel] | None] = MaasNodeSettings
    lifecycle = Lifecycle.ALLOCATED

    def __new__(cls, settings: MaasSettings, context: ProviderContext) -> MaasProvider:
        """The bmc mode's provider (:class:`~._bmc_provider.MaasBmcProvider`) when the settings say so: the
        capabilities a provider claims are the methods it has, and the image mode has no BMC to drive."""
        if cls is MaasProvider and settings.mode == "bmc":
            from palette_provision_maas._bmc_provider import MaasBmcProvider

            return super().__new__(MaasBmcProvider)
        return super().__new__(cls)

    def __init__(self, settings: MaasSettings, context: ProviderContext) -> None:
        self.settings = settings
        self.context = context
        self._log = context.log
        self.install_methods: tuple[InstallMethod, ...] = (
            (InstallMethod.DEPLOY_IMAGE,) if settings.mode == "image" else (InstallMethod.BOOT_FROM_MEDIA,)
        )
        self._nodes: dict[str, NodeSpec] = {n.name: n for n in context.nodes}
        self._lock = threading.Lock()
        self._client: MaasClient | None = None
        self._images: ImageUploader | None = None
        self._bmc: BmcBridge | None = None
        self._machines: dict[str, Machine] = {}

    # ------------------------------------------------------------------------------------------- plumbing
    @property
    def client(self) -> MaasClient:
        """The region's client (logged in lazily: validate never connects)."""
        with self._lock:
            if self._client is None:
                from palette_provision.tls import pinned_context

                s = self.settings
                verify: Any = True
                if s.tls == "insecure":
                    verify = False
                elif s.fingerprint:
                    verify = pinned_context(s.fingerprint, server="MAAS")
                elif s.ca_bundle:
                    verify = s.ca_bundle
                self._client = MaasClient(s.url, s.api_key, verify=verify, key_field="platform.api_key", log=self._log)
            return self._client

    @property
    def bmc(self) -> BmcBridge:
        """The BMC side of the bmc mode (the bare-metal provider, fed MAAS's power parameters)."""
        with self._lock:
            if self._bmc is None:
                self._bmc = BmcBridge(self.settings, self.context, self._power_parameters, self._nodes.get,
                                      self._machines.get)
            return self._bmc

    def _power_parameters(self, system_id: str) -> tuple[str, dict[str, Any]]:
        machine = self.client.get_machine(system_id)
        return machine.power_type, self.client.power_parameters(system_id)

    def agent_name(self, node: str) -> str:
        """The mark every allocation for ``node`` carries."""
        return f"palette-provision/{self.context.deployment}/{node}"

    def _comment(self, what: str) -> str:
        extra = f" ({self.settings.comment})" if self.settings.comment else ""
        return f"palette-provision deployment {self.context.deployment}: {what}{extra}"

    def _node_settings(self, node: str) -> MaasNodeSettings:
        spec = self._nodes.get(node)
        settings = spec.settings if spec is not None else None
        return settings if isinstance(settings, MaasNodeSettings) else MaasNodeSettings()

    def _constraints(self, spec: NodeSpec) -> dict[str, Any]:
        settings = self._node_settings(spec.name)
        constraints: MaasConstraints = self.settings.constraints.merged(settings.constraints)
        form: dict[str, Any] = dict(constraints.form())
        if settings.system_id:
            form["system_id"] = settings.system_id
        if settings.hostname:
            form["name"] = settings.hostname
        return form

    def _where(self, spec: NodeSpec) -> str:
        settings = self._node_settings(spec.name)
        if settings.system_id or settings.hostname or settings.constraints:
            return f"nodes.hosts[{spec.index}]"
        return "platform.constraints"

    # ------------------------------------------------------------------------------------------- provider
    def validate(self, plan: DeploymentPlan) -> list[PlanIssue]:
        """Offline: explicit machines named once; an image file that exists; bmc-mode media settings."""
        issues: list[PlanIssue] = []
        seen: dict[str, int] = {}
        for spec in plan.node_specs():
            settings = spec.settings if isinstance(spec.settings, MaasNodeSettings) else None
            for value in (settings.system_id, settings.hostname) if settings else ():
                if value is None:
                    continue
                if value in seen:
                    issues.append(PlanIssue(f"nodes.hosts[{spec.index}]",
                                            f"{value} is named by nodes.hosts[{seen[value]}] too"))  # fmt: skip
                seen.setdefault(value, spec.index)
        image = self.settings.image
        if (self.settings.mode == "image" and image is not None and image.file is not None
                and not plan.resolve_path(image.file).is_file()):
            issues.append(PlanIssue("platform.image.file", f"no such file: {plan.resolve_path(image.file)}"))
        if self.settings.mode == "bmc":
            advertise = self.bmc.settings.advertise_issue()
            if advertise:
                issues.append(PlanIssue("platform.media_server.advertise_host", advertise))
        return issues

    def preflight(self, plan: DeploymentPlan) -> None:
        """Log in; each node's constraints can be met (an allocate ``dry_run``) unless it holds a machine already;
        the image exists or can be uploaded; in bmc mode, every machine's power type is one we drive."""
        for spec in plan.node_specs():
            self._nodes[spec.name] = spec
        user = self.client.whoami()
        self._log.info("maas_logged_in", user=user.username, url=self.client.url)
        if self.settings.mode == "image":
            self.images.check(plan)
        chosen: dict[str, tuple[NodeSpec, MaasMachine]] = {}
        for spec in plan.node_specs():
            if self.context.owned_machines.get(spec.name) is not None or self._held(spec.name):
                continue
            try:
                candidate = self.client.allocate(self._constraints(spec), agent_name=self.agent_name(spec.name),
                                                 comment=self._comment(f"dry run for {spec.name}"), dry_run=True)
            except MaasConflict as exc:
                raise ConfigurationError(
                    f"no Ready machine in MAAS matches {spec.name}'s constraints (MAAS: {exc.text})",
                    field=self._where(spec), provider=PROVIDER,
                ) from None  # fmt: skip
            except MaasApiError as exc:
                if exc.status != 400:
                    raise
                # MAAS answers 400 to constraints it cannot read (a tag, zone or pool it does not have).
                raise ConfigurationError(f"MAAS refused {spec.name}'s constraints: {exc.text}",
                                         field=self._where(spec), provider=PROVIDER) from None  # fmt: skip
            if self.settings.mode == "bmc":
                self.bmc.check_power_type(spec, candidate.power_type, candidate.hostname)
            chosen[spec.name] = (spec, candidate)
        self._check_capacity(chosen)

    def _check_capacity(self, chosen: dict[str, tuple[NodeSpec, MaasMachine]]) -> None:
        """Enough distinct Ready machines for every node still to allocate, at once (see :mod:`._capacity`)."""
        if len(chosen) < 2:
            return
        listed = self.client.list_machines()
        candidates = {
            node: [candidate.system_id] + [m.system_id for m in listed if could_match(m, self._constraints(spec))]
            for node, (spec, candidate) in chosen.items()
        }  # fmt: skip
        short = left_without(candidates)
        if short:
            spec = chosen[short[0]][0]
            raise ConfigurationError(
                f"MAAS has Ready machines for {len(chosen) - len(short)} of the {len(chosen)} nodes to allocate: "
                f"{', '.join(short)} would get none (each node's constraints are met, not all of them at once)",
                field=self._where(spec), provider=PROVIDER,
            )  # fmt: skip

    def _held(self, node: str) -> bool:
        return bool(self.client.list_machines(agent_name=self.agent_name(node)))

    def close(self) -> None:
        """Close the region's connections and the BMC side."""
        with self._lock:
            client, self._client = self._client, None
            bmc, self._bmc = self._bmc, None
        if client is not None:
            client.close()
        if bmc is not None:
            bmc.close()

    def seed_format(self, node: NodeSpec) -> SeedFormat:
        """User-data, for the image's cloud-init."""
        return SeedFormat.USER_DATA

    def concurrency_key(self, node: NodeSpec) -> tuple[str, int]:
        """One region: at most 8 nodes acting on it at once."""
        return f"maas:{self.client.url}", 8

    # ------------------------------------------------------------------------------------------- machines
    def _machine(self, node: str, found: MaasMachine) -> Machine:
        attributes = {"system_id": found.system_id, "hostname": found.hostname, "power_type": found.power_type}
        if found.mac_addresses:
            attributes["mac"] = found.mac_addresses[0].lower()
        machine = Machine(node, found.system_id, found.hostname, attributes)
        self._machines[node] = machine
        return machine

    def find_machine(self, node: NodeSpec, record: Machine | None) -> Machine | None:
        """By the journal's system id (still ours: allocated under our agent name), else by the agent name."""
        self._nodes.setdefault(node.name, node)
        mark = self.agent_name(node.name)
        if record is not None:
            try:
                found = self.client.get_machine(record.id)
            except MaasNotFound:
                found = None
            if found is not None and found.status not in _GIVEN_BACK and self._ours(found, mark):
                return self._machine(node.name, found)
        held = [m for m in self.client.list_machines(agent_name=mark) if m.status not in _GIVEN_BACK]
        if len(held) > 1:
            names = ", ".join(sorted(m.hostname for m in held))
            raise ProviderError(f"MAAS holds {len(held)} machines for {node.name} ({names}); release the extra ones",
                                provider=PROVIDER, resource=node.name)  # fmt: skip
        return self._machine(node.name, held[0]) if held else None

    def _ours(self, found: MaasMachine, mark: str) -> bool:
        # MAAS lists a machine under an agent_name filter only if it carries it: ask it rather than trust a field
        # some MAAS versions leave out of the machine's own answer.
        return any(m.system_id == found.system_id for m in self.client.list_machines(agent_name=mark))

    def allocate_machine(self, node: NodeSpec) -> Machine:
        """Allocate per the node's constraints (never retried blindly: see the client), marked as ours."""
        self._nodes[node.name] = node
        try:
            found = self.client.allocate(self._constraints(node), agent_name=self.agent_name(node.name),
                                         comment=self._comment(f"node {node.name}"))  # fmt: skip
        except MaasConflict as exc:
            raise ProviderError(f"MAAS has no Ready machine for {node.name} any more (MAAS: {exc.text})",
                                provider=PROVIDER, resource=node.name) from None  # fmt: skip
        self._log.info("maas_allocated", node=node.name, system_id=found.system_id, hostname=found.hostname)
        return self._machine(node.name, found)

    def release_machine(self, machine: Machine) -> None:
        """Release (with a quick erase when ``erase_on_release``); a machine already given back is fine."""
        try:
            found = self.client.get_machine(machine.id)
        except MaasNotFound:
            return
        if found.status in _GIVEN_BACK:
            return
        erase = self.settings.erase_on_release
        self.client.release(machine.id, erase=erase, quick_erase=erase, comment=self._comment("destroy"))
        self._log.info("maas_released", node=machine.node, system_id=machine.id, erase=erase)

    # ------------------------------------------------------------------------------------------- image deployment
    @property
    def images(self) -> ImageUploader:
        """The image side of the image mode."""
        with self._lock:
            if self._images is None:
                if self.settings.image is None:
                    raise ConfigurationError("mode: image needs platform.image", field="platform.image",
                                             provider=PROVIDER)  # fmt: skip
                self._images = ImageUploader(self.settings.image, self.context, lambda: self.client)
            return self._images

    def deploy_image(self, machine: Machine, node: NodeSpec, user_data: bytes) -> None:
        """Deploy ``custom/<image>`` with the seed as user-data, uploading the image first if MAAS lacks it; a
        machine already deploying or deployed is left alone."""
        found = self.client.get_machine(machine.id)
        if found.status in (DEPLOYING, DEPLOYED):
            return
        image = self.images.ensure()
        self.client.deploy(machine.id, user_data=user_data, osystem="custom", distro_series=image,
                           agent_name=self.agent_name(node.name), comment=self._comment(f"deploy {node.name}"))
        self._log.info("maas_deploy_started", node=node.name, system_id=machine.id, image=f"custom/{image}")

    def deploy_status(self, machine: Machine) -> DeployStatus:
        """MAAS's status; a failure carries its last status message and event (MAAS's text, as data)."""
        found = self.client.get_machine(machine.id)
        if found.status == DEPLOYED:
            return DeployStatus(DeployState.DEPLOYED, found.status_name)
        if found.status == FAILED_DEPLOYMENT:
            events = self.client.events(machine.id, limit=1)
            last = f"; last event: {events[0].type}: {events[0].description}" if events else ""
            message = f": {found.status_message}" if found.status_message else ""
            return DeployStatus(DeployState.FAILED, f"{found.status_name}{message}{last}")
        if found.status == DEPLOYING:
            return DeployStatus(DeployState.DEPLOYING, found.status_name)
        raise ProviderError(f"{machine.name} is {found.status_name} in MAAS, not deploying", provider=PROVIDER,
                            resource=machine.id)  # fmt: skip

    def discover_address(self, machine: Machine, node: NodeSpec) -> str | None:
        """The plan's address; else MAAS's ``ip_addresses``."""
        if node.address is not None:
            return None
        found = self.client.get_machine(machine.id)
        ipv4 = [a for a in found.ip_addresses if "." in a]
        addresses = ipv4 or list(found.ip_addresses)
        return addresses[0] if addresses else None

    # ------------------------------------------------------------------------------------------- power
    def power_state(self, machine: Machine) -> PowerState:
        """MAAS's query of the machine's power."""
        return _POWER.get(self.client.query_power_state(machine.id), PowerState.UNKNOWN)

    def power_on(self, machine: Machine) -> None:
        """Through MAAS."""
        self.client.power_on(machine.id, comment=self._comment("power on"))

    def power_off(self, machine: Machine) -> None:
        """Through MAAS (a machine MAAS no longer knows: nothing to do)."""
        try:
            self.client.power_off(machine.id, comment=self._comment("power off"))
        except MaasNotFound:
            return
