"""A throw-away PostgreSQL cluster for the PostgreSQL journal's tests (Debian's ``postgresql`` package, installed by
``./dev``; the package's own cluster is not used).

``with PgCluster() as pg:`` runs ``initdb`` into a fresh folder (password authentication over TCP, scram-sha-256),
starts the server on a free loopback port, and creates the role ``pp`` with a random password and the database
``journal``; :attr:`url` and :attr:`password` are what a plan's ``journal`` section takes. PostgreSQL refuses to run
as root, so as root the server runs as the package's ``postgres`` user.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError(f"no {name}: install Debian's postgresql package (./dev does)")
    return found[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """A PostgreSQL server of its own (see the module docstring)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.password = secrets.token_urlsafe(18)
        self.url = f"postgresql://pp@127.0.0.1:{self.port}/journal"
        self.folder = Path(tempfile.mkdtemp(prefix="pp-pg-"))
        self._user: str | None = "postgres" if os.geteuid() == 0 else None

    def _run(self, *argv: str, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        command = ["runuser", "-u", self._user, "--", *argv] if self._user else list(argv)
        return subprocess.run(command, input=input_text, capture_output=True, text=True, check=True, timeout=120,
                              cwd=self.folder)  # fmt: skip

    def start(self) -> PgCluster:
        """initdb, start, create the role and the database."""
        if self._user:
            entry = pwd.getpwnam(self._user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        data = self.folder / "data"
        superpw = self.folder / "superpw"
        superpw.write_text(secrets.token_urlsafe(18))
        if self._user:
            os.chown(superpw, pwd.getpwnam(self._user).pw_uid, -1)
        superpw.chmod(0o600)
        self._run(_bin("initdb"), "-D", str(data), "-U", "admin", "--auth-local=trust", "--auth-host=scram-sha-256",
                  f"--pwfile={superpw}", "-E", "UTF8")  # fmt: skip
        self._run(_bin("pg_ctl"), "-D", str(data), "-l", str(self.folder / "server.log"), "-w", "-t", "60",
                  "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off", "start")
        statements = (f"CREATE ROLE pp LOGIN PASSWORD '{self.password}';\n"
                      "CREATE DATABASE journal OWNER pp;\n")  # fmt: skip
        self._run(_bin("psql"), "-h", str(self.folder), "-p", str(self.port), "-U", "admin", "-d", "postgres",
                  "-v", "ON_ERROR_STOP=1", "-q", input_text=statements)  # fmt: skip
        return self

    def stop(self) -> None:
        """Stop the server (immediate) and remove its folder."""
        data = self.folder / "data"
        if (data / "postmaster.pid").exists():
            subprocess.run((["runuser", "-u", self._user, "--"] if self._user else [])
                           + [_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, check=False, timeout=60)  # fmt: skip
        for _ in range(50):
            if not (data / "postmaster.pid").exists():
                break
            time.sleep(0.1)
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
