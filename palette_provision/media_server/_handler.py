"""One connection: read request heads, answer them, send bodies by ``sendfile`` (or ``preadv`` under TLS).

Timeouts on plain connections are the kernel's (``SO_RCVTIMEO``/``SO_SNDTIMEO`` on a blocking socket), so a body goes
out as one blocking ``sendfile`` call per 8 MiB with the GIL released; TLS connections use Python's timeouts.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import struct
import threading
import time
from typing import Any

from palette_provision.log import Logger
from palette_provision.media_server._entries import Entry, printable, shown_request_path
from palette_provision.media_server._files import FileTable, Lease
from palette_provision.media_server._http import (
    MAX_HEAD,
    UNSATISFIABLE,
    BadRequest,
    Request,
    format_head,
    parse_head,
    parse_range,
)
from palette_provision.media_server._reports import MAX_REPORT_BYTES, REPORT_PREFIX, ReportBook, parse_addresses
from palette_provision.media_server._stats import FetchStats

__all__ = ["HEALTH_PATH", "Conn", "Handler"]

#: Answers 200 (GET, HEAD) with the server's instance id in ``X-Media-Server``: the liveness check.
HEALTH_PATH = "/_media/health"
_SENDFILE_CHUNK = 8 << 20  # per call: the granularity of the progress counters, not a buffer
_TLS_CHUNK = 256 << 10


def _timeval(seconds: float) -> bytes:
    return struct.pack("ll", int(seconds), int((seconds % 1) * 1e6))


class Conn:
    """A connection's socket, replaced by its TLS wrapper once wrapped (so ``stop`` shuts down the live one)."""

    def __init__(self, sock: socket.socket, client: str) -> None:
        self.sock = sock
        self.client = client
        self.linger = False  # close gracefully: the client may still be sending


