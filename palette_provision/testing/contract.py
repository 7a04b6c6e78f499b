"""The provider contract suite: the behaviour every provider owes the core, as pytest tests.

A provider package (ours or a third party's) runs it against itself by subclassing :class:`ProviderContract` in
its own tests and supplying two fixtures, and optionally two more::

    # tests/test_contract.py of a provider package
    import pytest
    from palette_provision.testing.contract import ProviderContract

    class TestMyCloudContract(ProviderContract):
        @pytest.fixture
        def plan(self, tmp_path):          # a DeploymentPlan whose platform section names this provider
            return parse_plan({...}, base_dir=tmp_path)

        @pytest.fixture
        def make_provider(self, plan, tmp_path):  # builds a fresh provider (no I/O in the constructor)
            return lambda: create_provider("mycloud", plan.platform_settings, ProviderContext(...))

        @pytest.fixture
        def media_file(self, tmp_path):    # optional: the file staged (default: 256 KiB of random bytes)
            ...

        @pytest.fixture
        def boot_device_of(self):          # optional: reads a machine's boot device back from the platform
            return lambda machine: my_platform.read_boot_device(machine.id)   # "cd", "disk", "pxe" or None

The suite follows the provider's ``lifecycle``: a created machine must be gone after ``delete_machine``, an
allocated one no longer ours after ``release_machine``, an enrolled one the same machine at every enrolment. Every
capability it claims is held to its contract: idempotent, observe-then-act, "already so" is success. Tests of
capabilities a provider does not claim are skipped *with the reason printed*.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from palette_provision.phases import required_capabilities
from palette_provision.plan import DeploymentPlan
from palette_provision.provider import (
    LIFECYCLE_CAPABILITY,
    AddressDiscovery,
    BootDevice,
    BootDeviceControl,
    DeployState,
    ImageDeployment,
    InstallMethod,
    Lifecycle,
    Machine,
    MediaFile,
    MediaStaging,
    Power,
    PowerState,
    Provider,
    StagedMedia,
    VirtualMedia,
    missing_capabilities,
)
from palette_provision.waiting import Backoff, wait_for

__all__ = ["ProviderContract", "acquire", "give_back", "no_network"]

_POLL = Backoff(0.2, 2.0, 0.1)


@contextmanager
def no_network() -> Iterator[list[Any]]:
    """Record (and refuse) every outgoing connection attempt inside the block."""
    attempts: list[Any] = []
    real_connect = socket.socket.connect
    real_create = socket.create_connection

    def refuse_connect(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise OSError("network access during a side-effect-free call")

    def refuse_create(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        attempts.append(address)
        raise OSError("network access during a side-effect-free call")

    socket.socket.connect = refuse_connect  # type: ignore[method-assign,assignment]
    socket.create_connection = refuse_create
    try:
        yield attempts
    finally:
        socket.socket.connect = real_connect  # type: ignore[method-assign]
        socket.create_connection = real_create


def acquire(provider: Any, plan: DeploymentPlan) -> Machine:
    """Get the first node's machine the way the provider's lifecycle says."""
    node = plan.node_specs()[0]
    lifecycle = Lifecycle(provider.lifecycle)
    if lifecycle is Lifecycle.CREATED:
        return provider.create_machine(node, [])  # type: ignore[no-any-return]
    if lifecycle is Lifecycle.ALLOCATED:
        return provider.allocate_machine(node)  # type: ignore[no-any-return]
    return provider.enroll_machine(node, None)  # type: ignore[no-any-return]


def give_back(provider: Any, machine: Machine) -> None:
    """Undo :func:`acquire` as ``destroy`` would."""
    lifecycle = Lifecycle(provider.lifecycle)
    if isinstance(provider, Power):
        provider.power_off(machine)
    if isinstance(provider, BootDeviceControl) and lifecycle is not Lifecycle.CREATED:
        provider.clear_boot_override(machine)
    if lifecycle is Lifecycle.CREATED:
        provider.delete_machine(machine)
    elif lifecycle is Lifecycle.ALLOCATED:
        provider.release_machine(machine)


class ProviderContract:
    """Subclass in a provider package's tests; supply ``plan`` and ``make_provider`` fixtures (``media_file`` and
    ``boot_device_of`` optionally)."""

    @pytest.fixture
    def provider(self, make_provider: Callable[[], Any]) -> Iterator[Any]:
        built = make_provider()
        yield built
        built.close()

    @pytest.fixture
    def machine(self, provider: Any, plan: DeploymentPlan) -> Iterator[Machine]:
        provider.preflight(plan)
        machine = acquire(provider, plan)
        try:
            yield machine
        finally:
            give_back(provider, machine)

    @pytest.fixture
    def media_file(self, tmp_path: Path) -> MediaFile:
        """The file the staging tests stage: 256 KiB of random bytes (override for a platform that wants more)."""
        path = tmp_path / "contract.iso"
        path.write_bytes(os.urandom(256 * 1024))
        return MediaFile("appliance-iso", path, path.stat().st_size, "contract.iso")

    @pytest.fixture
    def boot_device_of(self) -> Callable[[Machine], str | None] | None:
        """Override to read a machine's boot device back from the platform; ``None`` skips that check."""
        return None

    def _need(self, provider: Any, capability: type) -> None:
        if not isinstance(provider, capability):
            pytest.skip(f"{type(provider).__name__} does not implement {capability.__name__}")

    def _lifecycle(self, provider: Any, lifecycle: Lifecycle) -> None:
        if Lifecycle(provider.lifecycle) is not lifecycle:
            pytest.skip(f"{type(provider).__name__}'s machines are {Lifecycle(provider.lifecycle).value}")

    # --------------------------------------------------------------------------------- identity
    def test_is_a_provider_with_typed_settings_lifecycle_and_methods(self, provider: Any) -> None:
        assert isinstance(provider, Provider)
        assert isinstance(type(provider).name, str) and type(provider).name
        assert issubclass(type(provider).settings_model, BaseModel)
        node_model = type(provider).node_settings_model
        assert node_model is None or issubclass(node_model, BaseModel)
        lifecycle = Lifecycle(provider.lifecycle)
        assert isinstance(provider, LIFECYCLE_CAPABILITY[lifecycle]), f"{lifecycle.value} machines need their source"
        assert provider.install_methods, "at least one install method"
        for method in provider.install_methods:
            missing = missing_capabilities(provider, required_capabilities(InstallMethod(method), lifecycle))
            assert missing == [], f"{InstallMethod(method).value} needs {missing}"

    def test_construction_and_validate_do_no_io(self, make_provider: Callable[[], Any], plan: DeploymentPlan) -> None:
        with no_network() as attempts:
            built = make_provider()
            issues = built.validate(plan)
        built.close()
        assert attempts == [], f"construction/validate opened connections to {attempts}"
        assert isinstance(issues, list) and issues == [], f"the contract plan must be valid: {issues}"

    def test_settings_never_show_secrets(self, plan: DeploymentPlan) -> None:
        from palette_provision.secrets import known_secret_values

        text = repr(plan.platform_settings) + str(plan.platform_settings)
        text += "".join(repr(node.settings) + str(node.settings) for node in plan.node_specs())
        for secret in known_secret_values():
            assert secret not in text

    def test_close_twice(self, make_provider: Callable[[], Any], plan: DeploymentPlan) -> None:
        built = make_provider()
        built.preflight(plan)
        built.close()
        built.close()

    # --------------------------------------------------------------------------------- media staging
    def test_staging_is_content_addressed_and_idempotent(
        self, provider: Any, plan: DeploymentPlan, media_file: MediaFile
    ) -> None:
        self._need(provider, MediaStaging)
        provider.preflight(plan)
        first = provider.stage_media(media_file)
        locate = getattr(provider, "locate_media", None)
        if locate is not None:
            assert locate(media_file) == first.locator, "locate_media must name where stage_media puts the file"
        again = provider.stage_media(media_file)
        assert again.locator == first.locator and again.sha256 == first.sha256
        assert again.uploaded_bytes == 0, "a second stage of identical media must upload nothing"
        provider.unstage_media(first)
        provider.unstage_media(first)  # gone already is fine

    # --------------------------------------------------------------------------------- lifecycles
    def test_created_machine_is_found_then_gone_after_delete(self, provider: Any, plan: DeploymentPlan) -> None:
        self._lifecycle(provider, Lifecycle.CREATED)
        provider.preflight(plan)
        node = plan.node_specs()[0]
        assert provider.find_machine(node, None) is None
        machine = provider.create_machine(node, [])
        try:
            found = provider.find_machine(node, machine)
            assert found is not None and found.id == machine.id
            assert provider.find_machine(node, None) is not None, "found by its name without a journal record"
        finally:
            provider.delete_machine(machine)
        assert provider.find_machine(node, machine) is None
        provider.delete_machine(machine)  # gone already is fine
        if isinstance(provider, Power):
            provider.power_off(machine)  # and so is powering off a deleted machine

    def test_allocated_machine_is_ours_until_released(self, provider: Any, plan: DeploymentPlan) -> None:
        self._lifecycle(provider, Lifecycle.ALLOCATED)
        provider.preflight(plan)
        node = plan.node_specs()[0]
        assert provider.find_machine(node, None) is None
        machine = provider.allocate_machine(node)
        try:
            assert provider.find_machine(node, machine) == machine, "found by the journal's record"
            found = provider.find_machine(node, None)
            assert found is not None and found.id == machine.id, "found by its marks when the journal lost it"
        finally:
            provider.release_machine(machine)
        assert provider.find_machine(node, machine) is None, "a released machine is no longer ours"
        assert provider.find_machine(node, None) is None
        provider.release_machine(machine)  # released already is fine

    def test_enrolled_machine_is_the_same_at_every_enrolment(self, provider: Any, plan: DeploymentPlan) -> None:
        self._lifecycle(provider, Lifecycle.ENROLLED)
        provider.preflight(plan)
        node = plan.node_specs()[0]
        first = provider.enroll_machine(node, None)
        again = provider.enroll_machine(node, first)
        assert again.id == first.id and again.node == node.name
        if isinstance(provider, Power):
            assert provider.power_state(first) in (PowerState.OFF, PowerState.ON, PowerState.UNKNOWN)

    # --------------------------------------------------------------------------------- power and boot
    def test_power_is_idempotent(self, provider: Any, machine: Machine) -> None:
        self._need(provider, Power)
        provider.power_on(machine)
        provider.power_on(machine)  # already on is success
        wait_for(lambda: provider.power_state(machine), what="power on", until=lambda s: s == PowerState.ON,
                 timeout=120, backoff=_POLL)
        provider.power_off(machine)
        provider.power_off(machine)  # already off is success
        wait_for(lambda: provider.power_state(machine), what="power off", until=lambda s: s == PowerState.OFF,
                 timeout=120, backoff=_POLL)

    def test_boot_device_reaches_the_machine_and_clears(
        self, provider: Any, machine: Machine, boot_device_of: Callable[[Machine], str | None] | None
    ) -> None:
        self._need(provider, BootDeviceControl)
        provider.set_boot_device(machine, BootDevice.CD, persistent=False)
        provider.set_boot_device(machine, BootDevice.CD, persistent=False)  # idempotent
        if boot_device_of is not None:
            assert boot_device_of(machine) == "cd"
        provider.set_boot_device(machine, BootDevice.DISK, persistent=True)
        if boot_device_of is not None:
            assert boot_device_of(machine) == "disk"
        provider.clear_boot_override(machine)
        provider.clear_boot_override(machine)  # nothing to clear is success
        if boot_device_of is not None:
            assert boot_device_of(machine) in (None, "disk"), "cleared: the machine boots as its owner set it (disk)"
        if boot_device_of is None:
            pytest.skip("boot device set and cleared without error; no boot_device_of fixture to read it back")

    def test_virtual_media_insert_verify_eject(
        self, provider: Any, machine: Machine, plan: DeploymentPlan, media_file: MediaFile
    ) -> None:
        self._need(provider, VirtualMedia)
        if isinstance(provider, Power):
            provider.power_off(machine)
        slots = [s for s in provider.media_slots(machine) if s.preinserted is None]
        assert slots, "a provider with virtual media offers at least one free slot"
        staged = (
            provider.stage_media(media_file)
            if isinstance(provider, MediaStaging)
            else StagedMedia("appliance-iso", str(media_file.local_path), "0" * 64, media_file.size)
        )
        try:
            provider.insert_media(machine, {slots[0]: staged})
            provider.insert_media(machine, {slots[0]: staged})  # nothing to change is success
            assert provider.inserted_media(machine).get(slots[0]) == staged.locator
            provider.eject_media(machine, [slots[0]])
            provider.eject_media(machine, [slots[0]])  # already empty is success
            assert slots[0] not in provider.inserted_media(machine)
        finally:
            if isinstance(provider, MediaStaging):
                provider.unstage_media(staged)

    # --------------------------------------------------------------------------------- image deployment
    def test_image_deployment_reports_its_state(self, provider: Any, machine: Machine, plan: DeploymentPlan) -> None:
        self._need(provider, ImageDeployment)
        node = plan.node_specs()[0]
        provider.deploy_image(machine, node, b"#cloud-config\n")
        provider.deploy_image(machine, node, b"#cloud-config\n")  # a running deployment is left be
        status = wait_for(lambda: provider.deploy_status(machine), what="deployment",
                          until=lambda s: s.state is not DeployState.DEPLOYING, timeout=120, backoff=_POLL)
        assert status.state in (DeployState.DEPLOYED, DeployState.FAILED) and str(status)

    # --------------------------------------------------------------------------------- address
    def test_address_discovery_answers_a_string_or_none(
        self, provider: Any, machine: Machine, plan: DeploymentPlan
    ) -> None:
        self._need(provider, AddressDiscovery)
        address = provider.discover_address(machine, plan.node_specs()[0])
        assert address is None or isinstance(address, str)
