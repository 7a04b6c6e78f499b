"""`MediaServer`: published files over HTTP or HTTPS, one thread per connection, bodies by ``sendfile``.

Why threads and ``sendfile``: a blocking ``os.sendfile`` moves a whole range from the page cache to the socket in
the kernel with the GIL released, so N connections send in parallel without a byte passing through Python, and the
server's memory does not grow with N or with the file's size (each connection holds a thread stack and a 64 KiB
head buffer). Connections are few (one or two per BMC): an event loop would buy nothing here and cost code. Under
TLS, where ``sendfile`` cannot encrypt, bodies are read with ``os.preadv`` into one 256 KiB buffer per connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from pathlib import Path

from palette_provision.errors import ConfigurationError
from palette_provision.log import get_logger
from palette_provision.media_server._entries import Catalog, Entry, MemoryCatalog, write_private_json
from palette_provision.media_server._files import FileTable
from palette_provision.media_server._handler import HEALTH_PATH, Conn, Handler
from palette_provision.media_server._http import format_head
from palette_provision.media_server._reports import REPORT_PREFIX, AddressReport, ReportBook
from palette_provision.media_server._stats import EntryStats, FetchStats
from palette_provision.media_server._tls import TlsFiles

__all__ = ["HEALTH_PATH", "MediaServer", "parse_bind"]

WILDCARDS = ("0.0.0.0", "::", "")  # noqa: S104 (names the wildcard addresses, binds nothing)


def parse_bind(bind: str) -> tuple[str, int]:
    """``"10.0.0.1:8080"``, ``"[fd00::1]:0"`` -> (host, port). Port 0 picks a free port.

    Raises:
        ConfigurationError: not ``HOST:PORT``.
    """
    host, sep, port_text = bind.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not port_text.isdigit() or int(port_text) > 65535 or not host:
        raise ConfigurationError(f"media server address {bind!r} is not HOST:PORT (e.g. 10.0.0.5:8080)")
    return host, int(port_text)


class MediaServer:
    """Serve published files (see the package docstring for the URL layout and an example).

    Args:
        bind: ``HOST:PORT`` to listen on (port 0: any free port).
        advertise_host: the host name or address put in URLs (default: the bind host; required with a wildcard).
        tls: serve HTTPS with this certificate and key.
        catalog: where entries are listed: a :class:`MediaCatalog` (a state folder's manifest, which other
            processes may write) or, by default, memory.
        stats_file: write the fetch counters there (JSON, 0600) at most once a second, and on :meth:`stop`.
        instance: the id the health path answers with (default: a random one).
        reports: where nodes' address tokens and reports are kept (default: memory); see :meth:`report_url`.
    """

    def __init__(
        self,
        bind: str = "127.0.0.1:0",
        *,
        advertise_host: str | None = None,
        tls: TlsFiles | None = None,
        catalog: Catalog | None = None,
        max_connections: int = 256,
        idle_timeout: float = 120.0,
        send_timeout: float = 120.0,
        stats_file: Path | None = None,
        instance: str | None = None,
        reports: ReportBook | None = None,
    ) -> None:
        self.bind_host, self._requested_port = parse_bind(bind)
        if advertise_host is None and self.bind_host in WILDCARDS:
            raise ConfigurationError(f"the media server binds {bind}: name the address BMCs reach (advertise_host)")
        self.advertise_host = advertise_host or self.bind_host
        self.tls = tls
        self._context = tls.server_context() if tls is not None else None
        self.catalog = catalog if catalog is not None else MemoryCatalog()
        self.instance = instance or uuid.uuid4().hex
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.send_timeout = send_timeout
        self.stats_file = stats_file
        self._log = get_logger(__name__).bind(phase="media")
        self._files = FileTable(self.catalog, self._problem)
        self._stats = FetchStats()
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._accept_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._conns: dict[threading.Thread, Conn] = {}
        self._stats_written = 0.0
        self.port = 0
        self.reports = reports if reports is not None else ReportBook()
        self._handler = Handler(
            self._files,
            self._stats,
            self._log,
            instance=self.instance,
            context=self._context,
            idle_timeout=idle_timeout,
            send_timeout=send_timeout,
            stopping=self._stopping,
            reports=self.reports,
        )

    # -- life cycle --------------------------------------------------------------------------------------------

    def bind(self) -> None:
        """Open the listening socket (no thread yet). Called by :meth:`start`; separate so a process can bind,
        then detach, then start.

        Raises:
            ConfigurationError: the address cannot be bound (names it and the reason).
        """
        if self._listener is not None:
            return
        family = socket.AF_INET6 if ":" in self.bind_host else socket.AF_INET
        try:
            self._listener = socket.create_server((self.bind_host, self._requested_port), family=family, backlog=128)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot bind the media server to {self.bind_host}:{self._requested_port}: {exc.strerror or exc}"
            ) from exc
        self.port = self._listener.getsockname()[1]

    def start(self) -> MediaServer:
        """Bind (if not yet) and start accepting connections. Returns ``self``."""
        self.bind()
        self._files.refresh()
        self._accept_thread = threading.Thread(target=self._accept_loop, name="media-accept", daemon=True)
        self._accept_thread.start()
        self._log.info("media_server_started", url=self.base_url, tls=self.tls is not None)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, end every connection (a transfer in progress is cut), close every file. Idempotent."""
        self._stopping.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes accept() at once (Linux)
            if self._accept_thread is not None:
                self._accept_thread.join(timeout)
            listener.close()
        with self._lock:
            conns = dict(self._conns)
        for conn in conns.values():
            # The plain socket's shutdown, even on a TLS connection: ssl.SSLSocket.shutdown unsets the TLS layer
            # first, and a thread sending right then would send plaintext.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(conn.sock, socket.SHUT_RDWR)
        for thread in conns:
            thread.join(timeout)
        self._files.close()
        self._write_stats(force=True)

    def __enter__(self) -> MediaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- publishing --------------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http(s)://<advertised host>:<port>``."""
        host = f"[{self.advertise_host}]" if ":" in self.advertise_host else self.advertise_host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def fingerprint(self) -> str | None:
        """The certificate's SHA-256 (HTTPS), else None."""
        return self.tls.fingerprint if self.tls else None

    def publish_iso(self, path: Path, *, file_name: str | None = None, sha256: str | None = None) -> Entry:
        """Publish a file at ``/iso/<file_name>`` (see :meth:`MediaCatalog.publish_iso`)."""
        return self.catalog.publish_iso(path, file_name=file_name, sha256=sha256)

    def publish_seed(self, node: str, path: Path, *, file_name: str | None = None) -> Entry:
        """Publish a node's seed at ``/seed/<token>/<file_name>`` (see :meth:`MediaCatalog.publish_seed`)."""
        return self.catalog.publish_seed(node, path, file_name=file_name)

    def unpublish(self, key: str) -> bool:
        """Stop serving ``key``; its URL answers 404 from the next request on."""
        return self.catalog.unpublish(key)

    def url_for(self, entry: Entry | str) -> str:
        """The full URL of an entry (or of the entry published under a key).

        Raises:
            ConfigurationError: nothing is published under that key.
        """
        if isinstance(entry, str):
            found = self.catalog.get(entry)
            if found is None:
                raise ConfigurationError(f"nothing is published under {entry!r}")
            entry = found
        return self.base_url + entry.url_path

    def report_url(self, node: str) -> str:
        """Where ``node`` reports its addresses (``POST`` the text of ``ip -o addr``): a token of its own."""
        return self.base_url + REPORT_PREFIX + self.reports.token_for(node)

    def reported(self, node: str) -> AddressReport | None:
        """``node``'s latest address report, if any."""
        return self.reports.latest(node)

    def stats(self) -> dict[str, EntryStats]:
        """Fetch counters by entry key: requests, bytes, and per client address."""
        return self._stats.snapshot()

    def open_files(self) -> int:
        """How many published files the server holds open (one per file, however many clients)."""
        return self._files.open_files()

    # -- serving -----------------------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        listener.settimeout(0.5)
        while not self._stopping.is_set():
            try:
                sock, address = listener.accept()
            except TimeoutError:
                self._tick()
                continue
            except OSError as exc:
                if self._stopping.is_set():
                    return
                self._log.warning("media_accept_failed", error=exc)  # EMFILE, say: do not spin
                time.sleep(0.1)
                continue
            with self._lock:
                full = len(self._conns) >= self.max_connections
            if full:
                self._refuse(sock)
                continue
            conn = Conn(sock, str(address[0]))
            thread = threading.Thread(target=self._serve, args=(conn,), name="media-conn", daemon=True)
            with self._lock:
                self._conns[thread] = conn
            thread.start()
            self._tick()

    def _tick(self) -> None:
        self._files.refresh()  # closes the files of unpublished entries even when no request comes
        self._write_stats()

    def _write_stats(self, *, force: bool = False) -> None:
        if self.stats_file is None or not self._stats.changed or (not force and time.time() - self._stats_written < 1):
            return
        try:
            write_private_json(self.stats_file, self._stats.to_json())
            self._stats_written = time.time()
        except OSError as exc:
            self._log.warning("media_stats_not_written", path=str(self.stats_file), error=exc)

    def _refuse(self, sock: socket.socket) -> None:
        try:
            sock.settimeout(1.0)
            sock.sendall(format_head(503, [("Content-Length", "0"), ("Retry-After", "5")], keep_alive=False))
            # Read what the client sent so far (without waiting: this is the accept thread): closing with unread
            # bytes would reset the connection and could destroy the answer.
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                while sock.recv(65536):
                    pass
            socket.socket.shutdown(sock, socket.SHUT_WR)
        except OSError:
            pass
        finally:
            sock.close()
        self._log.warning("media_connection_refused", reason="too many connections", limit=self.max_connections)

    def _serve(self, conn: Conn) -> None:
        try:
            self._handler.serve(conn)
        finally:
            with self._lock:
                self._conns.pop(threading.current_thread(), None)

    def _problem(self, event: str, entry: Entry, reason: str) -> None:
        self._log.warning(event, entry=entry.key, path=str(entry.path), reason=reason)
