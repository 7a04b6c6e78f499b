"""A fake provider for rehearsals and tests, with fault knobs.

Its "platform" is a JSON file (``state_file``), so separate processes (a killed ``apply`` and its re-run) see the
same machines, and every side effect is appended to an action log that tests read back with :func:`read_state`.
Machines behave like the appliance: powered on with media attached they "install" for ``install_seconds`` and power
themselves off; powered on without media they boot from disk and stay up.

Knobs (plan ``platform:`` section, ``provider: fake``)::

    platform:
      provider: fake
      state_file: fake-platform.json   # relative to the plan file
      install_seconds: 0.5             # how long the installer runs
      power_delay_seconds: 0           # power changes take effect after this delay (clients must poll)
      fail: {node-2: power_on}         # this operation fails on this node (ProviderError)
      slow: {node-3: 1.5}              # seconds added to every call for this node
      flaky_power: 0.3                 # probability that a power call raises TransientError
      never_installs: [node-1]         # the installer never finishes (await_install times out)
      ignores_eject: [node-1]          # detach is ignored, so the node installs again (a re-install loop)
      kill_at: "create_machine:node-2" # SIGKILL this process right after that operation...
      kill_once_file: killed.flag      # ...once: only while this file does not exist

Operations: ``stage_media``, ``unstage_media``, ``create_machine``, ``delete_machine``, ``power_on``,
``power_off``, ``attach_media``, ``detach_media``, ``discover_address``.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from palette_provision.errors import AuthenticationError, ConfigurationError, PlanIssue, ProviderError, TransientError
from palette_provision.media import CHUNK
from palette_provision.plan import DeploymentPlan, NodeSpec, SecretRef
from palette_provision.provider import Machine, MediaFile, PowerState, ProgressCallback, ProviderContext, StagedMedia

__all__ = ["FakeProvider", "FakeSettings", "read_state"]


class FakeSettings(BaseModel):
    """Settings of the fake provider (see the module docstring for the knobs)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    state_file: str = Field(default="fake-platform.json", description="The fake platform's state (JSON).")
    install_seconds: float = Field(default=0.5, ge=0)
    power_delay_seconds: float = Field(default=0.0, ge=0)
    fail: dict[str, str] = Field(default_factory=dict, description="node -> operation that fails")
    slow: dict[str, float] = Field(default_factory=dict, description="node -> extra seconds per call")
    flaky_power: float = Field(default=0.0, ge=0, le=1)
    never_installs: list[str] = Field(default_factory=list)
    ignores_eject: list[str] = Field(default_factory=list)
    addresses: dict[str, str] = Field(default_factory=dict, description="node -> address the platform reports")
    kill_at: str | None = None
    kill_once_file: str | None = None
    password: SecretRef | None = Field(default=None, description="Checked by preflight against expected_password.")
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


def read_state(path: Path) -> dict[str, Any]:
    """Read a fake platform's state: ``machines``, ``media`` and the ``actions`` log."""
    if not path.exists():
        return {"machines": {}, "media": {}, "actions": []}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


