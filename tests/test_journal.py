"""The journal: steps, resources in order, one writer, refusing another deployment's file."""

from __future__ import annotations

from pathlib import Path

import pytest

from palette_provision.errors import JournalError
from palette_provision.journal import Journal


def test_steps_and_resources_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal.open(path, deployment="d") as j:
        j.begin("provision", "n1")
        assert j.step("provision", "n1").status == "started"  # type: ignore[union-attr]
        j.finish("provision", "n1", {"machine": {"id": "vm-1"}}, [("machine", "fake", "vm-1", {"id": "vm-1"})])
        j.add_resource("media", "fake", "*", "iso-1", {"x": 1})
    with Journal.open(path, deployment="d") as j:
        assert j.is_done("provision", "n1")
        assert [r.external_id for r in j.resources()] == ["vm-1", "iso-1"]
        j.mark_destroyed("machine", "vm-1")
        assert [r.external_id for r in j.resources(live_only=True)] == ["iso-1"]


def test_journal_of_another_deployment_is_refused(tmp_path: Path) -> None:
    Journal.open(tmp_path / "j.sqlite", deployment="one").close()
    with pytest.raises(JournalError, match="belongs to deployment one, not two"):
        Journal.open(tmp_path / "j.sqlite", deployment="two")


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "j.sqlite", deployment="d"), pytest.raises(JournalError, match="in use"):
        Journal.open(tmp_path / "j.sqlite", deployment="d")


def test_digest_cache_keyed_by_size_and_mtime(tmp_path: Path) -> None:
    f = tmp_path / "a.iso"
    f.write_bytes(b"abc")
    with Journal.open(tmp_path / "j.sqlite", deployment="d") as j:
        j.cache_digest(f, "d" * 64)
        assert j.cached_digest(f) == "d" * 64
        f.write_bytes(b"abcd")
        assert j.cached_digest(f) is None


def test_file_mode_is_private(tmp_path: Path) -> None:
    Journal.open(tmp_path / "j.sqlite", deployment="d").close()
    assert (tmp_path / "j.sqlite").stat().st_mode & 0o077 == 0
