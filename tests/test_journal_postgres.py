"""The PostgreSQL journal: a journal that outlives the machine (or job container) that ran ``apply``.

Against a real PostgreSQL server (tests/pgcluster.py). What the SQLite journal guarantees holds here too (the resume
and SIGKILL tests of tests/test_resume.py run on both backends); these tests add what only a shared database
raises: one writer per deployment whose lock a killed job releases (two applies of one deployment: one proceeds, the
other exits with the journal's code and changes nothing), two deployments applying side by side in one database,
``status`` while another job applies, and secrets kept out of the database and out of messages. Resuming and
destroying from another machine (a copy of the checkout, through the Ansible collection) is
tests/ansible/test_ansible_postgres.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
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


def _apply(plan: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "palette_provision", "apply", str(plan), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def _rows(cluster: Any, schema: str, table: str) -> int:
    import psycopg

    with psycopg.connect(cluster.url, password=cluster.password, connect_timeout=10) as conn:
        if not conn.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
                            (schema, table)).fetchone():  # fmt: skip
            return 0
        row = conn.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone()
    return int(row[0]) if row else 0


def _span(cluster: Any, schema: str) -> tuple[float, float]:
    """When a deployment's first step began and its last one finished, from its journal."""
    import psycopg

    with psycopg.connect(cluster.url, password=cluster.password, connect_timeout=10) as conn:
        row = conn.execute(f'SELECT min(started_at), max(finished_at) FROM "{schema}".steps').fetchone()
    assert row is not None
    return float(row[0]), float(row[1])


def test_two_applies_of_one_deployment_one_proceeds_the_other_changes_nothing(
    pg_cluster: Any, tmp_path: Path
) -> None:
    data = base_plan(tmp_path)
    data["journal"] = pg_journal(pg_cluster)
    data["platform"]["install_seconds"] = 3  # the first apply still runs when the second one starts
    plan = _write(tmp_path, data)
    first = _apply(plan)
    try:
        deadline = time.monotonic() + 60
        while _rows(pg_cluster, data["journal"]["schema"], "steps") == 0:  # the first one holds the journal
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-2000:]
            time.sleep(0.1)
        second = subprocess.run([sys.executable, "-m", "palette_provision", "apply", str(plan), "--json"],
                                capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=False)
        assert first.poll() is None, "the second apply ran while the first one still held the journal"
    finally:
        out, err = first.communicate(timeout=180)
    assert first.returncode == 0, out[-2000:] + err[-2000:]
    assert second.returncode == 5, second.stdout[-2000:] + second.stderr[-2000:]  # the CLI's "journal unusable"
    assert "in use by another palette-provision process" in second.stderr + second.stdout
    state = read_state(tmp_path / "platform.json")
    creates = [a["node"] for a in state["actions"] if a["op"] == "create_machine"]
    assert sorted(creates) == ["palette-1", "palette-2", "palette-3"], "each machine created once, by the first"
    assert {n: m["installs"] for n, m in state["machines"].items()} == dict.fromkeys(creates, 1)


def test_two_deployments_in_one_database_apply_at_the_same_time(pg_cluster: Any, tmp_path: Path) -> None:
    plans, schemas = [], []
    for site in ("a", "b"):
        folder = tmp_path / site
        folder.mkdir()
        data = base_plan(folder)
        data["name"] = f"fleet-{site}-{uuid.uuid4().hex[:8]}"
        data["cluster"]["name"] = f"site-{site}"
        # No schema named: each deployment gets its own (pp_<name>) in the one database.
        data["journal"] = {k: v for k, v in pg_journal(pg_cluster).items() if k != "schema"}
        data["platform"]["install_seconds"] = 1
        plans.append(_write(folder, data))
        schemas.append("pp_" + data["name"].replace("-", "_"))
    running = [_apply(plan) for plan in plans]
    outputs = [proc.communicate(timeout=180) for proc in running]
    for proc, (out, err) in zip(running, outputs, strict=True):
        assert proc.returncode == 0, out[-2000:] + err[-2000:]
        assert all(n["status"] == "ready" for n in json.loads(out)["nodes"])
    for site, schema in zip("ab", schemas, strict=True):
        assert len(read_state(tmp_path / site / "platform.json")["machines"]) == 3
        assert _rows(pg_cluster, schema, "resources") >= 4, schema  # three machines and the ISO, in its own schema
    spans = [_span(pg_cluster, schema) for schema in schemas]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], "the two applies ran at the same time"


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
