"""A fake provider for rehearsals and tests, playing the three machine lifecycles, with fault knobs.

Its "platform" is a JSON file (``state_file``), so separate processes (a killed ``apply`` and its re-run) see the
same machines, and every side effect is appended to an action log that tests read back with :func:`read_state`.

``lifecycle`` chooses what it plays:

* ``created`` (default): VMs made per node, two CD drives, the seed as a ``cidata`` ISO; boot-from-media.
* ``enrolled``: rack servers that exist already, one per BMC named in ``nodes.hosts[i].bmc``, each with a BMC-like
  power, a one-time or persistent boot device, and a virtual CD plus a removable-disk slot (the seed goes there as
  a ``cidata`` disk image); ``preinserted`` nodes have the ISO in their CD already, put there by an "operator".
* ``allocated``: machines taken from a pool of ``pool_size``, marked with the deployment as ``agent_name``; the
  deploy-image method (``Deploying`` -> ``Deployed``, or ``Failed deployment`` for nodes in ``deploy_fails``), and
  boot-from-media as well (like MAAS with BMC access).

Knobs (plan ``platform:`` section, ``provider: fake``)::

    platform:
      provider: fake
      state_file: fake-platform.json   # relative to the plan file
      lifecycle: created               # created | enrolled | allocated
      install_seconds: 0.5             # how long the installer (or an image deployment) runs
      iso_upload_seconds: 0            # staging the appliance ISO takes this long (nodes prepare meanwhile)
      power_delay_seconds: 0           # power changes take effect after this delay (clients must poll)
      fail: {node-2: power_on}         # this operation fails on this node (ProviderError)
      crash: {node-2: power_on}        # ...or crashes with an unexpected RuntimeError (a bug, not a refusal)
      slow: {node-3: 1.5}              # seconds added to every call for this node
      flaky_power: 0.3                 # probability that a power call raises TransientError
      unanswered: {node-1: 5}          # power reads raise TransientError for 5 s from the node's CD boot, and
                                       # deployment status reads for 5 s from its image deployment's start (a
                                       # platform that stops answering during the install)
      never_installs: [node-1]         # the installer never finishes (await_install times out)
      ignores_eject: [node-1]          # eject and boot-device changes are ignored: the node installs again
      preinserted: [node-1]            # enrolled: an operator inserted the ISO in the CD slot
      operator_seed: [node-1]          # enrolled: an operator attaches the seed too (apply stops once to say where)
      deploy_fails: [node-2]           # allocated: the image deployment ends in "Failed deployment"
      concurrency_limit: 2             # ConcurrencyLimits: at most this many nodes act at once (one key)
      kill_at: "create_machine:node-2" # SIGKILL this process right after that operation ("power_on:node-2#2":
                                       # after its second call in this process)...
      interrupt_at: "power_on:node-1"  # ...or SIGINT it (Ctrl-C), writing the instant into kill_once_file; the
                                       # call then stays in flight 0.5 s, as a real one is when Ctrl-C lands
      kill_once_file: killed.flag      # ...once: only while this file does not exist

Operations (for ``fail``, ``kill_at`` and the action log): ``stage_media``, ``unstage_media``, ``create_machine``,
``delete_machine``, ``allocate_machine``, ``release_machine``, ``enroll_machine``, ``power_on``, ``power_off``,
``insert_media``, ``eject_media``, ``set_boot_device``, ``clear_boot_override``, ``deploy_image``,
``discover_address``.
"""

from __future__ import annotations

import collections
import hashlib
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from palette_provision.errors import AuthenticationError, ConfigurationError, PlanIssue, ProviderError, TransientError
from palette_provision.media import CHUNK
from palette_provision.plan import DeploymentPlan, NodeSpec, SecretRef
from palette_provision.provider import (
    BootDevice,
    DeployState,
    DeployStatus,
    InstallMethod,
    Lifecycle,
    Machine,
    MediaFile,
    MediaSlot,
    NodeDisks,
    PowerState,
    ProgressCallback,
    ProviderContext,
    SeedFormat,
    SlotKind,
    StagedMedia,
)
from palette_provision.testing._fake_platform import advance, new_machine, platform_state, read_state

