"""The watcher's seed reader: it finds the seed among a VM's CDs and the address the node will take."""

from __future__ import annotations

from pathlib import Path

import pytest
from vcsim.seed import SeedInfo, is_seed_iso, read_seed

from tests.keys import Ed25519

from .seeds import user_data, write_seed_iso


def test_static_seed_gives_address_and_hostname(tmp_path: Path) -> None:
    data = user_data("node-2", "10.251.0.12", Ed25519.generate("u"), Ed25519.generate("h"))
    iso = write_seed_iso(tmp_path / "seed.iso", data, "plan-node-2")
    assert is_seed_iso(iso)
    assert read_seed(iso) == SeedInfo(ip="10.251.0.12", hostname="node-2", interface="eth0")


def test_dhcp_seed_has_no_predictable_address(tmp_path: Path) -> None:
    data = user_data("node-3", "10.251.0.13", Ed25519.generate("u"), Ed25519.generate("h"))
    data["stylus"]["site"]["network"]["interfaces"]["eth0"] = {"type": "dhcp"}
    iso = write_seed_iso(tmp_path / "seed.iso", data, "plan-node-3")
    assert read_seed(iso) == SeedInfo(ip=None, hostname="node-3", interface="eth0")


def test_appliance_iso_is_not_taken_for_a_seed(tmp_path: Path) -> None:
    not_iso = tmp_path / "palette.iso"
    not_iso.write_bytes(b"\0" * 65536)
    assert not is_seed_iso(not_iso)
    with pytest.raises(ValueError, match="not a readable ISO"):
        read_seed(not_iso)
