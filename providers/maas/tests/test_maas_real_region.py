"""Opt-in: the client and the provider's checks against a real MAAS region (``MAAS_URL``, ``MAAS_APIKEY``;
``MAAS_CA_BUNDLE`` and ``MAAS_TEST_TAGS``, comma-separated allocation tags, optional).

CI has no MAAS region (none can run on its machines): there these tests are skipped, and say so. Against a real
region they only read: log in, list machines and boot resources, ask ``allocate`` with ``dry_run`` (which
allocates nothing), and run the provider's ``validate`` and ``preflight`` for a two-node image-mode plan (which
upload and allocate nothing). Pointed at the region simulator (``MAAS_URL``/``MAAS_APIKEY`` of a
``python -m palette_provision.testing.maas`` process) they pass as well, which is how they were checked.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from palette_provision.errors import ConfigurationError, ProviderError
from palette_provision.log import get_logger
from palette_provision.plan import parse_plan
from palette_provision.provider import ProviderContext
from palette_provision.registry import create_provider
from palette_provision.secrets import Secret

from palette_provision_maas import MaasClient

URL, KEY, CA = os.environ.get("MAAS_URL"), os.environ.get("MAAS_APIKEY"), os.environ.get("MAAS_CA_BUNDLE")
TAGS = [t for t in os.environ.get("MAAS_TEST_TAGS", "").split(",") if t]

pytestmark = pytest.mark.skipif(not (URL and KEY), reason="no real MAAS: set MAAS_URL and MAAS_APIKEY to run these")


@pytest.fixture(scope="module")
def client() -> Iterator[MaasClient]:
    assert URL and KEY
    with MaasClient(URL, Secret(KEY, source="env:MAAS_APIKEY"), verify=CA or True) as maas:
        yield maas


def test_a_real_region_takes_our_signature(client: MaasClient) -> None:
    assert client.whoami().username
    assert client.version().version


def test_a_real_regions_machines_and_images_parse(client: MaasClient) -> None:
    for machine in client.list_machines():
        assert machine.system_id and machine.status_name
    for resource in client.boot_resources():
        assert resource.name


def test_a_dry_run_allocation_allocates_nothing(client: MaasClient) -> None:
    before = {m.system_id: m.status for m in client.list_machines()}
    with contextlib.suppress(ProviderError):  # no Ready machine in that region: a 409, which is an answer too
        client.allocate({}, agent_name="palette-provision/opt-in-test", comment="dry run", dry_run=True)
    assert {m.system_id: m.status for m in client.list_machines()} == before


def test_the_providers_checks_against_a_real_region_change_nothing(client: MaasClient, tmp_path: Path) -> None:
    image, iso = tmp_path / "palette.img", tmp_path / "unused.iso"
    image.write_bytes(b"\0" * 4096)  # preflight only checks that the file to upload is there
    iso.write_bytes(b"the image mode boots no ISO")
    os.environ.setdefault("PP_MAAS_OPT_IN_NODE_PASSWORD", "opt-in-node-password-1")
    tls = {"ca_bundle": CA} if CA else {}
    plan = parse_plan({
        "name": "opt-in-check", "profile": "edge", "iso": {"source": str(iso)},
        "cluster": {"name": "c", "vip": "192.0.2.10", "dns": ["192.0.2.1"],
                    "node_account": {"password": "env:PP_MAAS_OPT_IN_NODE_PASSWORD"}},
        "nodes": {"count": 2, "size": "small", "install_disk": "/dev/sda", "network": {"mode": "dhcp"}},
        "readiness": {"ssh": False, "local_api": False},
        "handoff": {"kind": "inventory", "output_dir": str(tmp_path / "out")},
        "platform": {"provider": "maas", "url": URL, "api_key": "env:MAAS_APIKEY", "mode": "image", **tls,
                     "image": {"name": "palette-provision-opt-in-check", "file": str(image)},
                     "constraints": {"tags": TAGS} if TAGS else {}},
    })  # fmt: skip
    context = ProviderContext(deployment=plan.name, state_dir=tmp_path / "provider",
                              log=get_logger("palette_provision_maas"), nodes=tuple(plan.node_specs()))  # fmt: skip
    provider = create_provider("maas", plan.platform_settings, context)
    before = {m.system_id: (m.status, m.owner) for m in client.list_machines()}
    resources = sorted(r.name for r in client.boot_resources())
    try:
        assert provider.validate(plan) == []
        # Not enough Ready machines for the constraints is an answer too: a ConfigurationError naming the field.
        with contextlib.suppress(ConfigurationError):
            provider.preflight(plan)
    finally:
        provider.close()
    assert {m.system_id: (m.status, m.owner) for m in client.list_machines()} == before, "nothing allocated"
    assert sorted(r.name for r in client.boot_resources()) == resources, "nothing uploaded"
