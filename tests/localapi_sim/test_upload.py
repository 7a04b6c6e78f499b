"""Streamed multipart upload: bounded memory, SHA-256 recorded, malformed requests, sync status."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from palette_provision.testing.localapi import SimulatedCluster, SimulatorHandle

from .conftest import HOST, api, link_all, upload, wait_until

SYNC = "/v1/edge-mgmt/cluster/registry/content/sync-status/details"


def sparse_file(path: Path, size: int) -> str:
    """Create a sparse file of ``size`` bytes with a few data blocks; return its SHA-256."""
    with open(path, "wb") as handle:
        handle.truncate(size)
        for offset in (0, size // 3, size - 4096):
            handle.seek(offset)
            handle.write(os.urandom(4096))
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def test_large_upload_streams_to_disk_with_small_memory(sim: SimulatorHandle, tmp_path: Path) -> None:
    size = 320 * 2**20
    source = tmp_path / "bundle.tar.zst"
    expected = sparse_file(source, size)
    before = sim.peak_rss_kib()
    with api(sim) as client:
        response = upload(client, source)
        assert response.status_code == 201, response.text
        assert response.json()["uploadPath"].endswith("/bundle.tar.zst")
        details = client.get(f"{HOST}/uploaded-content/details").json()
    growth_mib = (sim.peak_rss_kib() - before) / 1024
    assert growth_mib < 48, f"simulator peak RSS grew by {growth_mib:.0f} MiB during a 320 MiB upload"
    assert details["sha256Hash"] == expected
    assert details["sizeInBytes"] == size and details["sizeInMiB"] == 320.0
    assert details["fileName"] == "bundle.tar.zst"
    stored = sim.state()["content"]
    assert stored["sha256Hash"] == expected and Path(stored["path"]).stat().st_size == size


def test_chunked_upload_with_signature(sim: SimulatorHandle) -> None:
    boundary = "sim-boundary-42"
    payload = os.urandom(3 * 2**20 + 17)

    def body() -> Iterator[bytes]:
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"uploadFile\"; "
               f"filename=\"c.tar.zst\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
        for start in range(0, len(payload), 1000003):
            yield payload[start:start + 1000003]
        yield (f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"signature\"; "
               f"filename=\"c.sig\"\r\n\r\nSIG\r\n--{boundary}--\r\n").encode()

    with api(sim) as client:
        response = client.post(f"{HOST}/actions/upload-content", content=body(),
                               headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert response.status_code == 201, response.text
    content = sim.state()["content"]
    assert content["sha256Hash"] == hashlib.sha256(payload).hexdigest()
    assert content["signature"]["sizeInBytes"] == 3


def test_bad_uploads_are_400_and_leave_nothing(sim: SimulatorHandle) -> None:
    with api(sim) as client:
        assert client.get(f"{HOST}/uploaded-content/details").status_code == 404
        not_multipart = client.post(f"{HOST}/actions/upload-content", content=b"raw bytes",
                                    headers={"Content-Type": "application/octet-stream"})
        assert not_multipart.status_code == 400 and "multipart" in not_multipart.json()["message"]
        wrong_field = client.post(f"{HOST}/actions/upload-content", files={"file": ("a.bin", b"x" * 100)})
        assert wrong_field.status_code == 400 and "uploadFile" in wrong_field.json()["message"]
        plain_field = client.post(f"{HOST}/actions/upload-content", data={"uploadFile": "text"},
                                  files={"signature": ("s", b"s")})
        assert plain_field.status_code == 400
        truncated = client.post(f"{HOST}/actions/upload-content", content=b"--b\r\nContent-Disposition: "
                                b"form-data; name=\"uploadFile\"; filename=\"x\"\r\n\r\nabc",
                                headers={"Content-Type": "multipart/form-data; boundary=b"})
        assert truncated.status_code == 400
        assert client.get(f"{HOST}/uploaded-content/details").status_code == 404
    leftovers = [p.name for p in (sim.state_dir / "content").iterdir()]
    assert leftovers == []


def test_content_syncs_to_each_peer_after_the_delay(trio: SimulatedCluster, tmp_path: Path) -> None:
    link_all(trio)
    trio.leader.set_knobs(sync_delay_s=0.8)
    source = tmp_path / "b.tar.zst"
    source.write_bytes(b"bundle" * 1000)
    with api(trio.leader) as lead, api(trio.followers[0]) as follower:
        assert upload(lead, source).status_code == 201
        pending = lead.get(SYNC).json()
        assert {item["target"] for item in pending["pendingItems"]} == {n.node_ip for n in trio.followers}
        statuses = {p["id"]: p["contentSyncStatus"] for p in lead.get(f"{HOST}/link/status").json()["peers"]}
        assert statuses == {trio.leader.host_id: "synced", **{n.host_id: "pending" for n in trio.followers}}
        wait_until(lambda: lead.get(SYNC).json()["pendingItems"] == [], timeout=5)
        peers = follower.get(f"{HOST}/link/status").json()["peers"]
        assert {p["contentSyncStatus"] for p in peers} == {"synced"}
        assert follower.get(SYNC).json()["statusMessage"] == "content synced"
        registry = follower.get("/v1/edge-mgmt/cluster/registry/content/details").json()["status"]
        assert [item["name"] for item in registry] == ["bundle.tar.zst"]
