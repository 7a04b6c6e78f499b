"""Opt-in: the client against a real MAAS region (``MAAS_URL``, ``MAAS_APIKEY``; ``MAAS_CA_BUNDLE`` optional).

CI has no MAAS region (none can run on its machines): there these tests are skipped, and say so. Against a real
region they only read: log in, list machines and boot resources, and ask ``allocate`` with ``dry_run`` (which
allocates nothing).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest
from palette_provision.errors import ProviderError
from palette_provision.secrets import Secret

from palette_provision_maas import MaasClient

URL, KEY, CA = os.environ.get("MAAS_URL"), os.environ.get("MAAS_APIKEY"), os.environ.get("MAAS_CA_BUNDLE")

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
