"""The media server as a process of its own, so that it outlives the run that started it.

``palette-provision media serve --state-dir DIR --bind ADDR:PORT`` serves what ``DIR/media.json`` lists, and
records itself in ``DIR/server.json`` (pid, URL, instance id, certificate fingerprint). :func:`ensure_media_server`
finds that process alive (its health path answers with the recorded instance id) or starts one, detached in a
session of its own, at the recorded port: the same URLs as before. :func:`stop_media_server` ends it.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from palette_provision.errors import ConfigurationError, WaitTimeout
from palette_provision.media_server._entries import Entry, MediaCatalog, write_private_json
from palette_provision.media_server._reports import REPORT_PREFIX, AddressReport, ReportBook
from palette_provision.media_server._server import HEALTH_PATH, WILDCARDS, MediaServer, parse_bind
from palette_provision.media_server._stats import STATS_FILE, EntryStats, read_stats
from palette_provision.media_server._tls import TlsFiles
from palette_provision.waiting import Backoff, wait_for

__all__ = ["ServerHandle", "ensure_media_server", "find_media_server", "serve", "stop_media_server"]

RECORD = "server.json"
LOG = "server.log"


@dataclass(frozen=True)
class ServerHandle:
    """A ``media serve`` process for a state folder, as its ``server.json`` records it; publishes through the
    folder's manifest, which the process picks up at its next request."""

    state_dir: Path
    url: str
    pid: int
    instance: str
    cert_sha256: str | None
    record: dict[str, Any]

    @property
    def catalog(self) -> MediaCatalog:
        """The folder's manifest."""
        return MediaCatalog(self.state_dir)

    def publish_iso(self, path: Path, *, file_name: str | None = None, sha256: str | None = None) -> Entry:
        """See :meth:`MediaCatalog.publish_iso`."""
        return self.catalog.publish_iso(path, file_name=file_name, sha256=sha256)

    def publish_seed(self, node: str, path: Path, *, file_name: str | None = None) -> Entry:
        """See :meth:`MediaCatalog.publish_seed`."""
        return self.catalog.publish_seed(node, path, file_name=file_name)

    def unpublish(self, key: str) -> bool:
        """See :meth:`MediaCatalog.unpublish`."""
        return self.catalog.unpublish(key)

    def url_for(self, entry: Entry | str) -> str:
        """The full URL of an entry or key. Raises ConfigurationError for an unknown key."""
        if isinstance(entry, str):
            found = self.catalog.get(entry)
            if found is None:
                raise ConfigurationError(f"nothing is published under {entry!r}")
            entry = found
        return self.url + entry.url_path

    @property
    def reports(self) -> ReportBook:
        """The folder's address tokens and reports."""
        return ReportBook(self.state_dir)

    def report_url(self, node: str) -> str:
        """See :meth:`MediaServer.report_url`."""
        return self.url + REPORT_PREFIX + self.reports.token_for(node)

    def reported(self, node: str) -> AddressReport | None:
        """See :meth:`MediaServer.reported`."""
        return self.reports.latest(node)

    def stats(self) -> dict[str, EntryStats]:
        """The fetch counters the process last wrote (at most about a second old)."""
        return read_stats(self.state_dir)

    def alive(self) -> bool:
        """Whether the process answers its health path with its instance id."""
        return _answers(self.record)