__all__ = ["FakeNodeSettings", "FakeProvider", "FakeSettings", "read_state"]


class FakeSettings(BaseModel):
    """Settings of the fake provider (see the module docstring for the knobs)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    state_file: str = Field(default="fake-platform.json", description="The fake platform's state (JSON).")
    lifecycle: Literal["created", "enrolled", "allocated"] = "created"
    install_seconds: float = Field(default=0.5, ge=0)
    iso_upload_seconds: float = Field(default=0.0, ge=0)
    power_delay_seconds: float = Field(default=0.0, ge=0)
    fail: dict[str, str] = Field(default_factory=dict, description="node -> operation that fails")
    crash: dict[str, str] = Field(default_factory=dict, description="node -> operation that raises RuntimeError")
    slow: dict[str, float] = Field(default_factory=dict, description="node -> extra seconds per call")
    flaky_power: float = Field(default=0.0, ge=0, le=1)
    unanswered: dict[str, float] = Field(
        default_factory=dict,
        description="node -> seconds its power (deployment status) reads fail from its CD boot (deployment's start)",
    )
    never_installs: list[str] = Field(default_factory=list)
    ignores_eject: list[str] = Field(default_factory=list)
    preinserted: list[str] = Field(default_factory=list)
    operator_seed: list[str] = Field(
        default_factory=list, description="enrolled nodes whose seed an operator attaches (as behind an IPMI BMC)"
    )
    deploy_fails: list[str] = Field(default_factory=list)
    pool_size: int = Field(default=8, ge=0)
    concurrency_limit: int | None = Field(default=None, ge=1)
    addresses: dict[str, str] = Field(default_factory=dict, description="node -> address the platform reports")
    kill_at: str | None = None
    interrupt_at: str | None = None
    kill_once_file: str | None = None
    password: SecretRef | None = Field(default=None, description="Checked against expected_password at the first "
                                       "platform call (the fake's login).")
    expected_password: SecretRef | None = None
    max_nodes: int = Field(default=64, ge=1)
    seed: int = 0

    @field_validator("state_file", "kill_once_file")
    @classmethod
    def _relative_to_plan(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Paths in a plan are relative to the plan file's folder, which the loader passes as context.
        base = (info.context or {}).get("base_dir")
        if value is None or base is None or Path(value).is_absolute():
            return value
        return str(Path(base) / value)


class FakeNodeSettings(BaseModel):
    """Per-node settings (``nodes.hosts[i]``): the server's BMC (enrolled), a BMC password, a MAC."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    bmc: str | None = Field(default=None, description="Enrolled: the server's BMC address (its identity).")
    bmc_password: SecretRef | None = None
    mac: str | None = None


