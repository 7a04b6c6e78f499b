"""The journal's files: what it refuses to open, what it refuses to write, and who can read what it creates."""

from __future__ import annotations

import io
import sqlite3
import stat
from pathlib import Path

import pytest

from palette_provision.errors import JournalError
from palette_provision.journal import SCHEMA_VERSION, Fact, Journal
from palette_provision.secrets import Secret


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_file_the_journal_creates_is_private(tmp_path: Path) -> None:
    state = tmp_path / "state" / "deployment"
    with Journal.open(state / "journal.sqlite", deployment="d") as journal:
        journal.begin("p", "n")
        journal.finish("p", "n", {"x": 1})
        created = sorted(p.name for p in state.iterdir())
        assert created == ["journal.sqlite", "journal.sqlite-shm", "journal.sqlite-wal", "journal.sqlite.lock"]
        assert {p.name: mode(p) for p in state.iterdir()} == dict.fromkeys(created, 0o600)
    assert mode(state) == 0o700 and mode(tmp_path / "state") == 0o700


def test_a_journal_of_another_schema_version_is_refused_by_both_opens(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with Journal.open(path, deployment="d") as journal:
        journal.set_meta("schema", "1")
    with pytest.raises(JournalError, match=f"schema version 1, this palette-provision writes {SCHEMA_VERSION}"):
        Journal.open(path, deployment="d")
    with pytest.raises(JournalError, match="schema version 1"):
        Journal.open_readonly(path, deployment="d")


@pytest.mark.parametrize("schema", [
    "CREATE TABLE orders (id INTEGER, customer TEXT)",
    "CREATE TABLE meta (name TEXT, owner TEXT, created REAL)",
])
def test_a_foreign_sqlite_file_is_refused_and_left_unchanged(tmp_path: Path, schema: str) -> None:
    path = tmp_path / "journal.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute(schema)
    before = path.read_bytes()
    for opener in (lambda: Journal.open(path, deployment="d"), lambda: Journal.open_readonly(path, deployment="d")):
        with pytest.raises(JournalError, match="not a palette-provision journal"):
            opener()
    assert path.read_bytes() == before
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "steps" not in tables, "nothing of ours was added to someone else's database"


def test_a_file_that_is_not_sqlite_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    path.write_bytes(b"this is not a database\n" * 100)
    with pytest.raises(JournalError, match="unreadable"):
        Journal.open(path, deployment="d")


def test_corrupt_rows_are_journal_errors_naming_the_row_not_tracebacks(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with Journal.open(path, deployment="d") as journal:
        journal.begin("acquire", "n1")
        journal.finish("acquire", "n1", {"machine": {"id": "m"}}, [("machine", "fake", "m", {"id": "m"})])
        journal.set_fact("n1", Fact.ADDRESS, "10.0.0.1")
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE steps SET data = '{not json' WHERE phase = 'acquire'")
        conn.execute("UPDATE resources SET data = '[[[' ")
        conn.execute("UPDATE facts SET value = 'nope'")
    with Journal.open(path, deployment="d") as journal:
        for read, where in ((lambda: journal.step("acquire", "n1"), "step acquire/n1"), (journal.steps, "step"),
                            (journal.resources, "resource machine m"), (lambda: journal.facts("n1"), "fact address")):
            with pytest.raises(JournalError, match=where) as info:
                read()
            assert "{not json" not in str(info.value) and "nope" not in str(info.value)


@pytest.mark.parametrize("secret", [
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
    'a "quoted" pass',
    "back\\slash",
    "pässwörd-ünïcode",
    "x" * 4096,
])
def test_the_secret_guard_finds_secrets_of_every_shape_anywhere_in_a_record(tmp_path: Path, secret: str) -> None:
    value = Secret(secret)
    with Journal.open(tmp_path / "journal.sqlite", deployment="d") as journal:
        journal.begin("p", "n")
        for record in ({"leak": value.reveal()}, {"nested": [{"deep": f"prefix {value.reveal()} suffix"}]},
                       {value.reveal(): "as a key"}):
            with pytest.raises(JournalError, match="secret"):
                journal.finish("p", "n", record)
            with pytest.raises(JournalError, match="secret"):
                journal.set_fact("n", "k", record)
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert secret.encode() not in raw and secret.encode("unicode_escape") not in raw


def test_destroy_forgets_the_pins_of_machines_it_undid(tmp_path: Path) -> None:
    from palette_provision.pipeline import Deployment
    from palette_provision.plan import parse_plan

    from .conftest import base_plan

    plan = parse_plan(base_plan(tmp_path), base_dir=tmp_path)
    with Deployment(plan, state_dir=tmp_path / "state") as d:
        assert d.apply().ok
        d.journal.set_fact("palette-1", Fact.LOCAL_API_CERT, "ab" * 32)  # as the Local API rung pins it
        d.destroy()
        assert d.journal.facts("palette-1") == {}
        assert d.apply().ok, "a re-apply after destroy starts clean"
        assert d.journal.fact("palette-1", Fact.LOCAL_API_CERT) is None


def test_a_provider_whose_close_fails_still_releases_the_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from palette_provision.pipeline import Deployment
    from palette_provision.plan import parse_plan
    from palette_provision.testing.fake import FakeProvider

    from .conftest import base_plan

    def broken_close(self: FakeProvider) -> None:
        raise OSError("simulated failure closing the provider's session")

    monkeypatch.setattr(FakeProvider, "close", broken_close)
    plan = parse_plan(base_plan(tmp_path, count=1), base_dir=tmp_path)
    deployment = Deployment(plan, state_dir=tmp_path / "state")
    assert deployment.apply().ok
    with pytest.raises(OSError):
        deployment.close()
    # The journal's lock went with it: another writer opens the journal at once.
    with Journal.open(tmp_path / "state" / "journal.sqlite", deployment=plan.name) as journal:
        assert journal.steps()


def test_remote_text_in_the_live_view_is_text_not_markup_and_escape_sequences_are_dropped() -> None:
    from rich.console import Console

    from palette_provision._cli_output import LiveView
    from palette_provision.report import Event

    view = LiveView(enabled=False)
    view(Event("node-[b]1[/b]", "await_ready", "progress", "banner SSH-1.5-[/] \x1b[31mred\x1b[0m \x1b]0;title\x07"))
    out = io.StringIO()
    Console(file=out, width=200, color_system=None, force_terminal=False).print(view._table())
    text = out.getvalue()
    assert "SSH-1.5-[/]" in text and "node-[b]1[/b]" in text
    assert "\x1b" not in text and "title" not in text and "red" in text
