"""Redfish BMCs of the lab (bmclab.redfish): sushy-tools' emulator driven with sushy, its machines booted in QEMU.

The client is verified TLS against the lab's generated certificate (and its fingerprint is checked as a pin would):
never ``verify=False``. No QEMU boot here: the install from the virtual CD with a FAT seed in the removable slot, then
the disk boot, is proven once, through the provider, in providers/baremetal/tests/test_redfish_lab.py.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sushy  # type: ignore[import-untyped]
from bmclab.redfish import RedfishLab, RedfishNode
from sushy.auth import BasicAuth  # type: ignore[import-untyped]
from sushy.exceptions import AccessError, BadRequestError  # type: ignore[import-untyped]

from palette_provision.seed import build_cidata_disk

from .conftest import make_iso

# Not the other lab tests' nodes (.11/.12/.61): those may boot at the same time.
MAC = "52:54:00:5e:01:31"
USER, PASSWORD = "labadmin", "rf-lab-password"


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """A tiny HTTP server for virtual-media images (what the provider's media server is in the field)."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def client(lab: RedfishLab, password: str = PASSWORD) -> Any:
    assert lab.cert_path is not None
    return sushy.Sushy(lab.url + "/redfish/v1", auth=BasicAuth(USER, password), verify=str(lab.cert_path))


def wait_power(system: Any, state: Any, timeout: float = 30) -> float:
    """Poll until the system reports ``state`` (the emulator applies power changes later); return the seconds."""
    started = time.monotonic()
    while True:
        system.refresh()
        if system.power_state == state:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, f"power state still {system.power_state}, want {state}"
        time.sleep(0.5)


def media(system: Any, slot: str) -> Any:
    return system.virtual_media.get_member(f"{system.path}/VirtualMedia/{slot}")


def presented_fingerprint(url: str) -> str:
    host, port = url.removeprefix("https://").split(":")
    pem = ssl.get_server_certificate((host, int(port)))
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


@pytest.mark.lab
@pytest.mark.timeout(180)
def test_power_boot_override_and_virtual_media(lab_ready: None, tmp_path: Path) -> None:
    images = tmp_path / "images"
    (images / "cd").mkdir(parents=True)
    (images / "cd" / "hello.txt").write_text("hello\n")
    iso = make_iso(images / "cd", images / "tiny.iso", "TINY")
    seed = images / "seed.img"
    seed.write_bytes(build_cidata_disk({"user-data": b"#cloud-config\n", "meta-data": b"instance-id: x\n"}))
    node = RedfishNode("rf-api", MAC)
    with RedfishLab([node], username=USER, password=PASSWORD, power_delay_s=2, workdir=tmp_path / "lab") as lab:
        assert lab.fingerprint == presented_fingerprint(lab.url)  # what a provider pins
        bmc = lab.bmc("rf-api")
        assert (bmc.url, bmc.system_id, bmc.username) == (lab.url, node.system_id, USER)
        assert lab.system_ids == [node.system_id]
        system = client(lab).get_system(bmc.system_path)
        assert system.power_state == sushy.POWER_STATE_OFF

        # Power on: accepted at once, applied later (pinned to ~2 s here): clients must poll.
        system.reset_system(sushy.RESET_ON)
        system.refresh()
        assert system.power_state == sushy.POWER_STATE_OFF, "applied at once: the delay is not pinned as asked"
        waited = wait_power(system, sushy.POWER_STATE_ON)
        assert 0.5 < waited < 5, waited
        # A blank disk, nothing in the CD: the machine has nothing to boot (and no QEMU runs).
        skipped = lab.listener.wait_for_event(node.system_id, "boot_skipped", timeout=10)
        assert "blank" in skipped.reason
        assert [e.power for e in lab.events(node.system_id, "power")] == ["On"]

        # Already on: accepted, nothing changes.
        system.reset_system(sushy.RESET_ON)
        time.sleep(2.5)
        system.refresh()
        assert system.power_state == sushy.POWER_STATE_ON
        assert [e.power for e in lab.events(node.system_id, "power")] == ["On"]

        system.reset_system(sushy.RESET_FORCE_OFF)
        wait_power(system, sushy.POWER_STATE_OFF)
        system.reset_system(sushy.RESET_FORCE_OFF)  # already off
        assert [e.power for e in lab.events(node.system_id, "power")] == ["On", "Off"]

        # One-time boot override to the CD. The emulator keeps the target and always reports "Continuous".
        system.set_system_boot_options(sushy.BOOT_SOURCE_TARGET_CD, enabled=sushy.BOOT_SOURCE_ENABLED_ONCE)
        system.refresh()
        assert system.boot.target == sushy.BOOT_SOURCE_TARGET_CD
        assert system.boot.enabled == sushy.BOOT_SOURCE_ENABLED_CONTINUOUS

        media_dir = lab.workdir / "media"
        with serve_directory(images) as base:
            cd, removable = media(system, "Cd"), media(system, "Floppy")
            assert not cd.inserted and not removable.inserted
            cd.insert_media(f"{base}/tiny.iso", inserted=True, write_protected=True)
            removable.insert_media(f"{base}/seed.img", inserted=True, write_protected=True)
            cd.refresh()
            removable.refresh()
            assert (cd.inserted, cd.image, cd.image_name) == (True, f"{base}/tiny.iso", "tiny.iso")
            assert (removable.inserted, removable.image) == (True, f"{base}/seed.img")
            # Downloaded during the request, into the lab's media directory.
            downloaded = sorted(p for p in media_dir.rglob("*") if p.is_file())
            assert sorted(p.read_bytes() for p in downloaded) == sorted([iso.read_bytes(), seed.read_bytes()])

            # A URL the media server does not have: refused (HTTP 400), the slot stays as it was.
            with pytest.raises(BadRequestError) as refused:
                cd.insert_media(f"{base}/missing.iso", inserted=True, write_protected=True)
            assert refused.value.status_code == 400
            cd.refresh()
            assert (cd.inserted, cd.image) == (True, f"{base}/tiny.iso")

        cd.eject_media()
        removable.eject_media()
        cd.refresh()
        removable.refresh()
        assert not cd.inserted and not cd.image
        assert not removable.inserted and not removable.image
        assert not [p for p in media_dir.rglob("*") if p.is_file()], "EjectMedia deletes the download"

        # A wrong password: 401, on every resource but the service root.
        with pytest.raises(AccessError) as denied:
            client(lab, password="wrong").get_system(bmc.system_path)
        assert denied.value.status_code == 401
        assert not lab.events(kind="error"), lab.events(kind="error")
    assert not (tmp_path / "lab" / "media").exists(), "stop() deletes the downloaded images"
