"""stage_media / unstage_media: content-addressed, streamed, verified, and never complete by accident."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from conftest import ProviderFactory, launch
from palette_provision.errors import ProviderError
from palette_provision.provider import MediaFile
from vcsim.lab import VcsimHandle

from palette_provision_vsphere._staging import Stager


def media_for(
    path: Path,
    *,
    sha256: str | None = None,
    name: str = "appliance.iso",
    role: str = "appliance-iso",
) -> MediaFile:
    return MediaFile(role=role, local_path=path, size=path.stat().st_size, name=name, sha256=sha256)  # type: ignore[arg-type]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def on_datastore(handle: VcsimHandle, unique: str) -> dict[str, bytes]:
    folder = handle.datastore_dir / f"media-{unique}"
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.is_dir() else {}


def test_first_upload_streams_the_file_and_writes_the_sidecar(
    vcsim: VcsimHandle, unique: str, iso: Path, make_provider: ProviderFactory
) -> None:
    seen: list[tuple[int, int | None]] = []
    staged = make_provider().stage_media(media_for(iso), lambda done, total: seen.append((done, total)))
    files = on_datastore(vcsim, unique)
    assert files["appliance.iso"] == iso.read_bytes()
    assert files["appliance.iso.sha256"] == f"{digest(iso)}  appliance.iso\n".encode()
    assert "appliance.iso.partial" not in files
    assert staged.locator == f"[datastore1] media-{unique}/appliance.iso"
    assert (staged.sha256, staged.size, staged.uploaded_bytes) == (
        digest(iso),
        iso.stat().st_size,
        iso.stat().st_size,
    )
    assert seen[-1] == (iso.stat().st_size, iso.stat().st_size)
    assert [done for done, _ in seen] == [4 << 20, 8 << 20, iso.stat().st_size]  # progress per 4 MiB chunk


def test_a_rerun_uploads_nothing_and_does_not_read_the_iso(
    vcsim: VcsimHandle,
    unique: str,
    iso: Path,
    tmp_path: Path,
    make_provider: ProviderFactory,
) -> None:
    first = make_provider().stage_media(media_for(iso))
    # The core passes the digest from its cache: prove the file is not opened by removing it.
    gone = MediaFile(
        "appliance-iso",
        tmp_path / "moved-away.iso",
        first.size,
        "appliance.iso",
        first.sha256,
    )
    again = make_provider().stage_media(gone)
    assert again.uploaded_bytes == 0
    assert (again.locator, again.sha256) == (first.locator, first.sha256)


def test_without_a_known_digest_a_rerun_hashes_locally_but_uploads_nothing(
    vcsim: VcsimHandle, unique: str, iso: Path, make_provider: ProviderFactory
) -> None:
    make_provider().stage_media(media_for(iso))
    assert make_provider().stage_media(media_for(iso)).uploaded_bytes == 0


def test_a_corrupted_sidecar_forces_a_reupload(
    vcsim: VcsimHandle, unique: str, iso: Path, make_provider: ProviderFactory
) -> None:
    make_provider().stage_media(media_for(iso))
    sidecar = vcsim.datastore_dir / f"media-{unique}" / "appliance.iso.sha256"
    sidecar.write_text("garbage\n")
    again = make_provider().stage_media(media_for(iso, sha256=digest(iso)))
    assert again.uploaded_bytes == iso.stat().st_size
    assert sidecar.read_text() == f"{digest(iso)}  appliance.iso\n"


def test_a_rerun_reads_no_sidecar_that_nothing_touched_and_a_lost_record_costs_one_read(
    vcsim: VcsimHandle, unique: str, iso: Path, tmp_path: Path, make_provider: ProviderFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    make_provider().stage_media(media_for(iso))
    reads: list[str] = []
    real_read = Stager._read_sidecar

    def counting_read(self: Stager, name: str) -> str | None:
        reads.append(name)
        return real_read(self, name)

    monkeypatch.setattr(Stager, "_read_sidecar", counting_read)
    assert make_provider().stage_media(media_for(iso, sha256=digest(iso))).uploaded_bytes == 0
    assert reads == []  # sizes and times as recorded when it was written: no GET
    (tmp_path / "state" / "verified-media.json").unlink()
    assert make_provider().stage_media(media_for(iso, sha256=digest(iso))).uploaded_bytes == 0
    assert reads == ["appliance.iso"]


def test_a_sidecar_rewritten_to_the_same_length_is_read_again_and_the_file_reuploaded(
    vcsim: VcsimHandle, unique: str, iso: Path, make_provider: ProviderFactory
) -> None:
    make_provider().stage_media(media_for(iso))
    sidecar = vcsim.datastore_dir / f"media-{unique}" / "appliance.iso.sha256"
    sidecar.write_text("0" * 64 + "  appliance.iso\n")  # another digest, same length: only the time tells
    again = make_provider().stage_media(media_for(iso, sha256=digest(iso)))
    assert again.uploaded_bytes == iso.stat().st_size
    assert sidecar.read_text() == f"{digest(iso)}  appliance.iso\n"


def test_a_seed_of_the_same_size_but_new_content_is_reuploaded(
    vcsim: VcsimHandle, unique: str, tmp_path: Path, make_provider: ProviderFactory
) -> None:
    seed = tmp_path / "seed.iso"
    seed.write_bytes(b"a" * 4096)
    make_provider().stage_media(media_for(seed, name="edge-1-seed.iso", role="seed"))
    seed.write_bytes(b"b" * 4096)
    again = make_provider().stage_media(media_for(seed, name="edge-1-seed.iso", role="seed"))
    assert again.uploaded_bytes == 4096
    assert on_datastore(vcsim, unique)["edge-1-seed.iso"] == b"b" * 4096


def test_a_digest_mismatch_is_an_error_and_leaves_nothing_behind(
    vcsim: VcsimHandle, unique: str, iso: Path, make_provider: ProviderFactory
) -> None:
    with pytest.raises(ProviderError, match="expected " + "0" * 64):
        make_provider().stage_media(media_for(iso, sha256="0" * 64))
    assert on_datastore(vcsim, unique) == {}


def test_a_digest_the_core_read_from_the_file_is_not_computed_again(
    vcsim: VcsimHandle, unique: str, iso: Path, make_provider: ProviderFactory
) -> None:
    # The core vouches (sha256_checked) for a digest it read from this very file: the bytes go out unhashed, so
    # the sidecar says what the core said. (A deliberately different digest shows that no hash was taken; the
    # core checks the file did not change, tests/test_early_digest.py.)
    vouched = "1" * 64
    file = MediaFile("appliance-iso", iso, iso.stat().st_size, "appliance.iso", vouched, sha256_checked=True)
    staged = make_provider().stage_media(file)
    files = on_datastore(vcsim, unique)
    assert files["appliance.iso"] == iso.read_bytes()
    assert files["appliance.iso.sha256"] == f"{vouched}  appliance.iso\n".encode()
    assert (staged.sha256, staged.uploaded_bytes) == (vouched, iso.stat().st_size)


def test_unstage_removes_file_and_sidecar_and_tolerates_gone(
    vcsim: VcsimHandle, unique: str, iso: Path, make_provider: ProviderFactory
) -> None:
    provider = make_provider()
    staged = provider.stage_media(media_for(iso))
    provider.unstage_media(staged)
    assert on_datastore(vcsim, unique) == {}
    provider.unstage_media(staged)


def test_an_interrupted_upload_is_never_taken_for_complete_and_is_redone(
    tmp_path: Path, unique: str, make_provider: ProviderFactory
) -> None:
    handle = launch(tmp_path / "vc-a")
    big = tmp_path / "big.iso"
    big.write_bytes(os.urandom(64 * 1024 * 1024))
    killed: list[int] = []

    def kill_at_a_quarter(done: int, total: int | None) -> None:
        if not killed and total and done > total // 4:
            killed.append(done)
            handle.kill()  # SIGKILL: the simulator dies mid-transfer

    try:
        with pytest.raises(ProviderError, match="failed 2 times"):
            make_provider(handle=handle, upload_attempts=2).stage_media(media_for(big), kill_at_a_quarter)
    finally:
        handle.kill()
    folder = handle.datastore_dir / f"media-{unique}"
    left = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    assert killed
    assert "big.iso.sha256" not in left and "appliance.iso.sha256" not in left
    assert "appliance.iso" not in left  # at most a .partial, which nothing takes for the file

    restarted = launch(tmp_path / "vc-b", datastore_dir=handle.datastore_dir)
    with restarted:
        staged = make_provider(handle=restarted).stage_media(media_for(big))
        assert staged.uploaded_bytes == big.stat().st_size
        assert (folder / "appliance.iso").read_bytes() == big.read_bytes()
        assert (folder / "appliance.iso.sha256").read_text().split()[0] == digest(big)
        assert not (folder / "appliance.iso.partial").exists()


def test_locate_media_names_the_locator_before_any_upload(
    vcsim: VcsimHandle, unique: str, iso: Path, make_provider: ProviderFactory
) -> None:
    provider = make_provider()
    where = provider.locate_media(media_for(iso))
    assert provider.stage_media(media_for(iso)).locator == where
