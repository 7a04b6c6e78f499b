"""The public surface stays honest: every exported name exists and is documented; one error hierarchy."""

from __future__ import annotations

import importlib
import inspect

import pytest

import palette_provision.errors as errors

PUBLIC_MODULES = [
    "palette_provision.errors", "palette_provision.plan", "palette_provision.provider", "palette_provision.registry",
    "palette_provision.journal", "palette_provision.pipeline", "palette_provision.waiting", "palette_provision.secrets",
    "palette_provision.log", "palette_provision.tls", "palette_provision.report", "palette_provision.seed",
    "palette_provision.readiness", "palette_provision.handoff", "palette_provision.testing.contract",
    "palette_provision.testing.fake", "palette_provision.cli", "palette_provision.steps", "palette_provision.testing.metrics",
    "palette_provision.phases", "palette_provision.media_server",
]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_names_exist_and_are_documented(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__doc__, f"{name} has no module docstring"
    exported = getattr(module, "__all__", None)
    assert exported, f"{name} declares no __all__"
    for attr in exported:
        obj = getattr(module, attr)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, f"{name}.{attr} has no docstring"


def test_every_error_derives_from_the_one_base() -> None:
    for attr in errors.__all__:
        obj = getattr(errors, attr)
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            assert issubclass(obj, errors.PaletteProvisionError), attr
    from palette_provision.handoff import LocalApiError, LocalApiUnavailable
    from palette_provision.secrets import SecretReferenceError

    for cls in (LocalApiError, LocalApiUnavailable, SecretReferenceError):
        assert issubclass(cls, errors.PaletteProvisionError)