class FakeProvider:
    """The fake provider. Implements every capability; see the module docstring."""

    name: ClassVar[str] = "fake"
    settings_model: ClassVar[type[BaseModel]] = FakeSettings

    def __init__(self, settings: FakeSettings, context: ProviderContext) -> None:
        self.settings = settings
        self.context = context
        self._lock = threading.Lock()
        self._rng = random.Random(settings.seed)

    # --------------------------------------------------------------------------------------- plumbing
    @property
    def state_path(self) -> Path:
        """The fake platform's state file."""
        return Path(self.settings.state_file).resolve()

    @contextmanager
    def _state(self) -> Iterator[dict[str, Any]]:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, open(str(self.state_path) + ".lock", "w") as lock_fh:
            fcntl.flock(lock_fh, fcntl.LOCK_EX)
            state = read_state(self.state_path)
            yield state
            tmp = self.state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
            os.replace(tmp, self.state_path)

    def _op(self, op: str, node: str | None) -> None:
        if node is not None and node in self.settings.slow:
            time.sleep(self.settings.slow[node])
        if node is not None and self.settings.fail.get(node) == op:
            raise ProviderError(f"fake platform refused {op} for {node} (fault knob)", provider="fake", resource=node)

    def _record(self, state: dict[str, Any], op: str, node: str | None, **detail: Any) -> None:
        state["actions"].append({"op": op, "node": node, "at": time.time(), **detail})

    def _maybe_kill(self, op: str, node: str | None) -> None:
        if self.settings.kill_at != f"{op}:{node}":
            return
        flag = Path(self.settings.kill_once_file) if self.settings.kill_once_file else None
        if flag is not None:
            if flag.exists():
                return
            flag.write_text("killed\n")
        os.kill(os.getpid(), signal.SIGKILL)

    # --------------------------------------------------------------------------------------- Provider
    def validate(self, plan: DeploymentPlan) -> list[PlanIssue]:
        """Offline checks: the node count against ``max_nodes``; fault knobs naming unknown nodes."""
        issues = []
        if plan.nodes.count > self.settings.max_nodes:
            issues.append(
                PlanIssue("nodes.count", f"the fake platform holds at most {self.settings.max_nodes} machines")
            )
        names = set(plan.node_names())
        for knob in ("fail", "slow", "addresses"):
            for node in getattr(self.settings, knob):
                if node not in names:
                    issues.append(PlanIssue(f"platform.{knob}.{node}", "no node of that name in the plan"))
        return issues

    def preflight(self, plan: DeploymentPlan) -> None:
        """Check the password knob and refuse planned names taken by machines this deployment does not own."""
        expected = self.settings.expected_password
        if expected is not None and (self.settings.password is None or self.settings.password != expected):
            raise AuthenticationError("the fake platform refused the login", field="platform.password", provider="fake")
        with self._state() as state:
            for node in plan.node_names():
                if node in state["machines"] and node not in self.context.owned_machine_names:
                    raise ConfigurationError(
                        f"a machine named {node!r} already exists and this deployment did not create it",
                        field="nodes.names",
                        provider="fake",
                    )

    def close(self) -> None:
        """Nothing to release."""

    # --------------------------------------------------------------------------------------- media
    def stage_media(self, media: MediaFile, progress: ProgressCallback | None = None) -> StagedMedia:
        """Record the media under a content-addressed locator; skip when an identical copy is recorded."""
        self._op("stage_media", media.node)
        sha = media.sha256
        uploaded = 0
        if sha is None:
            import hashlib

            digest = hashlib.sha256()
            with media.local_path.open("rb") as fh:
                while chunk := fh.read(CHUNK):
                    digest.update(chunk)
                    uploaded += len(chunk)
                    if progress:
                        progress(uploaded, media.size)
            sha = digest.hexdigest()
        locator = self.locate_media(media)
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
    def find_machine(self, node: NodeSpec) -> Machine | None:
        """The machine named after the node, if any."""
        with self._state() as state:
            m = state["machines"].get(node.name)
        return None if m is None else Machine(node.name, m["id"], node.name, {"mac": m["mac"]})

    def create_machine(self, node: NodeSpec, media: list[StagedMedia]) -> Machine:
        """Create a powered-off machine with ``media`` attached."""
        self._op("create_machine", node.name)
        mid = f"fake-{uuid.uuid4().hex[:12]}"
        mac = f"52:54:00:{node.index:02x}:{self._rng.randrange(256):02x}:{self._rng.randrange(256):02x}"
        with self._state() as state:
            state["machines"][node.name] = {
                "id": mid,
                "mac": mac,
                "cpus": node.cpus,
                "memory_mb": node.memory_mb,
                "power": "off",
                "target": "off",
                "effective_at": 0.0,
                "media": [m.locator for m in media],
                "powered_on_at": None,
                "booted_from": None,
                "installs": 0,
            }
            self._record(state, "create_machine", node.name, id=mid)
        self._maybe_kill("create_machine", node.name)
        return Machine(node.name, mid, node.name, {"mac": mac})

    def delete_machine(self, machine: Machine) -> None:
        """Delete the machine (gone already is fine)."""
        self._op("delete_machine", machine.node)
        with self._state() as state:
            m = state["machines"].get(machine.node)
            if m is not None and m["id"] == machine.id:
                del state["machines"][machine.node]
                self._record(state, "delete_machine", machine.node, id=machine.id)
        self._maybe_kill("delete_machine", machine.node)

    # --------------------------------------------------------------------------------------- power
    def _advance(self, m: dict[str, Any], node: str) -> None:
        now = time.time()
        if m["target"] != m["power"] and now >= m["effective_at"]:
            m["power"] = m["target"]
            if m["power"] == "on":
                m["powered_on_at"] = m["effective_at"]
                m["booted_from"] = "cd" if m["media"] else "disk"
        installing = m["power"] == "on" and m["booted_from"] == "cd" and node not in self.settings.never_installs
        if installing and now - m["powered_on_at"] >= self.settings.install_seconds:
            m["power"] = m["target"] = "off"
            m["installs"] += 1

    def power_state(self, machine: Machine) -> PowerState:
        """The machine's power state (applies pending changes and the install cycle)."""
        with self._state() as state:
            m = state["machines"].get(machine.node)
            if m is None or m["id"] != machine.id:
                raise ProviderError(f"machine {machine.id} does not exist", provider="fake", resource=machine.id)
            self._advance(m, machine.node)
            return PowerState(m["power"])

    def _set_power(self, machine: Machine, target: str) -> None:
        op = f"power_{target}"
        self._op(op, machine.node)
        if self.settings.flaky_power and self._rng.random() < self.settings.flaky_power:
            raise TransientError(f"fake BMC busy during {op} (flaky_power knob)", provider="fake")
        with self._state() as state:
            m = state["machines"].get(machine.node)
            if m is None:
                if target == "off":
                    return
                raise ProviderError(f"machine {machine.id} does not exist", provider="fake", resource=machine.id)
            self._advance(m, machine.node)
            if m["target"] == target:
                return
            m["target"] = target
            m["effective_at"] = time.time() + self.settings.power_delay_seconds
            self._advance(m, machine.node)
            self._record(state, op, machine.node)
        self._maybe_kill(op, machine.node)

    def power_on(self, machine: Machine) -> None:
        """Power on, returning once it took effect (already on: nothing happens)."""
        self._set_power(machine, "on")
        # Like a provider for an asynchronous BMC, wait until the change is applied before returning.
        time.sleep(self.settings.power_delay_seconds)

    def last_power_on(self, machine: Machine) -> float | None:
        """When the machine last powered on (PowerHistory)."""
        with self._state() as state:
            m = state["machines"].get(machine.node)
            if m is None:
                return None
            self._advance(m, machine.node)
            value = m.get("powered_on_at")
            return None if value is None else float(value)

    def power_off(self, machine: Machine) -> None:
        """Power off (already off or gone: nothing happens)."""
        self._set_power(machine, "off")

    # --------------------------------------------------------------------------------------- boot media
    def attach_media(self, machine: Machine, media: list[StagedMedia]) -> None:
        """Attach ``media`` unless it already is."""
        self._op("attach_media", machine.node)
        locators = [m.locator for m in media]
        with self._state() as state:
            m = state["machines"][machine.node]
            if m["media"] != locators:
                m["media"] = locators
                self._record(state, "attach_media", machine.node)
        self._maybe_kill("attach_media", machine.node)

    def detach_media(self, machine: Machine) -> None:
        """Detach all media (a node in ``ignores_eject`` keeps it, like a BMC that ignores the eject)."""
        self._op("detach_media", machine.node)
        if machine.node in self.settings.ignores_eject:
            return
        with self._state() as state:
            m = state["machines"][machine.node]
            if m["media"]:
                m["media"] = []
                self._record(state, "detach_media", machine.node)
        self._maybe_kill("detach_media", machine.node)

    def discover_address(self, machine: Machine, node: NodeSpec) -> str | None:
        """The address from the ``addresses`` knob, else ``None`` (the core then uses the static address)."""
        self._op("discover_address", node.name)
        return self.settings.addresses.get(node.name)