class FakeProvider:
    """The fake provider. Implements every capability; see the module docstring."""

    name: ClassVar[str] = "fake"
    settings_model: ClassVar[type[BaseModel]] = FakeSettings
    node_settings_model: ClassVar[type[BaseModel] | None] = FakeNodeSettings

    def __init__(self, settings: FakeSettings, context: ProviderContext) -> None:
        self.settings = settings
        self.context = context
        self.lifecycle = Lifecycle(settings.lifecycle)
        self.install_methods: tuple[InstallMethod, ...] = (
            (InstallMethod.DEPLOY_IMAGE, InstallMethod.BOOT_FROM_MEDIA)
            if self.lifecycle is Lifecycle.ALLOCATED
            else (InstallMethod.BOOT_FROM_MEDIA,)
        )
        self._lock = threading.Lock()
        self._rng = random.Random(settings.seed)
        self._calls: collections.Counter[str] = collections.Counter()
        self._logged_in = False

    # --------------------------------------------------------------------------------------- plumbing
    @property
    def state_path(self) -> Path:
        """The fake platform's state file."""
        return Path(self.settings.state_file).resolve()

    def _login(self) -> None:
        """What a real platform's session does first: read the credentials (a deferred secret is read now) and have
        them checked. Once per provider instance."""
        if self._logged_in:
            return
        expected = self.settings.expected_password
        if expected is not None:
            given = self.settings.password.reveal() if self.settings.password is not None else None
            if given != expected.reveal():
                raise AuthenticationError("the fake platform refused the login", field="platform.password",
                                          provider="fake")  # fmt: skip
        self._logged_in = True

    @contextmanager
    def _state(self) -> Iterator[dict[str, Any]]:
        self._login()
        with self._lock, platform_state(self.state_path) as state:
            yield state

    def _op(self, op: str, node: str | None) -> None:
        if node is not None and node in self.settings.slow:
            time.sleep(self.settings.slow[node])
        if node is not None and self.settings.fail.get(node) == op:
            raise ProviderError(f"fake platform refused {op} for {node} (fault knob)", provider="fake", resource=node)
        if node is not None and self.settings.crash.get(node) == op:
            # A frame holding a revealed secret, as a real provider's login code does: a traceback printed with
            # its locals would show it.
            revealed_password = self.settings.password.reveal() if self.settings.password else None
            raise RuntimeError(f"fake crash in {op} (fault knob); password set: {revealed_password is not None}")

    def _record(self, state: dict[str, Any], op: str, node: str | None, **detail: Any) -> None:
        state["actions"].append({"op": op, "node": node, "at": time.time(), **detail})

    def _maybe_kill(self, op: str, node: str | None) -> None:
        point = f"{op}:{node}"
        with self._lock:
            self._calls[point] += 1
            nth = f"{point}#{self._calls[point]}"
        if self.settings.kill_at == nth:
            point = nth
        elif point not in (self.settings.kill_at, self.settings.interrupt_at):
            return
        flag = Path(self.settings.kill_once_file) if self.settings.kill_once_file else None
        if flag is not None:
            if flag.exists():
                return
            flag.write_text(f"{time.time()!r}\n")  # when: tests check that nothing began after it
        if point == self.settings.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGINT)
        # Sent from inside this worker, the signal would otherwise race it: the main thread handles it only once it
        # gets the GIL. A real Ctrl-C lands while a platform call is in flight; this one stays in flight a moment.
        time.sleep(0.5)

    def _mac(self, index: int) -> str:
        return f"52:54:00:{index:02x}:{self._rng.randrange(256):02x}:{self._rng.randrange(256):02x}"

    def _find(self, state: dict[str, Any], machine: Machine) -> dict[str, Any] | None:
        """The machine's dict, if it exists (and, for a pool machine, is still ours)."""
        if self.lifecycle is Lifecycle.CREATED:
            m = state["machines"].get(machine.node)
            return m if m is not None and m["id"] == machine.id else None
        if self.lifecycle is Lifecycle.ENROLLED:
            found: dict[str, Any] | None = state["servers"].get(machine.id)
            return found
        m = state["pool"].get(machine.id)
        return m if m is not None and m.get("owner") == self.context.deployment else None

    def _machine(self, state: dict[str, Any], machine: Machine) -> dict[str, Any]:
        m = self._find(state, machine)
        if m is None:
            raise ProviderError(f"machine {machine.id} does not exist", provider="fake", resource=machine.id)
        self._advance(m, machine)
        return m

    def _advance(self, m: dict[str, Any], machine: Machine) -> None:
        installs = machine.node not in self.settings.never_installs
        advance(m, install_seconds=self.settings.install_seconds, installs=installs)

    # --------------------------------------------------------------------------------------- Provider
    def validate(self, plan: DeploymentPlan) -> list[PlanIssue]:
        """Offline checks: node count, knobs naming unknown nodes, enrolled nodes without a BMC."""
        issues = []
        if plan.node_count > self.settings.max_nodes:
            limit = self.settings.max_nodes
            issues.append(PlanIssue("nodes.count", f"the fake platform holds at most {limit} machines"))
        names = set(plan.node_names())
        for knob in ("fail", "slow", "addresses", "unanswered"):
            for node in getattr(self.settings, knob):
                if node not in names:
                    issues.append(PlanIssue(f"platform.{knob}.{node}", "no node of that name in the plan"))
        if self.lifecycle is Lifecycle.ENROLLED:
            for node in plan.node_specs():
                if node.settings is None or node.settings.bmc is None:
                    where = f"nodes.hosts[{node.index}].bmc" if plan.nodes.hosts else "nodes.hosts"
                    issues.append(PlanIssue(where, f"an enrolled machine needs its BMC ({node.name})"))
        return issues

    def preflight(self, plan: DeploymentPlan) -> None:
        """Log in (the password knob) and refuse planned names taken by machines this deployment does not own."""
        with self._state() as state:
            if self.lifecycle is not Lifecycle.CREATED:
                return
            for node in plan.node_names():
                if node in state["machines"] and node not in self.context.owned_machines:
                    raise ConfigurationError(
                        f"a machine named {node} already exists and this deployment did not create it",
                        field="nodes.names",
                        provider="fake",
                    )

    def close(self) -> None:
        """Nothing to release."""

    def concurrency_key(self, node: NodeSpec) -> tuple[str, int]:
        """One key for the whole fake platform, limited by ``concurrency_limit`` (unlimited: the node count)."""
        return "fake", self.settings.concurrency_limit or self.settings.max_nodes

    def disk_layout(self, node: NodeSpec) -> NodeDisks | None:
        """Created machines: /dev/sda and /dev/sdb (as the vSphere provider builds them). Others: unknown (the plan
        names them)."""
        if self.lifecycle is not Lifecycle.CREATED:
            return None
        return NodeDisks("/dev/sda", "/dev/sdb" if node.storage_disk_gb > 0 else None)

    def seed_format(self, node: NodeSpec) -> SeedFormat:
        """A VM reads a second CD; a BMC's second slot is a removable disk; a deployed image reads user-data."""
        if self.lifecycle is Lifecycle.ENROLLED:
            return SeedFormat.CIDATA_DISK
        if self.lifecycle is Lifecycle.ALLOCATED and self.install_methods[0] is InstallMethod.DEPLOY_IMAGE:
            return SeedFormat.USER_DATA
        return SeedFormat.CIDATA_ISO

    # --------------------------------------------------------------------------------------- media staging
    def stage_media(self, media: MediaFile, progress: ProgressCallback | None = None) -> StagedMedia:
        """Record the media under a content-addressed locator; skip when an identical copy is recorded."""
        self._op("stage_media", media.node)
        if media.role == "appliance-iso":
            time.sleep(self.settings.iso_upload_seconds)
        sha = media.sha256
        locator = self.locate_media(media)
        with self._state() as state:
            existing = state["media"].get(locator)
        if sha is not None and existing and existing["sha256"] == sha and existing["size"] == media.size:
            return StagedMedia(media.role, locator, sha, media.size, 0, media.node)
        # "Uploads" the file: reads it in chunks with progress, hashing unless the core vouches for its digest.
        digest = None if media.sha256_checked and sha is not None else hashlib.sha256()
        sent = 0
        with media.local_path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                if digest is not None:
                    digest.update(chunk)
                sent += len(chunk)
                if progress:
                    progress(sent, media.size)
        sha = digest.hexdigest() if digest is not None else str(sha)  # vouched: sha is the core's digest
        with self._state() as state:
            existing = state["media"].get(locator)
            if existing and existing["sha256"] == sha and existing["size"] == media.size:
                return StagedMedia(media.role, locator, sha, media.size, 0, media.node)
            state["media"][locator] = {"sha256": sha, "size": media.size, "role": media.role}
            self._record(state, "stage_media", media.node, locator=locator)
            uploaded = media.size
        self._maybe_kill("stage_media", media.node)
        return StagedMedia(media.role, locator, sha, media.size, uploaded, media.node)

    def locate_media(self, media: MediaFile) -> str:
        """Where :meth:`stage_media` puts ``media`` (MediaLocating; no I/O)."""
        return f"fake://media/{media.name}"

    def unstage_media(self, staged: StagedMedia) -> None:
        """Forget the media (gone already is fine)."""
        self._op("unstage_media", staged.node)
        with self._state() as state:
            if state["media"].pop(staged.locator, None) is not None:
                self._record(state, "unstage_media", staged.node, locator=staged.locator)
        self._maybe_kill("unstage_media", staged.node)

    # --------------------------------------------------------------------------------------- machines
    def find_machine(self, node: NodeSpec, record: Machine | None) -> Machine | None:
        """Created: the machine named after the node. Allocated: ours by ``record``'s id, else by agent name."""
        with self._state() as state:
            if self.lifecycle is Lifecycle.CREATED:
                m = state["machines"].get(node.name)
                return None if m is None else Machine(node.name, m["id"], node.name, {"mac": m["mac"]})
            for mid, m in state["pool"].items():
                mine = m.get("owner") == self.context.deployment
                # By the journal's system id; without a record, by the mark the allocation left (agent name, node).
                same = mid == record.id if record is not None else m.get("node") == node.name
                if mine and same:
                    return Machine(node.name, mid, mid, {"mac": m["mac"]})
        return None

    def create_machine(self, node: NodeSpec, media: Sequence[StagedMedia]) -> Machine:
        """Create a powered-off VM with empty CD drives.

        The ``media`` hint is ignored on purpose: whether the ISO is staged yet depends on timing, and the action
        log the resume tests compare must not (``insert_media`` fills the drives, one logged action per node).
        """
        self._op("create_machine", node.name)
        mid, mac = f"fake-{uuid.uuid4().hex[:12]}", self._mac(node.index)
        with self._state() as state:
            m = new_machine(mid, "created", mac, cpus=node.cpus, memory_mb=node.memory_mb)
            state["machines"][node.name] = m
            self._record(state, "create_machine", node.name, id=mid)
        self._maybe_kill("create_machine", node.name)
        return Machine(node.name, mid, node.name, {"mac": mac})

    def delete_machine(self, machine: Machine) -> None:
        """Delete the VM (gone already is fine)."""
        self._op("delete_machine", machine.node)
        with self._state() as state:
            if self._find(state, machine) is not None:
                del state["machines"][machine.node]
                self._record(state, "delete_machine", machine.node, id=machine.id)
        self._maybe_kill("delete_machine", machine.node)

    def allocate_machine(self, node: NodeSpec) -> Machine:
        """Take a free pool machine, marked with the deployment (``agent_name``) and the node."""
        self._op("allocate_machine", node.name)
        with self._state() as state:
            for i in range(self.settings.pool_size):
                state["pool"].setdefault(f"pool-{i:03d}", new_machine(f"pool-{i:03d}", "allocated", self._mac(i)))
            free = sorted(mid for mid, m in state["pool"].items() if m.get("owner") is None)
            if not free:
                raise ProviderError("no free machine in the fake pool", provider="fake", resource=node.name)
            m = state["pool"][free[0]]
            m.update(owner=self.context.deployment, node=node.name, deploy=None)
            self._record(state, "allocate_machine", node.name, id=m["id"])
        self._maybe_kill("allocate_machine", node.name)
        return Machine(node.name, m["id"], m["id"], {"mac": m["mac"]})

    def release_machine(self, machine: Machine) -> None:
        """Give the machine back: powered off, slots empty, no owner (released already is fine)."""
        self._op("release_machine", machine.node)
        with self._state() as state:
            m = self._find(state, machine)
            if m is not None:
                state["pool"][machine.id] = new_machine(machine.id, "allocated", m["mac"], installs=m["installs"])
                self._record(state, "release_machine", machine.node, id=machine.id)
        self._maybe_kill("release_machine", machine.node)

    def enroll_machine(self, node: NodeSpec, record: Machine | None) -> Machine:
        """The server behind the node's BMC (it exists already: first sight registers it, powered off)."""
        self._op("enroll_machine", node.name)
        bmc = node.settings.bmc if node.settings is not None else None
        if bmc is None:
            where = f"nodes.hosts[{node.index}].bmc"
            raise ConfigurationError(f"{node.name} names no BMC", field=where, provider="fake")
        with self._state() as state:
            if bmc not in state["servers"]:
                server = new_machine(bmc, "enrolled", self._mac(node.index), boot_default="disk")
                if node.name in self.settings.preinserted:
                    server["slots"]["cd0"] = {"locator": "operator://palette.iso", "role": "operator-iso"}
                state["servers"][bmc] = server
            m = state["servers"][bmc]
            if record is None or record.id != bmc:
                self._record(state, "enroll_machine", node.name, id=bmc)
        return Machine(node.name, bmc, f"server {bmc}", {"mac": m["mac"], "bmc": bmc})

    # --------------------------------------------------------------------------------------- power
    def power_state(self, machine: Machine) -> PowerState:
        """The machine's power state (applies pending changes and the install cycle)."""
        with self._state() as state:
            m = self._machine(state, machine)
        self._unanswered(machine, m["powered_on_at"] if m["booted_from"] == "cd" else None)
        return PowerState(m["power"])

    def _unanswered(self, machine: Machine, since: float | None) -> None:
        """The ``unanswered`` knob: raise while ``since`` (the CD boot, the deployment's start) is that recent."""
        quiet = self.settings.unanswered.get(machine.node)
        if quiet is not None and since is not None and time.time() - since < quiet:
            raise TransientError(f"the fake platform did not answer for {machine.node} (unanswered knob)",
                                 provider="fake", resource=machine.node)  # fmt: skip

    def _set_power(self, machine: Machine, target: str) -> None:
        op = f"power_{target}"
        self._op(op, machine.node)
        if self.settings.flaky_power and self._rng.random() < self.settings.flaky_power:
            raise TransientError(f"fake BMC busy during {op} (flaky_power knob)", provider="fake")
        with self._state() as state:
            if self._find(state, machine) is None:
                if target == "off":
                    return
                raise ProviderError(f"machine {machine.id} does not exist", provider="fake", resource=machine.id)
            m = self._machine(state, machine)
            if m["target"] == target:
                return
            m["target"] = target
            m["effective_at"] = time.time() + self.settings.power_delay_seconds
            self._advance(m, machine)
            self._record(state, op, machine.node)
        self._maybe_kill(op, machine.node)

    def power_on(self, machine: Machine) -> None:
        """Power on, returning once it took effect (already on: nothing happens)."""
        self._set_power(machine, "on")
        # Like a provider for an asynchronous BMC, wait until the change is applied before returning.
        time.sleep(self.settings.power_delay_seconds)

    def power_off(self, machine: Machine) -> None:
        """Power off (already off or gone: nothing happens)."""
        self._set_power(machine, "off")

    def last_power_on(self, machine: Machine) -> float | None:
        """When the machine last powered on (PowerHistory)."""
        with self._state() as state:
            if self._find(state, machine) is None:
                return None
            value = self._machine(state, machine).get("powered_on_at")
            return None if value is None else float(value)

    # --------------------------------------------------------------------------------------- boot and media
    def set_boot_device(self, machine: Machine, device: BootDevice, *, persistent: bool) -> None:
        """Set the boot device (a VM's boot order is always persistent); ignored for ``ignores_eject`` nodes."""
        self._op("set_boot_device", machine.node)
        if machine.node in self.settings.ignores_eject and device is BootDevice.DISK:
            return
        once = not persistent and self.lifecycle is not Lifecycle.CREATED
        with self._state() as state:
            m = self._machine(state, machine)
            if (m["boot"], m["boot_once"]) != (device.value, once):
                m["boot"], m["boot_once"] = device.value, once
                self._record(state, "set_boot_device", machine.node, device=device.value, persistent=not once)
        self._maybe_kill("set_boot_device", machine.node)

    def clear_boot_override(self, machine: Machine) -> None:
        """Back to the machine's own boot order (disk)."""
        self._op("clear_boot_override", machine.node)
        with self._state() as state:
            m = self._find(state, machine)
            if m is not None and (m["boot"], m["boot_once"]) != (m.get("boot_default", "disk"), False):
                m["boot"], m["boot_once"] = m.get("boot_default", "disk"), False
                self._record(state, "clear_boot_override", machine.node)

    def media_slots(self, machine: Machine) -> list[MediaSlot]:
        """A VM's two CD drives, or a BMC's CD (maybe holding an operator's ISO) and removable disk."""
        with self._state() as state:
            m = self._machine(state, machine)
        slots = []
        for name, held in m["slots"].items():
            kind = SlotKind.CD if name.startswith("cd") else SlotKind.REMOVABLE_DISK
            operator = held is not None and held["role"] == "operator-iso"
            if kind is SlotKind.REMOVABLE_DISK and machine.node in self.settings.operator_seed:
                # The platform cannot insert into or read this one: the operator's USB stick.
                slots.append(MediaSlot(kind, int(name[-1]), "seed", readable=False))
                continue
            slots.append(MediaSlot(kind, int(name[-1]), "appliance-iso" if operator else None))
        return slots

    def insert_media(self, machine: Machine, media: Mapping[MediaSlot, StagedMedia]) -> None:
        """Put each file in its slot unless it is there already."""
        self._op("insert_media", machine.node)
        with self._state() as state:
            m = self._machine(state, machine)
            changed = []
            for slot, item in media.items():
                name = str(slot).replace("removable-disk", "usb")
                if name not in m["slots"]:
                    raise ProviderError(f"{machine.name} has no slot {slot}", provider="fake", resource=machine.id)
                if (m["slots"][name] or {}).get("locator") != item.locator:
                    m["slots"][name] = {"locator": item.locator, "role": item.role}
                    changed.append(name)
            if changed:
                self._record(state, "insert_media", machine.node, slots=changed)
        self._maybe_kill("insert_media", machine.node)

    def inserted_media(self, machine: Machine) -> dict[MediaSlot, str]:
        """What each filled slot holds."""
        return {
            slot: held["locator"]
            for slot, held in zip(self.media_slots(machine), self._slots(machine), strict=True)
            if held is not None
        }

    def _slots(self, machine: Machine) -> list[dict[str, Any] | None]:
        with self._state() as state:
            return list(self._machine(state, machine)["slots"].values())

    def eject_media(self, machine: Machine, slots: Sequence[MediaSlot]) -> None:
        """Empty the slots (``ignores_eject`` nodes keep them, like a BMC that ignores the eject)."""
        self._op("eject_media", machine.node)
        if machine.node in self.settings.ignores_eject:
            return
        with self._state() as state:
            m = self._find(state, machine)
            if m is None:
                return
            for slot in slots:
                name = str(slot).replace("removable-disk", "usb")
                if m["slots"].get(name) is not None:
                    m["slots"][name] = None
                    self._record(state, "eject_media", machine.node, slot=name)
        self._maybe_kill("eject_media", machine.node)

    # --------------------------------------------------------------------------------------- image deployment
    def deploy_image(self, machine: Machine, node: NodeSpec, user_data: bytes) -> None:
        """Start deploying (the platform powers the machine itself); a running or done deployment is left be."""
        self._op("deploy_image", node.name)
        with self._state() as state:
            m = self._machine(state, machine)
            if m.get("deploy") in ("deploying", "deployed"):
                return
            digest = hashlib.sha256(user_data).hexdigest()
            m.update(deploy="deploying", deploy_started=time.time(), user_data_sha256=digest)
            self._record(state, "deploy_image", node.name, id=machine.id)
        self._maybe_kill("deploy_image", node.name)

    def deploy_status(self, machine: Machine) -> DeployStatus:
        """``Deploying`` for ``install_seconds``, then ``Deployed`` (powered on from disk) or ``Failed deployment``."""
        with self._state() as state:
            m = self._machine(state, machine)
            if m.get("deploy") == "deploying" and time.time() - m["deploy_started"] >= self.settings.install_seconds:
                if machine.node in self.settings.deploy_fails:
                    m["deploy"] = "failed"
                else:
                    m.update(deploy="deployed", power="on", target="on", booted_from="disk", powered_on_at=time.time())
            state_name = m.get("deploy") or "allocated"
        self._unanswered(machine, m.get("deploy_started"))
        words = {"deploying": "Deploying", "deployed": "Deployed", "failed": "Failed deployment"}
        states = {"deployed": DeployState.DEPLOYED, "failed": DeployState.FAILED}
        return DeployStatus(states.get(state_name, DeployState.DEPLOYING), words.get(state_name, "Allocated"))

    # --------------------------------------------------------------------------------------- address
    def discover_address(self, machine: Machine, node: NodeSpec) -> str | None:
        """The address from the ``addresses`` knob, else ``None`` (the core then uses the static address)."""
        self._op("discover_address", node.name)
        return self.settings.addresses.get(node.name)
