"""The journal: a SQLite file (WAL) that records every step and every created resource.

It makes ``apply`` resumable after a crash, Ctrl-C or SIGKILL, powers ``status``, and drives ``destroy`` in reverse
creation order. The discipline that makes this safe:

1. Before a side effect, :meth:`Journal.begin` records the *intent* (the step is ``started``).
2. The step observes the platform first (does the VM exist?) and only then acts.
3. After it, :meth:`Journal.finish` records the outcome, and :meth:`Journal.add_resource` every created resource,
   in one transaction.

A kill between 2 and 3 leaves a ``started`` step: the re-run repeats the step, whose observation finds the
resource and adopts it instead of creating a second one. No secret is ever written: :meth:`Journal._dump` refuses
any value equal to a live :class:`~palette_provision.secrets.Secret`.

Example::

    with Journal.open(Path("state/journal.sqlite"), deployment="lab", fingerprint=plan.fingerprint()) as j:
        if not j.is_done("provision", "node-1"):
            j.begin("provision", "node-1")
            ...
            j.finish("provision", "node-1", {"machine": machine.to_record()})
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from palette_provision.errors import JournalError
from palette_provision.secrets import Secret, known_secret_values

__all__ = ["GLOBAL", "Fact", "Journal", "ResourceRecord", "StepRecord"]

#: 2: per-node phases renamed (``provision`` -> ``acquire``, ``attach_media`` -> ``insert_media``), machine
#: resources carry their lifecycle, media insertions and boot overrides are resources.
SCHEMA_VERSION = "2"


class Fact:
    """The journal's fact keys, in one place: what the core, the readiness ladder and the hand-off record per node."""

    ADDRESS = "address"
    ADDRESS_SOURCE = "address_source"  # plan | platform | node: where the address the ladder used came from
    HOST_KEY_PUBLIC = "host_key_public"
    HOST_KEY_FINGERPRINT = "host_key_fingerprint"
    POWER_ON_REQUESTED_AT = "power_on_requested_at"
    LOCAL_API_CERT = "local_api_cert_sha256"
    EDGE_HOST_ID = "edge_host_id"
    SEED_HANDED_OVER_AT = "seed_handed_over_at"  # an operator was told where the seed is (operator-attached media)
    CONSOLE_CERT = "console_cert_sha256"  # the system console's certificate, pinned at first contact (node "*")
    #: When admin/admin was replaced by the plan's password (node "*"): never sent again afterwards.
    CONSOLE_PASSWORD_ROTATED_AT = "console_password_rotated_at"  # noqa: S105 - a fact's name

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS steps (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    phase TEXT NOT NULL, node TEXT NOT NULL, status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, started_at REAL, finished_at REAL,
    data TEXT NOT NULL DEFAULT '{}', error TEXT,
    UNIQUE (phase, node)
);
CREATE TABLE IF NOT EXISTS resources (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL, provider TEXT NOT NULL, node TEXT NOT NULL, external_id TEXT NOT NULL,
    data TEXT NOT NULL, created_at REAL NOT NULL, destroyed_at REAL,
    UNIQUE (kind, external_id)
);
CREATE TABLE IF NOT EXISTS evidence (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL, rung TEXT NOT NULL, at REAL NOT NULL, detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS facts (
    node TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (node, key)
);
CREATE TABLE IF NOT EXISTS digests (
    path TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL,
    PRIMARY KEY (path, size, mtime_ns)
);
"""

#: Node name used for deployment-wide steps and facts.
GLOBAL = "*"

_TABLES = {"meta", "steps", "resources", "evidence", "facts", "digests", "sqlite_sequence"}


def _private_folder(folder: Path) -> None:
    """Create the state folder, and each missing folder above it, 0700 (seeds and the journal live there); folders
    that exist are left as their owner set them."""
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        created.mkdir(mode=0o700, exist_ok=True)
        os.chmod(created, 0o700)  # mkdir's mode is filtered by the umask


def _check_foreign(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a SQLite file that is not a journal: tables of its own, or a ``meta`` table of another shape.

    Raises:
        JournalError: naming what was found (table names are ours to print: SQLite identifiers, not secrets).
    """
    tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    foreign = sorted(tables - _TABLES)
    if foreign:
        shown = ", ".join(name[:40] for name in foreign[:5])
        raise JournalError(f"{path} is not a palette-provision journal (it has other tables: {shown}); "
                           "give another state folder")
    if "meta" in tables:
        columns = [str(r[1]) for r in conn.execute("PRAGMA table_info(meta)")]
        if columns != ["key", "value"]:
            raise JournalError(f"{path} is not a palette-provision journal (its meta table has another shape)")


def _shown(text: str | None) -> str:
    """A value read from a journal file (which may be anyone's) as data: printable, short, never a repr."""
    if text is None:
        return "(none)"
    clean = "".join(c if c.isprintable() else "?" for c in text[:64])
    return clean + ("..." if len(text) > 64 else "")


def _json(text: str, where: str) -> Any:
    """A journal row's JSON, or a :class:`JournalError` naming the row (never its content)."""
    try:
        return json.loads(text)
    except (ValueError, TypeError, RecursionError) as exc:
        raise JournalError(f"the journal's {where} is corrupt ({type(exc).__name__}): restore it or start afresh "
                           "with another state folder") from None


@dataclass(frozen=True)
class StepRecord:
    """One step's journal row."""

    phase: str
    node: str
    status: str  # started | done | failed
    attempts: int
    started_at: float | None
    finished_at: float | None
    data: dict[str, Any]
    error: str | None


@dataclass(frozen=True)
class ResourceRecord:
    """One created resource. ``destroyed_at`` is set once ``destroy`` removed it."""

    seq: int
    kind: str
    provider: str
    node: str
    external_id: str
    data: dict[str, Any]
    created_at: float
    destroyed_at: float | None


def _holds_secret(value: Any, secrets: frozenset[str], depth: int = 0) -> bool:
    """Whether any string in ``value`` (keys included, at any depth) contains a secret value."""
    if not secrets:
        return False
    if depth > 64:
        return True  # deeper than any record the library writes: refuse rather than guess
    if isinstance(value, Mapping):
        return any(_holds_secret(item, secrets, depth + 1) for pair in value.items() for item in pair)
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_holds_secret(v, secrets, depth + 1) for v in value)
    if value is None or isinstance(value, (bool, int, float)):
        return False
    text = value if isinstance(value, str) else str(value)
    return any(secret in text for secret in secrets)


