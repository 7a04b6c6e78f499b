"""Secrets never reach logs, exceptions or the journal; the library never configures logging."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from palette_provision.errors import JournalError
from palette_provision.journal import Journal
from palette_provision.log import redact_secrets
from palette_provision.secrets import Secret, SecretReferenceError, resolve_secret


def test_secret_never_prints() -> None:
    s = Secret("p@ssw0rd-value", source="env:X")
    assert "p@ssw0rd-value" not in repr(s) + str(s) + f"{s}" + f"{s!r}" + "%s" % s
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_resolve_reference_kinds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PP_X", "from-env")
    (tmp_path / "s").write_text("from-file\n")
    assert resolve_secret("env:PP_X").reveal() == "from-env"
    assert resolve_secret("file:s", base_dir=tmp_path).reveal() == "from-file"
    with pytest.raises(SecretReferenceError, match="env:NAME"):
        resolve_secret("inline-value")


def test_redaction_processor_masks_keys_secret_objects_and_known_values() -> None:
    secret = Secret("very-secret-token-123")
    event = {
        "event": "login",
        "password": "x",
        "creds": secret,
        "detail": "sent very-secret-token-123 to host",
        "nested": {"token": "abc", "ok": [secret]},
    }
    out = redact_secrets(None, "info", event)
    assert out["password"] == "***" and out["creds"] == "***"
    assert out["detail"] == "sent *** to host"
    assert out["nested"] == {"token": "***", "ok": ["***"]}


def test_library_does_not_configure_structlog(tmp_path: Path) -> None:
    import palette_provision.pipeline  # noqa: F401  (importing must not configure)

    assert not structlog.is_configured()


def test_journal_refuses_secret_values(tmp_path: Path) -> None:
    secret = Secret("never-in-the-journal")
    with Journal.open(tmp_path / "j.sqlite", deployment="d") as journal:
        journal.begin("p", "n")
        with pytest.raises(JournalError, match="secret"):
            journal.finish("p", "n", {"leak": secret.reveal()})
        journal.fail("p", "n", "login failed with never-in-the-journal")
        assert journal.step("p", "n").error == "login failed with ***"  # type: ignore[union-attr]
    assert b"never-in-the-journal" not in (tmp_path / "j.sqlite").read_bytes()


def test_pipeline_logs_carry_context(tmp_path: Path) -> None:
    from palette_provision.pipeline import Deployment
    from palette_provision.plan import parse_plan

    from .conftest import NODE_PASSWORD, base_plan

    with (
        capture_logs() as logs,
        Deployment(parse_plan(base_plan(tmp_path), base_dir=tmp_path), state_dir=tmp_path / "s") as d,
    ):
        d.apply()
    node_events = [e for e in logs if e.get("node") == "palette-1"]
    assert node_events and all(e["provider"] == "fake" for e in node_events)
    assert {e["phase"] for e in node_events} >= {"provision", "power_on", "await_install"}
    assert NODE_PASSWORD not in repr(logs)
