"""Bounded request-body reader (Content-Length or chunked transfer encoding), never buffering it all."""

from __future__ import annotations

from io import BufferedIOBase

from .errors import bad_request


class BodyReader:
    """Reads one request body from the connection in pieces.

    ``read(n)`` returns up to ``n`` bytes and ``b""`` at the end of the body. ``exhausted`` tells
    whether the whole body was consumed (if not, the connection must not be reused).
    """

    def __init__(self, rfile: BufferedIOBase, content_length: int | None, chunked: bool) -> None:
        self._rfile = rfile
        self._chunked = chunked
        self._remaining = 0 if chunked else (content_length or 0)
        self._chunk_left = 0
        self._done = not chunked and self._remaining == 0
        self.bytes_read = 0

    @property
    def exhausted(self) -> bool:
        """True once the end of the body was reached."""
        return self._done

    def read(self, size: int) -> bytes:
        """Return up to ``size`` bytes of body; ``b""`` at the end."""
        target = bytearray(size)
        count = self.readinto(memoryview(target))
        return bytes(target[:count])

    def readinto(self, target: memoryview) -> int:
        """Fill ``target`` with body bytes (as many as available up to its size); 0 at the end."""
        if self._done or not len(target):
            return 0
        if self._chunked:
            if self._chunk_left == 0:
                self._next_chunk()
                if self._done:
                    return 0
            want = min(len(target), self._chunk_left)
        else:
            want = min(len(target), self._remaining)
        count = self._rfile.readinto(target[:want])
        if not count:
            raise bad_request("request body ended early")
        self.bytes_read += count
        if self._chunked:
            self._chunk_left -= count
            if self._chunk_left == 0:
                self._rfile.readline(16)  # CRLF after the chunk data
        else:
            self._remaining -= count
            self._done = self._remaining == 0
        return count

    def _next_chunk(self) -> None:
        line = self._rfile.readline(1024)
        try:
            self._chunk_left = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError as exc:
            raise bad_request("malformed chunked transfer encoding") from exc
        if self._chunk_left == 0:
            while self._rfile.readline(8192).strip():
                pass  # trailers
            self._done = True

    def read_all(self, limit: int) -> bytes:
        """Read the whole body into memory, refusing bodies larger than ``limit`` bytes."""
        pieces: list[bytes] = []
        total = 0
        while True:
            data = self.read(65536)
            if not data:
                return b"".join(pieces)
            total += len(data)
            if total > limit:
                raise bad_request(f"request body larger than {limit} bytes")
            pieces.append(data)

    def drain(self, limit: int) -> bool:
        """Discard up to ``limit`` bytes of the rest of the body; True if it ended."""
        total = 0
        while not self._done and total <= limit:
            total += len(self.read(65536))
        return self._done