class Journal:
    """The deployment's journal. Thread-safe; one writer process at a time (an exclusive file lock, or PostgreSQL's
    advisory lock for the PostgreSQL backend: :meth:`open_postgres`)."""

    def __init__(
        self, conn: Any, path: Path, lock_fd: int, *, readonly: bool = False, location: str | None = None
    ) -> None:
        self._conn = conn
        self._lock = threading.RLock()
        self._lock_fd = lock_fd
        self._readonly = readonly
        self._closed = False
        self.path = path
        #: Where the journal is, as messages show it: the SQLite file, or the database URL (no secrets) and schema.
        self.location = location or str(path)

    # ------------------------------------------------------------------------------------------- lifecycle
    @classmethod
    def open(cls, path: Path, *, deployment: str, fingerprint: str | None = None, create: bool = True) -> Journal:
        """Open (or create) the journal at ``path`` for ``deployment``.

        Raises:
            JournalError: the file belongs to another deployment, is locked by a running process, or is unreadable.
        """
        if not create and not path.exists():
            raise JournalError(f"no journal at {path}: nothing was applied with this plan and state folder")
        _private_folder(path.parent)
        lock_fd = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise JournalError(f"journal {path} is in use by another palette-provision process") from None
        try:
            # Created 0600 before SQLite opens it: SQLite gives the -wal and -shm files the database file's mode.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            os.chmod(path, 0o600)
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
            _check_foreign(conn, path)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(f"BEGIN; {_SCHEMA} COMMIT;")  # all tables at once, for a reader opening meanwhile
            journal = cls(conn, path, lock_fd)
            existing = journal.meta("deployment")
        except (sqlite3.DatabaseError, JournalError) as exc:
            os.close(lock_fd)
            if isinstance(exc, JournalError):
                raise
            raise JournalError(f"journal {path} is unreadable: {exc}") from exc
        journal._adopt(existing, deployment, fingerprint)
        return journal

    def _adopt(self, existing: str | None, deployment: str, fingerprint: str | None) -> None:
        """Claim a new journal for ``deployment``, or check an existing one is its and of this schema version."""
        if existing is None:
            self._set_meta("deployment", deployment)
            self._set_meta("schema", SCHEMA_VERSION)
            self._set_meta("created_at", repr(time.time()))
        elif existing != deployment:
            self.close()
            raise JournalError(f"journal {self.location} belongs to deployment {_shown(existing)}, not {deployment}")
        elif self.meta("schema") != SCHEMA_VERSION:
            version = _shown(self.meta("schema"))
            self.close()
            raise JournalError(
                f"journal {self.location} has schema version {version}, this palette-provision writes "
                f"{SCHEMA_VERSION}: finish or destroy that deployment with the version that made it"
            )
        if fingerprint is not None:
            self._set_meta("plan_fingerprint", fingerprint)

    @classmethod
    def open_postgres(
        cls, url: str, *, password: Secret | None, schema: str, deployment: str, fingerprint: str | None = None
    ) -> Journal:
        """Open (or create) the journal of ``deployment`` in ``schema`` of a PostgreSQL database, as its one writer
        (an advisory lock the server releases when this session ends, however it ends).

        Raises:
            JournalError: another process holds it, it belongs to another deployment, or the server refused us.
        """
        from palette_provision import _journal_pg as pg

        conn = pg.connect(url, password, schema)
        location = f"{pg.shown_url(url)} (schema {schema})"
        try:
            if not conn.try_lock(pg.lock_key(schema)):
                raise JournalError(f"journal {location} is in use by another palette-provision process")
            foreign = sorted(conn.tables() - set(_TABLES))
            if foreign:
                raise JournalError(f"schema {schema} at {pg.shown_url(url)} is not a palette-provision journal "
                                   f"(it has other tables: {', '.join(t[:40] for t in foreign[:5])})")  # fmt: skip
            conn.create_tables()
        except BaseException:
            conn.close()
            raise
        journal = cls(conn, Path(schema), -1, location=location)
        journal._adopt(journal.meta("deployment"), deployment, fingerprint)
        return journal

    @classmethod
    def open_postgres_readonly(cls, url: str, *, password: Secret | None, schema: str, deployment: str) -> Journal:
        """A view of the PostgreSQL journal taking no lock (``status`` while an ``apply`` runs elsewhere); empty when
        nothing was recorded yet (nothing is created)."""
        from palette_provision import _journal_pg as pg

        conn = pg.connect(url, password, schema)
        if "meta" not in conn.tables():
            conn.close()
            empty = sqlite3.connect(":memory:", check_same_thread=False)
            empty.executescript(_SCHEMA)
            return cls(empty, Path(schema), -1, readonly=True, location=f"{pg.shown_url(url)} (schema {schema})")
        journal = cls(conn, Path(schema), -1, readonly=True, location=f"{pg.shown_url(url)} (schema {schema})")
        existing = journal.meta("deployment")
        if existing is not None and existing != deployment:
            journal.close()
            raise JournalError(f"journal {journal.location} belongs to deployment {_shown(existing)}, not {deployment}")
        return journal

    @classmethod
    def open_readonly(cls, path: Path, *, deployment: str) -> Journal:
        """A read-only view of the journal at ``path``, taking no lock: ``status`` and ``plan`` read it while another
        process applies. With no journal there, an empty view (every step pending), and nothing is created.

        Raises:
            JournalError: the file belongs to another deployment or is unreadable.
        """
        try:
            conn = None
            if path.is_file():
                conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False,
                                       timeout=30)
                _check_foreign(conn, path)
                if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is None:
                    conn.close()  # an apply is creating it this instant: nothing recorded yet
                    conn = None
            if conn is None:
                conn = sqlite3.connect(":memory:", check_same_thread=False)
                conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"journal {path} is unreadable: {exc}") from exc
        except JournalError:
            if conn is not None:
                conn.close()
            raise
        journal = cls(conn, path, -1, readonly=True)
        existing = journal.meta("deployment")
        problem = None
        if existing is not None and existing != deployment:
            problem = f"journal {path} belongs to deployment {_shown(existing)}, not {deployment}"
        elif existing is not None and journal.meta("schema") != SCHEMA_VERSION:
            version = _shown(journal.meta("schema"))
            problem = f"journal {path} has schema version {version}, this version reads {SCHEMA_VERSION}"
        if problem is not None:
            journal.close()
            raise JournalError(problem)
        return journal

    def close(self) -> None:
        """Close the database and release the lock. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._conn.close()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *_: object | TracebackType) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------- helpers
    @staticmethod
    def _dump(value: Mapping[str, Any] | None) -> str:
        data = dict(value or {})
        # Looked for in the values themselves, not in the JSON text: there a multi-line private key, a quote, a
        # backslash or a non-ASCII character is escaped and would never be found.
        if _holds_secret(data, known_secret_values()):
            raise JournalError("refusing to write a secret value into the journal")
        return json.dumps(data, sort_keys=True, default=str)

    def _set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value)
            )

    def meta(self, key: str) -> str | None:
        """Read a metadata value (``deployment``, ``plan_fingerprint``, ``provider``...)."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Write a metadata value."""
        self._set_meta(key, value)

    # ------------------------------------------------------------------------------------------- steps
    def step(self, phase: str, node: str = GLOBAL) -> StepRecord | None:
        """The journal row of a step, or ``None`` if it never started."""
        with self._lock:
            row = self._conn.execute(
                "SELECT phase, node, status, attempts, started_at, finished_at, data, error"
                " FROM steps WHERE phase = ? AND node = ?",
                (phase, node),
            ).fetchone()
        if row is None:
            return None
        return StepRecord(row[0], row[1], row[2], row[3], row[4], row[5], _json(row[6], f"step {phase}/{node}"), row[7])

    def is_done(self, phase: str, node: str = GLOBAL) -> bool:
        """True when the step finished successfully in an earlier or this run."""
        rec = self.step(phase, node)
        return rec is not None and rec.status == "done"

    def begin(self, phase: str, node: str = GLOBAL) -> None:
        """Record the intent to run a step (before any side effect)."""
        with self._lock:
            self._conn.execute(
                "INSERT INTO steps (phase, node, status, attempts, started_at) VALUES (?, ?, 'started', 1, ?)"
                " ON CONFLICT (phase, node) DO UPDATE SET status = 'started', attempts = steps.attempts + 1,"
                " started_at = excluded.started_at, error = NULL",
                (phase, node, time.time()),
            )

    def finish(
        self,
        phase: str,
        node: str = GLOBAL,
        data: Mapping[str, Any] | None = None,
        resources: list[tuple[str, str, str, Mapping[str, Any]]] = (),  # type: ignore[assignment]
    ) -> None:
        """Mark a step done with its result ``data``; record ``resources`` (kind, provider, id, data) atomically."""
        text = self._dump(data)
        rows = [(k, p, node, i, self._dump(d), time.time()) for k, p, i, d in resources]
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for row in rows:
                    self._insert_resource(row)
                self._conn.execute(
                    "UPDATE steps SET status = 'done', finished_at = ?, data = ?, error = NULL"
                    " WHERE phase = ? AND node = ?",
                    (time.time(), text, phase, node),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def fail(self, phase: str, node: str, error: str, data: Mapping[str, Any] | None = None) -> None:
        """Mark a step failed with its (secret-free) error message and last observed state."""
        text = self._dump(data)
        for secret in known_secret_values():
            error = error.replace(secret, "***")
        with self._lock:
            self._conn.execute(
                "UPDATE steps SET status = 'failed', finished_at = ?, error = ?, data = ? WHERE phase = ? AND node = ?",
                (time.time(), error, text, phase, node),
            )

    def reset_step(self, phase: str, node: str = GLOBAL) -> None:
        """Forget a step so it runs again (used by ``destroy`` and for steps whose result expired)."""
        with self._lock:
            self._conn.execute("DELETE FROM steps WHERE phase = ? AND node = ?", (phase, node))

    def steps(self) -> list[StepRecord]:
        """Every step, in the order they first started."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT phase, node, status, attempts, started_at, finished_at, data, error FROM steps ORDER BY seq"
            ).fetchall()
        return [StepRecord(r[0], r[1], r[2], r[3], r[4], r[5], _json(r[6], f"step {r[0]}/{r[1]}"), r[7]) for r in rows]

    # ------------------------------------------------------------------------------------------- resources
    def _insert_resource(self, row: tuple[str, str, str, str, str, float]) -> None:
        self._conn.execute(
            "INSERT INTO resources (kind, provider, node, external_id, data, created_at) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (kind, external_id) DO UPDATE SET data = excluded.data, destroyed_at = NULL",
            row,
        )

    def add_resource(self, kind: str, provider: str, node: str, external_id: str, data: Mapping[str, Any]) -> None:
        """Record a created resource (idempotent on kind + id)."""
        row = (kind, provider, node, external_id, self._dump(data), time.time())
        with self._lock:
            self._insert_resource(row)

    def mark_destroyed(self, kind: str, external_id: str) -> None:
        """Record that ``destroy`` removed a resource."""
        with self._lock:
            self._conn.execute(
                "UPDATE resources SET destroyed_at = ? WHERE kind = ? AND external_id = ?",
                (time.time(), kind, external_id),
            )

    def resources(self, *, live_only: bool = False) -> list[ResourceRecord]:
        """Resources in creation order (``live_only``: not yet destroyed)."""
        query = "SELECT seq, kind, provider, node, external_id, data, created_at, destroyed_at FROM resources"
        if live_only:
            query += " WHERE destroyed_at IS NULL"
        with self._lock:
            rows = self._conn.execute(query + " ORDER BY seq").fetchall()
        return [
            ResourceRecord(r[0], r[1], r[2], r[3], r[4], _json(r[5], f"resource {r[1]} {r[4]}"), r[6], r[7])
            for r in rows
        ]

    # ------------------------------------------------------------------------------------------- facts
    def set_fact(self, node: str, key: str, value: Any) -> None:
        """Record a fact about a node (address, host-key fingerprint, certificate pin...)."""
        text = self._dump({"v": value})
        with self._lock:
            self._conn.execute(
                "INSERT INTO facts VALUES (?, ?, ?) ON CONFLICT (node, key) DO UPDATE SET value = excluded.value",
                (node, key, text),
            )

    def forget_facts(self, node: str, keys: tuple[str, ...] | None = None) -> None:
        """Forget ``keys`` (every fact when ``None``) about ``node``: what was known of a machine that is gone."""
        with self._lock:
            if keys is None:
                self._conn.execute("DELETE FROM facts WHERE node = ?", (node,))
            else:
                self._conn.executemany("DELETE FROM facts WHERE node = ? AND key = ?", [(node, k) for k in keys])

    def fact(self, node: str, key: str) -> Any:
        """Read a fact, or ``None``."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM facts WHERE node = ? AND key = ?", (node, key)).fetchone()
        return None if row is None else _json(row[0], f"fact {key} of {node}")["v"]

    def facts(self, node: str) -> dict[str, Any]:
        """Every fact recorded about ``node``."""
        with self._lock:
            rows = self._conn.execute("SELECT key, value FROM facts WHERE node = ?", (node,)).fetchall()
        return {k: _json(v, f"fact {k} of {node}")["v"] for k, v in rows}

    def add_evidence(self, node: str, rung: str, detail: Mapping[str, Any]) -> None:
        """Record a readiness rung reached, with what was seen."""
        text = self._dump(detail)
        with self._lock:
            self._conn.execute(
                "INSERT INTO evidence (node, rung, at, detail) VALUES (?, ?, ?, ?)", (node, rung, time.time(), text)
            )

    def evidence(self, node: str) -> list[dict[str, Any]]:
        """The readiness evidence recorded for ``node``, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT rung, at, detail FROM evidence WHERE node = ? ORDER BY seq", (node,)
            ).fetchall()
        return [{"rung": r[0], "at": r[1], **_json(r[2], f"evidence of {node}")} for r in rows]

    # ------------------------------------------------------------------------------------------- digests
    def cached_digest(self, path: Path) -> str | None:
        """The SHA-256 recorded for ``path`` at its current size and mtime, if any (no file read)."""
        st = path.stat()
        with self._lock:
            row = self._conn.execute(
                "SELECT sha256 FROM digests WHERE path = ? AND size = ? AND mtime_ns = ?",
                (str(path.resolve()), st.st_size, st.st_mtime_ns),
            ).fetchone()
        return None if row is None else str(row[0])

    def cache_digest(self, path: Path, sha256: str) -> None:
        """Remember ``path``'s digest at its current size and mtime."""
        st = path.stat()
        with self._lock:
            self._conn.execute(
                "INSERT INTO digests VALUES (?, ?, ?, ?)"
                " ON CONFLICT (path, size, mtime_ns) DO UPDATE SET sha256 = excluded.sha256",
                (str(path.resolve()), st.st_size, st.st_mtime_ns, sha256),
            )
