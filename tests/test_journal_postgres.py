"""The PostgreSQL journal: a journal that outlives the machine (or job container) that ran ``apply``.

Against a real PostgreSQL server (tests/pgcluster.py). What the SQLite journal guarantees holds here too (the resume
and SIGKILL tests of tests/test_resume.py run on both backends); these tests add what only a shared database
raises: one writer per deployment whose lock a killed job releases, resuming and destroying from another machine,
``status`` while another job applies, and secrets kept out of the database and out of messages.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from palette_provision.errors import JournalError, PlanError
from palette_provision.journal import Journal
from palette_provision.pipeline import Deployment
from palette_provision.plan import parse_plan
from palette_provision.secrets import Secret
from palette_provision.testing.fake import read_state

from .conftest import NODE_PASSWORD, PG_PASSWORD_ENV, base_plan, pg_journal
from .killer import KILL_AFTER_PHASE

HOLD_LOCK = r"""
import os, sys, time
from palette_provision.journal import Journal
from palette_provision.secrets import Secret
journal = Journal.open_postgres(sys.argv[1], password=Secret(os.environ["PP_TEST_PG_JOURNAL_PASSWORD"], source="env"),
                                schema=sys.argv[2], deployment="held")
print("locked", flush=True)
time.sleep(600)
"""


def _write(tmp: Path, data: dict[str, Any]) -> Path:
    path = tmp / "plan.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _cli(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "palette_provision", *args, "--state-dir", str(state)],
                          capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL, check=False)  # fmt: skip


def test_one_writer_and_a_killed_writer_releases_the_lock_at_once(pg_cluster: Any) -> None:
    schema = pg_journal(pg_cluster)["schema"]
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, pg_cluster.url, schema], stdout=subprocess.PIPE,
                              text=True, env=os.environ.copy())  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        password = Secret(pg_cluster.password, source="test")
        with pytest.raises(JournalError, match="in use by another palette-provision process"):
            Journal.open_postgres(pg_cluster.url, password=password, schema=schema, deployment="held")
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        # The server drops a dead session's advisory locks as soon as it sees the socket close.
        deadline = time.monotonic() + 10
        while True:
            try:
                journal = Journal.open_postgres(pg_cluster.url, password=password, schema=schema, deployment="held")
                break
            except JournalError:
                assert time.monotonic() < deadline, "the killed writer's lock was never released"
                time.sleep(0.2)
        journal.close()
    finally:
        holder.kill()
        holder.wait()


def test_a_run_killed_on_one_machine_resumes_and_is_destroyed_from_others(pg_cluster: Any, tmp_path: Path) -> None:
    # Three state folders stand for three job containers: nothing but the database carries over.
    data = base_plan(tmp_path)
    data["journal"] = pg_journal(pg_cluster)
    plan = _write(tmp_path, data)
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_PHASE, str(plan), "power_on", "palette-2"],
                            capture_output=True, text=True, timeout=180, check=False)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    applied = _cli("apply", str(plan), "--json", state=tmp_path / "machine-b")
    assert applied.returncode == 0, applied.stdout[-2000:] + applied.stderr[-2000:]
    state = read_state(tmp_path / "platform.json")
    creates = [a["node"] for a in state["actions"] if a["op"] == "create_machine"]
    assert sorted(creates) == ["palette-1", "palette-2", "palette-3"], "no machine created twice"
    powered = [a for a in state["actions"] if a["op"] == "power_on" and a["node"] == "palette-2"]
    assert len(powered) == 2, "palette-2 powered on once for its install and once from disk, as in one run"
    assert state["machines"]["palette-2"]["installs"] == 1, "one install, across the kill and the other machine"
    status = _cli("status", str(plan), "--json", state=tmp_path / "machine-c")
    assert status.returncode == 0 and json.loads(status.stdout)["journal"].startswith("postgresql://pp@127.0.0.1")
    destroyed = _cli("destroy", str(plan), "--purge-media", state=tmp_path / "machine-c")
    assert destroyed.returncode == 0, destroyed.stderr[-2000:]
    after = read_state(tmp_path / "platform.json")
    assert after["machines"] == {} and after["media"] == {}


def test_status_reads_while_another_job_applies(pg_cluster: Any, tmp_path: Path) -> None:
    data = base_plan(tmp_path)
    data["journal"] = pg_journal(pg_cluster)
    data["platform"]["install_seconds"] = 3
    plan = _write(tmp_path, data)
    applying = subprocess.Popen([sys.executable, "-m", "palette_provision", "apply", str(plan), "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        seen: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = _cli("status", str(plan), "--json", state=tmp_path / "elsewhere")
            assert status.returncode == 0, status.stderr
            seen = json.loads(status.stdout)
            if any(s["phase"] == "acquire" for s in seen.get("steps", [])):
                break
            time.sleep(0.3)
        assert applying.poll() is None, "status was read while the apply still ran (and held the journal)"
        assert seen, "status answered from the shared journal"
    finally:
        out, err = applying.communicate(timeout=180)
    assert applying.returncode == 0, out[-2000:] + err[-2000:]


def test_no_secret_reaches_the_database_or_a_message(pg_cluster: Any, tmp_path: Path) -> None:
    data = base_plan(tmp_path)
    data["journal"] = pg_journal(pg_cluster)
    with Deployment(parse_plan(data, base_dir=tmp_path), state_dir=tmp_path / "state") as deployment:
        assert deployment.apply().ok
    import psycopg

    schema = data["journal"]["schema"]
    with psycopg.connect(pg_cluster.url, password=pg_cluster.password) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))]  # fmt: skip
        dump = "".join(str(conn.execute(f'SELECT * FROM "{schema}"."{t}"').fetchall()) for t in tables)
    assert "palette-1" in dump, "the dump holds the journal"
    assert NODE_PASSWORD not in dump and pg_cluster.password not in dump

    wrong = {**data["journal"], "password": "env:PP_TEST_WRONG_PG_PASSWORD"}
    os.environ["PP_TEST_WRONG_PG_PASSWORD"] = "not-the-db-password-x"
    other = Deployment(parse_plan({**data, "journal": wrong}, base_dir=tmp_path), state_dir=tmp_path / "s2")
    with other, pytest.raises(JournalError) as info:
        other.apply()
    assert "login refused" in str(info.value) and "not-the-db-password-x" not in str(info.value)
    with pytest.raises(PlanError) as plan_error:
        parse_plan({**data, "journal": {"url": "postgresql://pp:inline-pw@127.0.0.1/journal"}}, base_dir=tmp_path)
    assert [i.path for i in plan_error.value.issues] == ["journal.url"]
    assert "inline-pw" not in str(plan_error.value)
    assert PG_PASSWORD_ENV in os.environ
