"""Secrets never reach logs, exceptions or the journal; events go where the application sends its logs."""

from __future__ import annotations

import json
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from palette_provision.errors import JournalError, TLSVerificationError
from palette_provision.journal import Journal
from palette_provision.log import redact_secrets
from palette_provision.secrets import Secret, SecretReferenceError, resolve_secret
from palette_provision.testing.localapi import start_simulator
from palette_provision.tls import fetch_fingerprint, pinned_context


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


def _run_deployment_script(tmp_path: Path, prelude: str) -> subprocess.CompletedProcess[str]:
    """A whole deployment through the library API in a fresh process (other tests configure structlog here)."""
    import yaml

    from .conftest import base_plan

    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(base_plan(tmp_path)))
    code = (
        "import sys\n" + prelude + "from palette_provision.log import get_logger\n"
        "from palette_provision.pipeline import Deployment\n"
        "from palette_provision.plan import load_plan\n"
        "from palette_provision.secrets import Secret\n"
        "with Deployment(load_plan(sys.argv[1])) as d:\n"
        "    assert d.apply().ok\n"
        "get_logger('palette_provision.test').warning('odd_thing', node='n1', detail='pw is hunter2-xyz',"
        " creds=Secret('hunter2-xyz'))\n"
        "print('structlog imported:', 'structlog' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(plan)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out


def test_without_logging_configured_only_warnings_reach_stderr(tmp_path: Path) -> None:
    # No configuration at all: like any library, silence except warnings and errors, which Python's last-resort
    # handler prints to stderr; stdout stays the application's. structlog is not even imported.
    out = _run_deployment_script(tmp_path, "")
    assert out.stdout.strip().splitlines() == ["structlog imported: False"]
    assert "phase_done" not in out.stderr
    assert "odd_thing node=n1" in out.stderr
    assert "hunter2-xyz" not in out.stderr and "creds=***" in out.stderr and "pw is ***" in out.stderr


def test_events_follow_the_standard_logging_configuration(tmp_path: Path) -> None:
    out = _run_deployment_script(
        tmp_path, "import logging\nlogging.basicConfig(level=logging.INFO, stream=sys.stdout)\n"
    )
    assert "INFO:palette_provision.pipeline:phase_done" in out.stdout
    assert "node=palette-1" in out.stdout and "provider=fake" in out.stdout
    assert "hunter2-xyz" not in out.stdout + out.stderr


def test_events_go_to_structlog_when_the_application_configured_it(tmp_path: Path) -> None:
    prelude = (
        "import structlog\n"
        "from palette_provision.log import redact_secrets\n"
        "structlog.configure(processors=[redact_secrets, structlog.processors.JSONRenderer()],"
        " logger_factory=structlog.PrintLoggerFactory(file=sys.stdout))\n"
    )
    out = _run_deployment_script(tmp_path, prelude)
    import json

    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    done = [e for e in events if e["event"] == "phase_done" and e.get("node") == "palette-1"]
    assert done and all(e["provider"] == "fake" for e in done)
    assert {"event": "odd_thing", "node": "n1", "detail": "pw is ***", "creds": "***"} in events
    assert "hunter2-xyz" not in out.stdout + out.stderr


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
    node_events = [e for e in logs if e.get("node") == "palette-1" and e["event"].startswith("phase_")]
    assert node_events and all(e["provider"] == "fake" for e in node_events)
    assert {e["phase"] for e in node_events} >= {"acquire", "power_on", "await_install"}
    assert NODE_PASSWORD not in repr(logs)


def test_fetch_fingerprint_reads_the_served_certificate_and_pins_it(tmp_path: Path) -> None:
    # The helper a user runs to fill in a plan's thumbprint; the pinned context then accepts exactly that cert.
    with start_simulator("n1", tmp_path / "sim", password="pw-for-the-sim") as sim:
        fingerprint = fetch_fingerprint(sim.host, sim.port)
        assert fingerprint == sim.cert_sha256.replace(":", "").lower()
        with (
            socket.create_connection((sim.host, sim.port), timeout=5) as raw,
            pinned_context(fingerprint).wrap_socket(raw, server_hostname=sim.host),
        ):
            pass
        with socket.create_connection((sim.host, sim.port), timeout=5) as raw, pytest.raises(TLSVerificationError):
            pinned_context("0" * 64).wrap_socket(raw, server_hostname=sim.host)


def _crashing_plan(tmp_path: Path, password: str) -> Path:
    import yaml

    from .conftest import base_plan

    data = base_plan(tmp_path)
    data["platform"].update(crash={"palette-2": "power_on"}, password="env:PP_FAKE_PLATFORM_PW")
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(data))
    return plan


def test_a_crash_traceback_on_a_terminal_shows_no_frame_locals_and_no_secret(tmp_path: Path) -> None:
    import os
    import pty
    import subprocess
    import sys

    secret = "pty-canary-Zq9\\x'\"ü"
    plan = _crashing_plan(tmp_path, secret)
    master, slave = pty.openpty()
    env = {**os.environ, "PP_FAKE_PLATFORM_PW": secret, "TERM": "xterm", "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "palette_provision", "apply", str(plan)],
                            stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    stdout, _ = proc.communicate(timeout=120)
    os.close(master)
    terminal = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 1, terminal[-2000:]
    assert "Traceback" in terminal and "fake crash in power_on" in terminal, terminal[-2000:]
    assert "revealed_password =" not in terminal and "locals" not in terminal.lower(), "frame locals were printed"
    assert secret not in terminal and secret not in stdout.decode("utf-8", "replace")


def test_a_crash_traceback_off_a_terminal_is_kept_redacted_in_the_json_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    secret = "json-canary-Xk2\\n\"ß"
    plan = _crashing_plan(tmp_path, secret)
    env = {**os.environ, "PP_FAKE_PLATFORM_PW": secret}
    proc = subprocess.run([sys.executable, "-m", "palette_provision", "apply", str(plan), "--json"],
                          capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    crash = [e for e in lines if e["event"] == "step_unexpected_error"]
    assert crash and "Traceback" in crash[0]["exception"] and "RuntimeError" in crash[0]["exception"]
    assert secret not in proc.stdout + proc.stderr
