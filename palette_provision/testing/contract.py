"""The provider contract suite: the behaviour every provider owes the core, as pytest tests.

A provider package (ours or a third party's) runs it against itself by subclassing :class:`ProviderContract` in
its own tests and supplying three fixtures::

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
        def media_file(self, tmp_path):    # a small local file the provider can stage
            ...

Capabilities the provider does not implement are skipped *with the reason printed*; everything it claims to
implement is held to the contract: idempotent, observe-then-act, "already there" is success.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from pydantic import BaseModel

from palette_provision.plan import DeploymentPlan
from palette_provision.provider import (
    AddressDiscovery,
    BootMedia,
    Machines,
    MediaFile,
    MediaStaging,
    Power,
    PowerState,
    Provider,
)
from palette_provision.waiting import Backoff, wait_for

__all__ = ["ProviderContract", "no_network"]


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


class ProviderContract:
    """Subclass in a provider package's tests; supply ``plan``, ``make_provider`` and ``media_file`` fixtures."""

    @pytest.fixture
    def provider(self, make_provider: Callable[[], Any]) -> Iterator[Any]:
        built = make_provider()
        yield built
        built.close()

    def _need(self, provider: Any, capability: type) -> None:
        if not isinstance(provider, capability):
            pytest.skip(f"{type(provider).__name__} does not implement {capability.__name__}")

    # --------------------------------------------------------------------------------- identity
    def test_is_a_provider_with_typed_settings(self, provider: Any) -> None:
        assert isinstance(provider, Provider)
        assert isinstance(type(provider).name, str) and type(provider).name
        assert issubclass(type(provider).settings_model, BaseModel)

    def test_construction_and_validate_do_no_io(self, make_provider: Callable[[], Any], plan: DeploymentPlan) -> None:
        with no_network() as attempts:
            built = make_provider()
            issues = built.validate(plan)
        built.close()
        assert attempts == [], f"construction/validate opened connections to {attempts}"
        assert isinstance(issues, list)

    def test_settings_never_show_secrets(self, plan: DeploymentPlan) -> None:
        from palette_provision.secrets import known_secret_values

        text = repr(plan.platform_settings) + str(plan.platform_settings)
        for secret in known_secret_values():
            assert secret not in text

    def test_close_twice(self, make_provider: Callable[[], Any], plan: DeploymentPlan) -> None:
        built = make_provider()
        built.preflight(plan)
        built.close()
        built.close()

    # --------------------------------------------------------------------------------- media
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

    # --------------------------------------------------------------------------------- machines
    def test_machine_lifecycle_is_idempotent(self, provider: Any, plan: DeploymentPlan, media_file: MediaFile) -> None:
        self._need(provider, Machines)
        provider.preflight(plan)
        node = plan.node_specs()[0]
        assert provider.find_machine(node) is None
        media = [provider.stage_media(media_file)] if isinstance(provider, MediaStaging) else []
        machine = provider.create_machine(node, media)
        try:
            found = provider.find_machine(node)
            assert found is not None and found.id == machine.id
            if isinstance(provider, Power):
                assert provider.power_state(machine) in (PowerState.OFF, PowerState.ON)
                provider.power_on(machine)
                provider.power_on(machine)  # already on is success
                wait_for(
                    lambda: provider.power_state(machine),
                    what="power on",
                    until=lambda s: s == PowerState.ON,
                    timeout=120,
                    backoff=Backoff(0.2, 2.0, 0.1),
                )
                provider.power_off(machine)
                provider.power_off(machine)  # already off is success
                wait_for(
                    lambda: provider.power_state(machine),
                    what="power off",
                    until=lambda s: s == PowerState.OFF,
                    timeout=120,
                    backoff=Backoff(0.2, 2.0, 0.1),
                )
            if isinstance(provider, BootMedia):
                provider.attach_media(machine, media)
                provider.attach_media(machine, media)
                provider.detach_media(machine)
                provider.detach_media(machine)
            if isinstance(provider, AddressDiscovery):
                address = provider.discover_address(machine, node)
                assert address is None or isinstance(address, str)
        finally:
            if isinstance(provider, Power):
                provider.power_off(machine)
            provider.delete_machine(machine)
        assert provider.find_machine(node) is None
        provider.delete_machine(machine)  # gone already is fine
        if isinstance(provider, Power):
            provider.power_off(machine)  # and so is powering off a deleted machine