def _read_record(state_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((state_dir / RECORD).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _handle(state_dir: Path, record: dict[str, Any]) -> ServerHandle:
    return ServerHandle(
        state_dir, str(record["url"]), int(record["pid"]), str(record["instance"]), record.get("cert_sha256"), record
    )


def _answers(record: dict[str, Any], timeout: float = 3.0) -> bool:
    """HEAD the health path (over the bind address, or loopback for a wildcard) and compare the instance id."""
    import httpx

    from palette_provision.tls import pinned_context

    host = str(record["bind_host"])
    if host in WILDCARDS:
        host = "::1" if ":" in host else "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    url = f"{record['scheme']}://{shown}:{record['port']}{HEALTH_PATH}"
    verify: Any = pinned_context(record["cert_sha256"], server="media server") if record.get("cert_sha256") else True
    try:
        with httpx.Client(verify=verify, trust_env=False, timeout=timeout) as client:
            answer = client.head(url)
    except (httpx.HTTPError, OSError, ConfigurationError):
        return False
    return answer.status_code == 200 and answer.headers.get("x-media-server") == record["instance"]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def find_media_server(state_dir: Path) -> ServerHandle | None:
    """The ``media serve`` process recorded for ``state_dir`` if it answers, else None. For a server that something
    else runs (a systemd unit): use it, never start one."""
    state_dir = Path(state_dir).absolute()
    record = _read_record(state_dir)
    return _handle(state_dir, record) if record is not None and _answers(record) else None


def ensure_media_server(
    state_dir: Path,
    bind: str = "127.0.0.1:0",
    *,
    advertise_host: str | None = None,
    tls: TlsFiles | None = None,
    timeout: float = 30.0,
) -> ServerHandle:
    """Return the running ``media serve`` process for ``state_dir``, starting one (detached) if none answers.

    A new process binds the recorded port when ``bind`` asks for port 0 and the host is unchanged, so URLs already
    given to BMCs stay valid; with a given certificate, it keeps that certificate too.

    Raises:
        ConfigurationError: a server for this folder already runs with another address or certificate, or a new
            one could not start (the address cannot be bound; the message says why).
    """
    state_dir = MediaCatalog(state_dir).state_dir  # created 0700
    host, port = parse_bind(bind)
    with _locked(state_dir / "server.lock"):
        record = _read_record(state_dir)
        if record is not None and _answers(record):
            clash = (
                record["bind_host"] != host
                or (port and record["port"] != port)
                or (advertise_host and record["advertise_host"] != advertise_host)
                or record.get("cert_sha256") != (tls.fingerprint if tls else None)
            )
            if clash:
                raise ConfigurationError(
                    f"a media server for {state_dir} already serves at {record['url']} (pid {record['pid']}) with "
                    f"other settings; stop it first: palette-provision media stop --state-dir {state_dir}"
                )
            return _handle(state_dir, record)
        if port == 0 and record is not None and record.get("bind_host") == host:
            port = int(record["port"])
        shown_host = f"[{host}]" if ":" in host else host
        command = [
            sys.executable,
            "-m",
            "palette_provision",
            "--log-level",
            "info",
            "media",
            "serve",
            "--bind",
            f"{shown_host}:{port}",
            "--state-dir",
            str(state_dir),
            "--detach",
        ]
        if advertise_host:
            command += ["--advertise", advertise_host]
        if tls is not None:
            command += ["--tls-cert", str(Path(tls.cert).absolute()), "--tls-key", str(Path(tls.key).absolute())]
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        try:
            done = subprocess.run(
                command,
                check=False,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                stdin=subprocess.DEVNULL,
                cwd="/",
            )
        except subprocess.TimeoutExpired as exc:
            raise ConfigurationError(f"the media server for {state_dir} did not start within {timeout:.0f}s") from exc
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            reason = lines[-1].removeprefix("error: ") if lines else f"exit code {done.returncode}"
            raise ConfigurationError(f"the media server for {state_dir} did not start: {reason}")
        record = _read_record(state_dir)
        if record is None or not _answers(record):
            raise ConfigurationError(
                f"the media server for {state_dir} started but does not answer; see {state_dir / LOG}"
            )
        return _handle(state_dir, record)


def _gone(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, IndexError):
        return True
    return fields[0] in ("Z", "X")  # a zombie has exited; only its parent's wait is missing


def stop_media_server(state_dir: Path, timeout: float = 10.0) -> bool:
    """Stop the ``media serve`` process recorded for ``state_dir`` (SIGTERM, then SIGKILL after ``timeout``).

    Only a process that proves it is that server is signalled: its health path answers with the recorded instance
    id, or its command line is ``media serve`` for this folder (a process that stopped answering). Returns whether
    one was stopped.
    """
    state_dir = Path(state_dir).absolute()
    record = _read_record(state_dir)
    if record is None:
        return False
    pid = int(record["pid"])
    if _gone(pid):
        return False
    if not _answers(record):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        if b"serve" not in argv or str(state_dir).encode() not in argv:
            return False
    os.kill(pid, signal.SIGTERM)
    try:
        wait_for(
            lambda: _gone(pid),
            what=f"media server (pid {pid}) to exit",
            timeout=timeout,
            backoff=Backoff(0.05, 0.5, 0.05),
        )
    except WaitTimeout:
        os.kill(pid, signal.SIGKILL)
    return True


def serve(
    state_dir: Path,
    bind: str,
    *,
    advertise_host: str | None = None,
    tls: TlsFiles | None = None,
    detach: bool = False,
) -> int:
    """Run a media server for ``state_dir`` until SIGTERM or SIGINT (the ``media serve`` command); returns 0.

    Prints one JSON line when it serves (url, pid, instance, cert_sha256). With ``detach``, the command returns as
    soon as the server serves, leaving it running in a session of its own (stdin and stdout on ``/dev/null``, its
    log appended to ``state_dir/server.log``); a bind error is still reported by the command itself.

    Raises:
        ConfigurationError: the address cannot be bound, or the certificate cannot be loaded.
    """
    catalog = MediaCatalog(state_dir)
    server = MediaServer(
        bind, advertise_host=advertise_host, tls=tls, catalog=catalog, stats_file=catalog.state_dir / STATS_FILE,
        reports=ReportBook(catalog.state_dir),
    )
    server.bind()  # before detaching: the command itself reports a bad address
    ready_fd = _detach(catalog.state_dir) if detach else None
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    try:
        record = {
            "pid": os.getpid(),
            "instance": server.instance,
            "url": server.base_url,
            "bind_host": server.bind_host,
            "port": server.port,
            "advertise_host": server.advertise_host,
            "scheme": "https" if tls else "http",
            "cert_sha256": server.fingerprint,
            "started_at": time.time(),
            "state_dir": str(catalog.state_dir),
        }
        write_private_json(catalog.state_dir / RECORD, record)
        line = json.dumps({k: record[k] for k in ("url", "pid", "instance", "cert_sha256")})
        if ready_fd is None:
            print(line, flush=True)
        else:
            os.write(ready_fd, f"ok {line}\n".encode())
            os.close(ready_fd)
        while not stop.wait(3600):
            pass
    finally:
        server.stop()
    return 0


def _detach(state_dir: Path) -> int:
    """Fork; the parent waits for the child's "ok", prints its line and exits; the child leads a new session.

    Returns, in the child, the pipe end on which to say "ok". Forking happens before any thread exists.
    """
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        chunks = []
        while chunk := os.read(read_end, 4096):
            chunks.append(chunk)
        said = b"".join(chunks).decode(errors="replace")
        if said.startswith("ok "):
            sys.stdout.write(said[3:])
            sys.stdout.flush()
            os._exit(0)
        sys.stderr.write(f"error: the media server exited before serving; see {state_dir / LOG}\n")
        sys.stderr.flush()
        os._exit(4)
    os.close(read_end)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    log = os.open(state_dir / LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    os.chdir("/")
    return write_end