class Handler:
    """Serves connections for a :class:`~palette_provision.media_server.MediaServer` (one thread each)."""

    def __init__(
        self,
        files: FileTable,
        stats: FetchStats,
        log: Logger,
        *,
        instance: str,
        context: ssl.SSLContext | None,
        idle_timeout: float,
        send_timeout: float,
        stopping: threading.Event,
        reports: ReportBook | None = None,
    ) -> None:
        self._files, self._stats, self._log = files, stats, log
        self._reports = reports
        self.instance = instance
        self._context = context
        self.idle_timeout, self.send_timeout = idle_timeout, send_timeout
        self._stopping = stopping

    def serve(self, conn: Conn) -> None:
        """Serve ``conn`` until it closes, times out or the server stops; always closes it."""
        try:
            if self._context is not None:
                conn.sock.settimeout(self.idle_timeout)
                conn.sock = self._context.wrap_socket(conn.sock, server_side=True, do_handshake_on_connect=False)
                if self._stopping.is_set():
                    return
                conn.sock.do_handshake()
            else:
                # Kernel timeouts on a blocking socket: sendfile then runs as one blocking call per chunk. Blocking
                # explicitly: with socket.setdefaulttimeout() set, accepted sockets would be non-blocking.
                conn.sock.setblocking(True)
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(self.idle_timeout))
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(self.send_timeout))
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pending = bytearray()
            while not self._stopping.is_set():
                head = self._read_head(conn.sock, pending)
                if head is None or not self._respond(conn, head, pending):
                    break
        except BadRequest as exc:
            self._log.info("media_bad_request", client=conn.client, status=exc.status, reason=exc.detail)
            with contextlib.suppress(OSError):
                self._answer(conn, exc.status, keep_alive=False, method="GET", body=exc.detail.encode() + b"\n")
                conn.linger = True
        except (OSError, ssl.SSLError) as exc:  # timeouts, resets, handshake failures: the client is gone
            self._log.debug("media_connection_ended", client=conn.client, reason=type(exc).__name__)
        finally:
            if conn.linger:
                self._linger(conn.sock)
            conn.sock.close()

    @staticmethod
    def _linger(sock: socket.socket) -> None:
        """Close gracefully after an answer the client may still be sending a request to: closing with unread bytes
        sends a reset, which can destroy the answer before the client reads it."""
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_WR)
            sock.settimeout(1.0)
            for _ in range(16):
                if not sock.recv(65536):
                    break

    @staticmethod
    def _read_head(sock: socket.socket, pending: bytearray) -> bytes | None:
        while True:
            while pending[:2] == b"\r\n":  # RFC 9112 2.2: ignore empty lines before a request line
                del pending[:2]
            end = pending.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(pending[:end])
                del pending[: end + 4]
                return head
            if len(pending) > MAX_HEAD:
                raise BadRequest(431, "request head too large")
            chunk = sock.recv(65536)
            if not chunk:
                return None
            pending += chunk

    def _answer(
        self,
        conn: Conn,
        status: int,
        *,
        keep_alive: bool,
        method: str,
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        fields = [*(headers or []), ("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        conn.sock.sendall(format_head(status, fields, keep_alive=keep_alive) + (body if method != "HEAD" else b""))

    def _respond(self, conn: Conn, head: bytes, pending: bytearray) -> bool:
        """Answer one request; True to keep the connection."""
        started = time.perf_counter()
        request = parse_head(head)
        if request.path.startswith(REPORT_PREFIX) and self._reports is not None:
            return self._report(self._reports, conn, request, pending)
        keep = request.keep_alive and not request.has_body  # never read a body: close instead
        conn.linger = request.has_body
        if request.method not in ("GET", "HEAD"):
            self._answer(
                conn, 405, keep_alive=keep, method="GET", body=b"only GET and HEAD\n", headers=[("Allow", "GET, HEAD")]
            )
            self._log.info(
                "media_fetch",
                client=conn.client,
                method=request.method[:16],
                status=405,
                path=shown_request_path(request.path),
            )
            return keep
        if request.path == HEALTH_PATH:
            self._answer(
                conn,
                200,
                keep_alive=keep,
                method=request.method,
                body=b"ok\n",
                headers=[("X-Media-Server", self.instance), ("Cache-Control", "no-store")],
            )
            return keep
        lease = self._files.lookup(request.path)
        if lease is None:
            self._answer(conn, 404, keep_alive=keep, method=request.method, body=b"not found\n")
            # A miss under /seed/ is a stale URL or someone guessing tokens: worth a warning.
            level = self._log.warning if request.path.startswith("/seed/") else self._log.info
            level("media_not_found", client=conn.client, method=request.method, path=shown_request_path(request.path))
            return keep
        try:
            return self._send_entry(conn, request, lease, started, keep)
        finally:
            lease.release()

    def _report(self, book: ReportBook, conn: Conn, request: Request, pending: bytearray) -> bool:
        """``POST``/``PUT /report/<token>``: a node's addresses (see :mod:`._reports`); 200 when recorded."""
        shown = shown_request_path(request.path)
        if request.method not in ("POST", "PUT"):
            self._answer(conn, 405, keep_alive=False, method=request.method, body=b"only POST and PUT\n",
                         headers=[("Allow", "POST, PUT")])  # fmt: skip
            conn.linger = True
            return False
        length_text = request.headers.get("content-length", "")
        if "transfer-encoding" in request.headers or not length_text.isdigit():
            self._answer(conn, 411, keep_alive=False, method="POST", body=b"a Content-Length is required\n")
            conn.linger = True
            return False
        length = int(length_text)
        if length > MAX_REPORT_BYTES:
            self._answer(conn, 413, keep_alive=False, method="POST", body=b"a report is at most 4096 bytes\n")
            conn.linger = True
            return False
        while len(pending) < length:
            chunk = conn.sock.recv(65536)
            if not chunk:
                return False
            pending += chunk
        body = bytes(pending[:length])
        del pending[:length]
        keep = request.keep_alive
        node = book.node_for(request.path[len(REPORT_PREFIX) :])
        if node is None:
            self._answer(conn, 404, keep_alive=keep, method="POST", body=b"not found\n")
            self._log.warning("address_report_refused", client=conn.client, path=shown, reason="unknown token")
            return keep
        try:
            addresses = parse_addresses(body)
        except ValueError as exc:
            self._answer(conn, 400, keep_alive=keep, method="POST", body=f"{exc}\n".encode())
            self._log.warning("address_report_refused", client=conn.client, node=node, reason=str(exc))
            return keep
        book.record(node, addresses, conn.client)
        self._answer(conn, 200, keep_alive=keep, method="POST", body=b"ok\n", headers=[("Cache-Control", "no-store")])
        self._log.info("address_reported", client=conn.client, node=node, addresses=list(addresses))
        return keep

    def _send_entry(self, conn: Conn, request: Request, lease: Lease, started: float, keep: bool) -> bool:
        entry, file = lease.entry, lease.file
        wanted = parse_range(request.headers.get("range"), file.size)
        if_range = request.headers.get("if-range")
        if wanted is not None and if_range is not None and if_range not in (file.etag, file.last_modified):
            wanted = None  # the client's copy is of another version: send the whole file (RFC 9110 13.1.5)
        fields = [("Accept-Ranges", "bytes"), ("Last-Modified", file.last_modified), ("ETag", file.etag)]
        if entry.token:
            fields.append(("Cache-Control", "no-store"))
        self._stats.request(entry.key, conn.client, file.size)
        shown_range = None
        if wanted is UNSATISFIABLE:
            fields.append(("Content-Range", f"bytes */{file.size}"))
            self._answer(conn, 416, keep_alive=keep, method=request.method, headers=fields)
            shown = printable(request.headers.get("range", ""), 40)
            self._fetched(conn, request, entry, 416, shown_range=shown, sent=0, started=started)
            return keep
        if isinstance(wanted, tuple):
            status, first, length = 206, wanted[0], wanted[1] - wanted[0] + 1
            shown_range = f"{first}-{wanted[1]}"
            fields.append(("Content-Range", f"bytes {shown_range}/{file.size}"))
        else:
            status, first, length = 200, 0, file.size
        fields += [("Content-Type", "application/octet-stream"), ("Content-Length", str(length))]
        body = request.method == "GET" and length > 0
        response_head = format_head(status, fields, keep_alive=keep)
        sent, error = 0, None
        try:
            if self._context is None:
                conn.sock.sendall(response_head, socket.MSG_MORE if body else 0)
            else:
                conn.sock.sendall(response_head)
        except (OSError, ssl.SSLError) as exc:
            error = exc
        if error is None and body:
            sent, error = self._send_body(conn, entry, file.fd, first, length)
        complete = error is None and sent == (length if body else 0)
        self._fetched(
            conn, request, entry, status, shown_range=shown_range, sent=sent, started=started, complete=complete
        )
        if error is not None:
            raise error
        return complete and keep  # not complete: the file shrank under us; close (Content-Length was sent)

    def _send_body(self, conn: Conn, entry: Entry, fd: int, first: int, length: int) -> tuple[int, OSError | None]:
        """Send ``length`` bytes from offset ``first``: how many went, and the error that stopped it, if any."""
        sent = counted = 0
        error: OSError | None = None
        try:
            if self._context is None:
                out = conn.sock.fileno()
                while sent < length:
                    n = os.sendfile(out, fd, first + sent, min(length - sent, _SENDFILE_CHUNK))
                    if n == 0:
                        break  # end of file before the end of the range: the file shrank
                    sent += n
                    self._stats.sent(entry.key, conn.client, n, first + sent)
                    counted = sent
            else:
                buffer = memoryview(bytearray(min(_TLS_CHUNK, length)))
                while sent < length:
                    n = os.preadv(fd, [buffer[: min(length - sent, len(buffer))]], first + sent)
                    if n == 0:
                        break
                    conn.sock.sendall(buffer[:n])
                    sent += n
                    if sent - counted >= _SENDFILE_CHUNK:
                        self._stats.sent(entry.key, conn.client, sent - counted, first + sent)
                        counted = sent
        except OSError as exc:  # ssl.SSLError is an OSError
            error = exc
        if sent > counted:
            self._stats.sent(entry.key, conn.client, sent - counted, first + sent)
        return sent, error

    def _fetched(
        self,
        conn: Conn,
        request: Request,
        entry: Entry,
        status: int,
        *,
        shown_range: str | None,
        sent: int,
        started: float,
        complete: bool = True,
    ) -> None:
        fields: dict[str, Any] = {
            "client": conn.client,
            "entry": entry.key,
            "method": request.method,
            "status": status,
            "range": shown_range,
            "bytes": sent,
            "seconds": round(time.perf_counter() - started, 4),
        }
        if entry.node:
            fields["node"] = entry.node
        if not complete:
            fields["cut"] = True
        self._log.info("media_fetch", **fields)
