"""Fixtures: one vcsim for the session (the lab's launcher, ``lab/vcsim/lab.py``), providers and plans against it.

When vcsim cannot be built or started the fixture *fails* with the reason: a provider test that skips proves
nothing. Every test works in its own VM name prefix and datastore folder, so tests share the simulator safely.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

REPO = Path(__file__).resolve().parents[3]
LAB_DIR = REPO / "lab"
if str(LAB_DIR) not in sys.path:
    sys.path.insert(0, str(LAB_DIR))

from palette_provision.plan import DeploymentPlan, parse_plan
from palette_provision.provider import ProviderContext
from pyVmomi import vim
from vcsim.lab import (
    VcsimError,
    VcsimHandle,
    connect,
    disconnect,
    start_vcsim,
    wait_task,
)

from palette_provision_vsphere import VsphereProvider, VsphereSettings

PASSWORD = "lab-Passw0rd!"
PASSWORD_ENV = "PP_TEST_VSPHERE_PASSWORD"
WRONG_ENV = "PP_TEST_VSPHERE_WRONG"
_counter = itertools.count(1)


@pytest.fixture(scope="session", autouse=True)
def _secrets_env() -> None:
    os.environ[PASSWORD_ENV] = PASSWORD
    os.environ[WRONG_ENV] = "not-the-password"
    os.environ.setdefault("PP_TEST_NODE_PASSWORD", "node-secret")


def launch(workdir: Path, **kwargs: Any) -> VcsimHandle:
    """Start a vcsim or fail the test with the launcher's reason."""
    try:
        return start_vcsim(workdir, 0, "admin", PASSWORD, **kwargs)
    except VcsimError as exc:
        needs = "lab/vcsim/build.sh needs golang-go, golang-github-vmware-govmomi-dev, patch"
        pytest.fail(f"the vcsim lab cannot start ({needs}): {exc}", pytrace=False)


@pytest.fixture(scope="session")
def vcsim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VcsimHandle]:
    """The session's simulator: DC0, cluster DC0_C0, [datastore1] on a real directory, 'VM Network', DC0_DVPG0."""
    handle = launch(tmp_path_factory.mktemp("vcsim"))
    with handle:
        yield handle


@pytest.fixture
def si(vcsim: VcsimHandle) -> Iterator[Any]:
    """A raw pyVmomi session, to read back what the provider did (and to make foreign VMs)."""
    service = connect(vcsim)
    yield service
    disconnect(service)


@pytest.fixture
def unique() -> str:
    """A short token unique to this test: VM prefix and datastore folder."""
    return f"t{next(_counter)}"


def settings_data(handle: VcsimHandle, unique: str, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "server": handle.host,
        "port": handle.port,
        "username": handle.username,
        "password": f"env:{PASSWORD_ENV}",
        "thumbprint": handle.thumbprint,
        "datacenter": "DC0",
        "cluster": "DC0_C0",
        "datastore": handle.datastore,
        "network": "VM Network",
        "vm_prefix": f"{unique}-",
        "media_folder": f"media-{unique}",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


ProviderFactory = Callable[..., VsphereProvider]


@pytest.fixture
def make_provider(vcsim: VcsimHandle, unique: str, tmp_path: Path) -> Iterator[ProviderFactory]:
    """Build providers (closed at teardown): ``make_provider(handle=None, owned=(), deployment=..., **settings)``;
    ``owned`` names the nodes whose machines the journal recorded."""
    made: list[VsphereProvider] = []

    def factory(
        handle: VcsimHandle | None = None,
        owned: tuple[str, ...] = (),
        deployment: str = "demo",
        **overrides: Any,
    ) -> VsphereProvider:
        settings = VsphereSettings.model_validate(settings_data(handle or vcsim, unique, **overrides))
        context = ProviderContext(
            deployment=deployment,
            state_dir=tmp_path / "state",
            log=structlog.get_logger("palette_provision_vsphere").bind(provider="vsphere"),
            owned_machines={node: None for node in owned},
        )
        provider = VsphereProvider(settings, context)
        made.append(provider)
        return provider

    yield factory
    for p in made:
        p.close()
    remove_vms(vcsim, f"{unique}-")


def remove_vms(handle: VcsimHandle, prefix: str) -> None:
    """Destroy the test's VMs: vcsim 0.24.2 charges every VM's full disk size to the datastore's free space."""
    if not handle.is_running():
        return
    service = connect(handle)
    try:
        content = service.RetrieveContent()
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
        for vm in [vm for vm in view.view if vm.name.startswith(prefix)]:
            if vm.runtime.powerState == "poweredOn":
                wait_task(service, vm.PowerOffVM_Task())
            wait_task(service, vm.Destroy_Task())
        view.DestroyView()
    finally:
        disconnect(service)


@pytest.fixture
def iso(tmp_path: Path) -> Path:
    """A small local 'ISO' (9 MiB and a bit of varied bytes: three upload chunks, the last one short)."""
    path = tmp_path / "appliance.iso"
    path.write_bytes(os.urandom(9 * 1024 * 1024 + 123))
    return path


def make_plan(
    handle: VcsimHandle,
    unique: str,
    iso_path: Path,
    count: int = 2,
    platform: dict[str, Any] | None = None,
    **nodes: Any,
) -> DeploymentPlan:
    """An edge-profile plan of ``count`` nodes on the simulator (the edge minimums keep disks small)."""
    node_settings = {
        "count": count,
        "cpus": 2,
        "memory_gb": 4,
        "install_disk_gb": 32,
        "storage_disk_gb": 16,
    }
    node_settings.update(nodes)
    data = {
        "name": "demo",
        "profile": "edge",
        "iso": {"source": str(iso_path)},
        "cluster": {
            "name": "edge",
            "vip": "10.251.0.100",
            "dns": ["10.251.0.1"],
            "node_account": {"password": "env:PP_TEST_NODE_PASSWORD"},
        },
        "nodes": node_settings,
        "platform": {
            "provider": "vsphere",
            **settings_data(handle, unique, **(platform or {})),
        },
        "readiness": {"ssh": False},
        "handoff": {"kind": "none"},
    }
    return parse_plan(data)
