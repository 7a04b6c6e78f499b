"""The bare-metal provider: servers enrolled by their BMCs, the appliance ISO and seeds from the media server."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from palette_provision.errors import ConfigurationError, PlanIssue, ProviderError, TransientError, WaitTimeout
from palette_provision.media import sha256_file
from palette_provision.plan import DeploymentPlan, NodeSpec
from palette_provision.provider import (
    BootDevice,
    InstallMethod,
    Lifecycle,
    Machine,
    MediaFile,
    MediaSlot,
    PowerState,
    ProgressCallback,
    ProviderContext,
    SeedFormat,
    SlotKind,
    StagedMedia,
)
from palette_provision.waiting import Backoff, wait_for
from pydantic import BaseModel

from palette_provision_baremetal._bmc import BmcDriver, BmcGate, BmcTimedOut
from palette_provision_baremetal._ipmi import IpmiDriver
from palette_provision_baremetal._redfish import RedfishDriver
from palette_provision_baremetal._settings import BaremetalNodeSettings, BaremetalSettings

__all__ = ["BaremetalProvider"]

PROVIDER = "baremetal"
#: The locator of a file no BMC fetches (every node attaches its media by hand): it stays where it is.
_LOCAL = "file:"
_RETRY_BACKOFF = Backoff(initial=1.0, maximum=5.0)


class BaremetalProvider:
    """Servers behind Redfish or IPMI BMCs, enrolled (never created or deleted): see the package docstring."""

    name: ClassVar[str] = PROVIDER
    settings_model: ClassVar[type[BaseModel]] = BaremetalSettings
    node_settings_model: ClassVar[type[BaseModel] | None] = BaremetalNodeSettings
    lifecycle = Lifecycle.ENROLLED
    #: A DHCP node's address is its own report to the media server (see ``discover_address``).
    address_source: ClassVar[str] = "node"
    install_methods = (InstallMethod.BOOT_FROM_MEDIA,)

    def __init__(
        self, settings: BaremetalSettings, context: ProviderContext, *, serve_media: bool | None = None
    ) -> None:
        """``serve_media``: whether the ISO goes on the media server; ``None``: when some node's BMC fetches it
        (a provider that adopts its nodes later, MAAS's bmc mode, says ``True``)."""
        self.settings = settings
        self._serve_media = serve_media
        self.context = context
        self._log = context.log
        self._gate = BmcGate(settings.min_command_interval_s)
        self._nodes: dict[str, NodeSpec] = {n.name: n for n in context.nodes}
        self._drivers: dict[str, BmcDriver] = {}
        self._lock = threading.Lock()
        self._media: Any = None
        self._enrolled: set[str] = set()
        # Each node's slot layout, as a session last listed it: a server's slots do not change during a run, so the
        # seed's format is chosen from preflight's listing instead of a session of its own (seconds on a slow BMC).
        self._layouts: dict[str, list[MediaSlot]] = {}

    # ------------------------------------------------------------------------------------------- drivers
    def settings_for(self, spec: NodeSpec) -> BaremetalNodeSettings | None:
        """``spec``'s own settings (``nodes.hosts[i]``), else its place in ``platform.bmc_range``, else None."""
        if isinstance(spec.settings, BaremetalNodeSettings):
            return spec.settings
        bmc_range = self.settings.bmc_range
        if bmc_range is not None and spec.index < bmc_range.bounds()[1]:
            return bmc_range.node_settings(spec.index)
        return None

    def _node_settings(self, node: str) -> BaremetalNodeSettings:
        spec = self._nodes.get(node)
        settings = self.settings_for(spec) if spec is not None else None
        if settings is None:
            raise ConfigurationError(f"{node} has no BMC settings", field="nodes.hosts", provider=PROVIDER)
        return settings

    def adopt(self, spec: NodeSpec) -> None:
        """Drive ``spec``'s machine through the BMC its settings name (a :class:`BaremetalNodeSettings`), learnt at
        run time: MAAS's bmc mode reads each allocated machine's BMC from MAAS. A node adopted again with the same
        settings keeps its driver."""
        if not isinstance(spec.settings, BaremetalNodeSettings):
            raise ConfigurationError(f"{spec.name} has no BMC settings", field="nodes.hosts", provider=PROVIDER)
        with self._lock:
            known = self._nodes.get(spec.name)
            if known is not None and known.settings != spec.settings:
                self._drivers.pop(spec.name, None)
            self._nodes[spec.name] = spec

    def driver(self, node: str) -> BmcDriver:
        """The node's BMC driver (built once)."""
        with self._lock:
            if node not in self._drivers:
                bmc = self._node_settings(node).bmc
                if bmc.protocol == "ipmi":
                    self._drivers[node] = IpmiDriver(bmc.address, bmc.effective_port, bmc.username, bmc.password,
                                                     node=node, timeout_s=self.settings.power_timeout_s)
                    return self._drivers[node]
                if bmc.tls == "insecure":
                    self._log.warning("bmc_tls_unverified", node=node, bmc=bmc.address)
                self._drivers[node] = RedfishDriver(
                    bmc.address, bmc.effective_port, bmc.username, bmc.password, node=node, tls=bmc.tls,
                    ca_bundle=bmc.ca_bundle, fingerprint=bmc.fingerprint, system_id=bmc.system_id,
                    power_timeout_s=self.settings.power_timeout_s, request_timeout_s=self.settings.request_timeout_s,
                )  # fmt: skip
            return self._drivers[node]

    def _run(
        self, node: str, command: Any, *, retry_on: tuple[type[TransientError], ...] = (TransientError,)
    ) -> Any:
        """``command`` in a session of its own; a transient failure (the BMC did not answer, a lossy link) is
        retried, with a new session each time, for up to ``bmc_retry_s``. Every command reads before it acts, so
        running one again is safe. ``retry_on``: the failures worth a retry."""
        driver = self.driver(node)
        return wait_for(
            lambda: self._gate.run(driver, command),
            what=f"{node}'s BMC to answer",
            until=lambda _: True,
            timeout=self.settings.bmc_retry_s,
            retry_on=retry_on,
            backoff=_RETRY_BACKOFF,
            log=self._log.bind(node=node),
        )

    @property
    def sessions(self) -> tuple[int, int]:
        """(opened, closed) BMC sessions so far: equal whenever no call is running."""
        return self._gate.opened, self._gate.closed

    # ------------------------------------------------------------------------------------------- provider
    def validate(self, plan: DeploymentPlan) -> list[PlanIssue]:
        """Every node listed with its BMC; no two nodes on one BMC system."""
        issues: list[PlanIssue] = []
        bmc_range = self.settings.bmc_range
        if plan.nodes.hosts and bmc_range is not None:
            return [PlanIssue("platform.bmc_range", "give the BMCs as nodes.hosts[i].bmc or as a range, not both")]
        if not plan.nodes.hosts and bmc_range is None:
            return [PlanIssue("nodes.hosts", "list each server with its bmc, or give platform.bmc_range (the provider "
                              "enrolls, never creates)")]  # fmt: skip
        if bmc_range is not None and bmc_range.bounds()[1] < plan.node_count:
            return [PlanIssue("platform.bmc_range.addresses",
                              f"{bmc_range.bounds()[1]} address(es) for {plan.node_count} nodes")]  # fmt: skip
        seen: dict[tuple[str, int, str | None], int] = {}
        for spec in plan.node_specs():
            i, settings = spec.index, self.settings_for(spec)
            if settings is None:
                continue  # reported by the node settings' own validation
            if settings.operator_seed and spec.address is None:
                issues.append(PlanIssue(
                    f"nodes.hosts[{i}].address",
                    "an IPMI node needs its address in the plan: with DHCP it would have no media server to report "
                    "its address to",
                ))
            bmc = settings.bmc
            ident = (bmc.address, bmc.effective_port, bmc.system_id)
            if ident in seen:
                issues.append(PlanIssue(f"nodes.hosts[{i}].bmc", f"the same BMC system as nodes.hosts[{seen[ident]}]"))
            seen.setdefault(ident, i)
        advertise = self.settings.advertise_issue()
        if advertise and any(self._needs_server(spec) for spec in plan.node_specs()):
            issues.append(PlanIssue("platform.media_server.advertise_host", advertise))
        return issues

    def _needs_server(self, spec: NodeSpec) -> bool:
        settings = self.settings_for(spec)
        return settings is None or settings.needs_media_server

    def _server_needed(self) -> bool:
        """Whether any node's BMC fetches from the media server (IPMI-only deployments never start it)."""
        if self._serve_media is not None:
            return self._serve_media
        return any(self._needs_server(spec) for spec in self._nodes.values())

    def preflight(self, plan: DeploymentPlan) -> None:
        """Every BMC answers and takes the credentials; slots for the ISO and the seed; no node running unless
        ``reinstall``; the media server runs (started detached if needed: it outlives this run)."""
        for spec in plan.node_specs():
            self._nodes[spec.name] = spec
        for spec in plan.node_specs():
            where = f"nodes.hosts[{spec.index}].bmc"
            try:
                # A BMC nothing answers for (a refused connection, a wrong address) is the operator's to fix, said
                # at once; a request that timed out is tried again (a lossy link stalls one request in many).
                state, slots = self._run(spec.name, lambda s: (s.power_state(), s.media_slots()),
                                         retry_on=(BmcTimedOut,))  # fmt: skip
                self._layouts[spec.name] = slots
            except ConfigurationError:
                raise
            except (ProviderError, WaitTimeout) as exc:
                raise ConfigurationError(str(exc), field=where, provider=PROVIDER) from exc
            settings = self._node_settings(spec.name)
            need = 0 if settings.operator_seed else 1 if settings.media == "preinserted" else 2
            if len(slots) < need:
                raise ConfigurationError(
                    f"{spec.name}'s BMC offers {len(slots)} virtual-media slot(s); {need} are needed "
                    "(the ISO and the seed)", field=where, provider=PROVIDER,
                )  # fmt: skip
            # Running is expected of a server this deployment already enrolled (a re-run); of another, it means a
            # system someone may be using.
            ours = spec.name in self.context.owned_machines or spec.name in self._enrolled
            if state is PowerState.ON and not ours and not self.settings.reinstall:
                raise ConfigurationError(
                    f"{spec.name} is powered on; set platform.reinstall: true to power it off and reinstall it",
                    field="platform.reinstall", provider=PROVIDER,
                )  # fmt: skip
        if self._server_needed():
            self.check_media_server()

    def check_media_server(self) -> None:
        """Start the media server if needed and check it answers at the URL BMCs will be given.

        Raises:
            ConfigurationError: it does not answer there, or something else does.
        """
        self._check_advertised(self._server())

    def _check_advertised(self, server: Any) -> None:
        """The media server answers at the URL the BMCs will be given (as far as this host can tell: whether the
        BMC network reaches that address is the operator's to open, see docs/providers/baremetal.md)."""
        import httpx
        from palette_provision.media_server import HEALTH_PATH
        from palette_provision.tls import pinned_context

        url = str(server.url) + HEALTH_PATH
        # Over HTTPS, the server's own certificate, pinned (it is self-signed unless the operator gave one).
        verify: Any = pinned_context(server.cert_sha256, server="media server") if server.cert_sha256 else True
        try:
            with httpx.Client(verify=verify, trust_env=False, timeout=5.0) as client:
                answer = client.head(url)
        except httpx.HTTPError as exc:
            raise ConfigurationError(
                f"the media server does not answer at {server.url}, the address BMCs would fetch from "
                f"({type(exc).__name__})", field="platform.media_server", provider=PROVIDER,
            ) from None  # fmt: skip
        if answer.headers.get("x-media-server") != server.instance:
            raise ConfigurationError(
                f"{server.url} is answered by something else than this deployment's media server",
                field="platform.media_server.advertise_host", provider=PROVIDER,
            )  # fmt: skip

    def close(self) -> None:
        """Every BMC session is closed after its command already. The media server keeps running while it serves
        a seed: a node may be installing from it (and a run killed mid-install never gets here: see
        docs/media-server.md). Serving only the ISO, it stops; a later run starts it again at the same URL."""
        from palette_provision.media_server import find_media_server, stop_media_server

        folder = self.context.state_dir / "media-server"
        with self._lock:
            self._media = None
        if not folder.is_dir():
            return
        server = find_media_server(folder)
        if server is not None and not any(e.node for e in server.catalog.entries()):
            stop_media_server(folder)

    def concurrency_key(self, node: NodeSpec) -> tuple[str, int]:
        """One acting step at a time per BMC."""
        return self.driver(node.name).key, 1

    def seed_format(self, node: NodeSpec) -> SeedFormat:
        """A FAT ``cidata`` image for a removable-disk slot, else a ``cidata`` ISO for a second CD (or, on an IPMI
        server, for the operator to attach: an ISO image works as a virtual CD and written to a USB stick)."""
        if self._node_settings(node.name).operator_seed:
            return SeedFormat.CIDATA_ISO
        slots = self._layouts.get(node.name)
        if slots is None:
            slots = self._layouts[node.name] = self._run(node.name, lambda s: s.media_slots())
        if any(s.kind is SlotKind.REMOVABLE_DISK for s in slots):
            return SeedFormat.CIDATA_DISK
        return SeedFormat.CIDATA_ISO

    # ------------------------------------------------------------------------------------------- machines
    def enroll_machine(self, node: NodeSpec, record: Machine | None) -> Machine:
        """The server behind the node's BMC: reachable, and the same system on every enrolment."""
        self._nodes[node.name] = node
        driver = self.driver(node.name)
        self._run(node.name, lambda s: s.power_state())
        self._enrolled.add(node.name)
        settings = self._node_settings(node.name)
        attributes = {"bmc": driver.key}
        if settings.mac:
            attributes["mac"] = settings.mac.lower()
        return Machine(node.name, driver.key, node.name, attributes)

    # ------------------------------------------------------------------------------------------- power and boot
    def power_state(self, machine: Machine) -> PowerState:
        """As the BMC reports it."""
        state: PowerState = self._run(machine.node, lambda s: s.power_state())
        return state

    def power_on(self, machine: Machine) -> None:
        """Power on and wait until the BMC reports it (already on: nothing sent)."""
        self._run(machine.node, lambda s: s.set_power(True))

    def power_off(self, machine: Machine) -> None:
        """Hard power off (already off: nothing sent)."""
        self._run(machine.node, lambda s: s.set_power(False))

    def set_boot_device(self, machine: Machine, device: BootDevice, *, persistent: bool) -> None:
        """The next boot's device (``persistent``: every boot's)."""
        self._run(machine.node, lambda s: s.set_boot_device(device, persistent=persistent))

    def clear_boot_override(self, machine: Machine) -> None:
        """Back to the server's own boot order."""
        self._run(machine.node, lambda s: s.clear_boot_override())

    # ------------------------------------------------------------------------------------------- virtual media
    def media_slots(self, machine: Machine) -> list[MediaSlot]:
        """The BMC's slots; with ``media: preinserted`` the first CD holds the operator's ISO. An IPMI BMC has none:
        the operator attaches both, which nothing over IPMI can read back."""
        settings = self._node_settings(machine.node)
        if settings.operator_seed:
            return [MediaSlot(SlotKind.CD, 0, "appliance-iso", readable=False),
                    MediaSlot(SlotKind.CD, 1, "seed", readable=False)]  # fmt: skip
        slots: list[MediaSlot] = self._run(machine.node, lambda s: s.media_slots())
        self._layouts[machine.node] = slots
        if settings.media == "preinserted":
            slots = [
                MediaSlot(s.kind, s.index, "appliance-iso") if (s.kind, s.index) == (SlotKind.CD, 0) else s
                for s in slots
            ]
        return slots

    def insert_media(self, machine: Machine, media: Mapping[MediaSlot, StagedMedia]) -> None:
        """Insert each file by its media-server URL; each slot read back."""
        server = self._server()
        urls = {slot: server.url_for(staged.locator) for slot, staged in media.items()}

        def insert(session: Any) -> None:
            for slot, url in sorted(urls.items()):
                session.insert_media(slot, url)

        self._run(machine.node, insert)

    def inserted_media(self, machine: Machine) -> dict[MediaSlot, str]:
        """What each slot holds: our files by their locator, anything else (an operator's ISO) by its URL."""
        if self._node_settings(machine.node).operator_seed:
            return {}
        by_url = self._published_urls()
        held: dict[MediaSlot, str] = self._run(machine.node, lambda s: s.inserted_media())
        return {slot: by_url.get(url, url) for slot, url in held.items()}

    def eject_media(self, machine: Machine, slots: Sequence[MediaSlot]) -> None:
        """Empty the slots (empty already: fine)."""

        def eject(session: Any) -> None:
            for slot in slots:
                session.eject_media(slot)

        self._run(machine.node, eject)

    # ------------------------------------------------------------------------------------------- addresses
    def address_report_url(self, node: NodeSpec) -> str | None:
        """A DHCP node reports its addresses to the media server (its BMC reaches it; its network usually does
        too): its own token, and any report of an earlier install dropped. None for IPMI nodes (no server)."""
        if not self._needs_server(node):
            return None
        server = self._server()
        server.reports.clear_report(node.name)
        url: str = server.report_url(node.name)
        return url

    def discover_address(self, machine: Machine, node: NodeSpec) -> str | None:
        """The address a DHCP node last reported to the media server (checked: an IP address), or None."""
        if node.address is not None or not self._needs_server(node):
            return None
        report = self._server().reported(node.name)
        address = report.best() if report is not None else None
        if address is not None:
            self._log.debug("address_from_report", node=node.name, address=address)
        return address

    # ------------------------------------------------------------------------------------------- media server
    def _server(self) -> Any:
        from palette_provision.media_server import ensure_media_server

        with self._lock:
            if self._media is None:
                ms = self.settings.media_server
                self._media = ensure_media_server(
                    self.context.state_dir / "media-server", ms.bind, advertise_host=ms.advertise_host
                )
            return self._media

    def _published_urls(self) -> dict[str, str]:
        server = self._server()
        return {server.url_for(entry): entry.key for entry in server.catalog.entries()}

    def stage_media(self, media: MediaFile, progress: ProgressCallback | None = None) -> StagedMedia:
        """Publish the file on the media server (nothing is copied: the server reads it where it is). A file no BMC
        fetches (an IPMI node's seed; the ISO when every node's is attached by hand) is left where it is."""
        path = Path(media.local_path)
        seed_node = self._nodes.get(media.node or "") if media.role == "seed" else None
        wanted = self._needs_server(seed_node) if seed_node is not None else self._server_needed()
        if not wanted:
            if progress is not None:
                progress(media.size, media.size)
            return StagedMedia(media.role, _LOCAL + str(path), media.sha256 or sha256_file(path), media.size, 0,
                               media.node)  # fmt: skip
        server = self._server()
        if media.role == "seed":
            entry = server.publish_seed(media.node or path.stem, path, file_name=media.name)
        else:
            entry = server.publish_iso(path, file_name=media.name, sha256=media.sha256)
        digest = media.sha256 or sha256_file(path)
        if progress is not None:
            progress(media.size, media.size)
        return StagedMedia(media.role, entry.key, digest, media.size, 0, media.node)

    def unstage_media(self, staged: StagedMedia) -> None:
        """Stop serving the file; the server stops once it serves nothing."""
        from palette_provision.media_server import stop_media_server

        if staged.locator.startswith(_LOCAL):
            return  # never published; the core removes its local seed copies itself
        server = self._server()
        server.unpublish(staged.locator)
        if not server.catalog.entries():
            stop_media_server(self.context.state_dir / "media-server")
            with self._lock:
                self._media = None
