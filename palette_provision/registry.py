"""The provider registry: entry points in the group ``palette_provision.providers``.

In-tree providers register exactly as a third party's would, in their distribution's ``pyproject.toml``::

    [project.entry-points."palette_provision.providers"]
    vsphere = "palette_provision_vsphere:VsphereProvider"

Only the provider asked for is imported (vendor SDKs are slow to import).
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from palette_provision.errors import PaletteProvisionError, ProviderNotFound

__all__ = ["ENTRY_POINT_GROUP", "available_providers", "create_provider", "load_provider_class"]

ENTRY_POINT_GROUP = "palette_provision.providers"

# Classes already loaded, by name: a plan's validation and the deployment both ask for the provider, and reading
# every installed distribution's entry points again costs a few milliseconds per ask. Only successes are kept, so
# a provider installed later in the process is still found.
_loaded: dict[str, Any] = {}


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_providers() -> list[str]:
    """Names of the installed providers, sorted. Imports none of them."""
    return sorted(_entry_points())


def load_provider_class(name: str) -> Any:
    """Import and return the provider class registered as ``name``.

    Raises:
        ProviderNotFound: nothing is registered under ``name``; the error lists what is.
        PaletteProvisionError: the entry point exists but fails to import (a missing vendor SDK, say).
    """
    if name in _loaded:
        return _loaded[name]
    eps = _entry_points()
    if name not in eps:
        raise ProviderNotFound(name, sorted(eps))
    try:
        cls = eps[name].load()
    except ImportError as exc:
        raise PaletteProvisionError(f"provider {name!r} is installed but cannot be imported: {exc}") from exc
    for attr in ("name", "settings_model"):
        if not hasattr(cls, attr):
            raise PaletteProvisionError(f"provider {name!r} ({eps[name].value}) has no {attr!r} attribute")
    _loaded[name] = cls
    return cls


def create_provider(name: str, settings: Any, context: Any) -> Any:
    """Build the provider ``name`` with validated ``settings``. Construction does no I/O."""
    return load_provider_class(name)(settings, context)
