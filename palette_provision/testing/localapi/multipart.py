"""Streaming ``multipart/form-data`` parser: parts are handed to sinks piece by piece.

Memory stays bounded by the read size (1 MiB) whatever the size of the uploaded file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from email.message import Message
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Protocol

from .body import BodyReader
from .errors import bad_request

READ_SIZE = 1 << 20
MAX_HEADER_BYTES = 16384


class Sink(Protocol):
    """Receives the bytes of one part."""

    def write(self, data: bytes | memoryview) -> None:
        """Take the next piece of the part's content (only valid during the call)."""

    def close(self) -> None:
        """Called once the part is complete."""


class FileSink:
    """Writes a part to a file, computing its SHA-256 and size on the way."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = open(path, "wb")  # noqa: SIM115 - closed in close()/discard()
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        """Append ``data`` to the file and the digest."""
        self._handle.write(data)
        self._hash.update(data)
        self.size += len(data)

    def close(self) -> None:
        """Flush and close the file."""
        if not self._handle.closed:
            self._handle.close()

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of everything written so far."""
        return self._hash.hexdigest()

    def discard(self) -> None:
        """Close and delete the file (failed or rejected upload)."""
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class MemorySink:
    """Keeps a small form field in memory; refuses more than ``limit`` bytes."""

    def __init__(self, name: str, limit: int = 65536) -> None:
        self.name = name
        self.data = bytearray()
        self._limit = limit

    def write(self, data: bytes | memoryview) -> None:
        """Append ``data``, refusing oversize fields."""
        self.data += data
        if len(self.data) > self._limit:
            raise bad_request(f"form field {self.name!r} is larger than {self._limit} bytes")

    def close(self) -> None:
        """Nothing to release."""


class PartHeaders:
    """The headers of one part, with its form field name and file name."""

    def __init__(self, message: Message) -> None:
        self.message = message
        name = message.get_param("name", header="content-disposition")
        filename = message.get_filename()
        self.name = name if isinstance(name, str) else ""
        self.filename = filename if isinstance(filename, str) else None
        self.content_type = message.get_content_type()


def boundary_of(content_type: str | None) -> bytes:
    """Return the multipart boundary from a Content-Type header, or raise a 400."""
    if not content_type:
        raise bad_request("Content-Type must be multipart/form-data", field="Content-Type")
    message = Message()
    message["content-type"] = content_type
    if message.get_content_type() != "multipart/form-data":
        raise bad_request(
            f"Content-Type must be multipart/form-data, got {message.get_content_type()}",
            field="Content-Type",
        )
    boundary = message.get_param("boundary")
    if not isinstance(boundary, str) or not boundary or len(boundary) > 200:
        raise bad_request("multipart/form-data without a valid boundary", field="Content-Type")
    return boundary.encode("latin-1")


class _Window:
    """A fixed buffer over the body: data lives in ``buf[start:end]``; refilled with ``readinto``.

    Reusing one buffer (no per-read allocation, writes handed out as memoryviews) keeps the parser
    fast and its memory constant.
    """

    def __init__(self, reader: BodyReader, size: int) -> None:
        self.reader = reader
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.start = 0
        self.end = 0

    def __len__(self) -> int:
        return self.end - self.start

    def fill(self) -> bool:
        """Move the unread bytes to the front and read more; False at the end of the body."""
        if self.start:
            remaining = self.buf[self.start:self.end]
            self.buf[: len(remaining)] = remaining
            self.start, self.end = 0, len(remaining)
        if self.end == len(self.buf):
            raise bad_request("multipart part headers too large")
        count = self.reader.readinto(self.view[self.end:])
        self.end += count
        return count > 0

    def find(self, needle: bytes) -> int:
        """Index of ``needle`` relative to ``start``, or -1."""
        index = self.buf.find(needle, self.start, self.end)
        return index - self.start if index >= 0 else -1

    def take(self, count: int) -> memoryview:
        """Consume ``count`` bytes and return them (valid until the next :meth:`fill`)."""
        chunk = self.view[self.start:self.start + count]
        self.start += count
        return chunk


def parse_multipart(
    reader: BodyReader, boundary: bytes, open_sink: Callable[[PartHeaders], Sink]
) -> int:
    """Parse the body, calling ``open_sink`` for each part; return the number of parts.

    Raises a 400 :class:`~.errors.ApiError` on malformed input (no closing delimiter, oversize
    part headers, body ending early).
    """
    separator = b"\r\n--" + boundary
    window = _Window(reader, READ_SIZE + MAX_HEADER_BYTES)
    # A CRLF is prepended so the first delimiter looks like every other one.
    window.buf[:2] = b"\r\n"
    window.end = 2

    def skip_to_separator(sink: Sink | None) -> None:
        keep = len(separator) - 1
        while True:
            index = window.find(separator)
            if index >= 0:
                chunk = window.take(index)
                if sink is not None and index:
                    sink.write(chunk)
                window.take(len(separator))
                return
            if len(window) > keep:
                chunk = window.take(len(window) - keep)
                if sink is not None:
                    sink.write(chunk)
            if not window.fill():
                raise bad_request("multipart body ended without its closing boundary")

    def need(count: int) -> None:
        while len(window) < count:
            if not window.fill():
                raise bad_request("multipart body ended early")

    skip_to_separator(None)  # preamble
    parts = 0
    while True:
        need(2)
        if window.buf[window.start:window.start + 2] == b"--":
            reader.drain(READ_SIZE)  # epilogue
            return parts
        while (end := window.find(b"\r\n\r\n")) < 0:
            if len(window) > MAX_HEADER_BYTES:
                raise bad_request("multipart part headers too large")
            if not window.fill():
                raise bad_request("multipart body ended inside part headers")
        header_block = bytes(window.take(end))
        window.take(4)
        first_line, _, rest = header_block.partition(b"\r\n")
        if first_line.strip():
            raise bad_request("multipart delimiter not followed by CRLF")
        headers = PartHeaders(BytesHeaderParser().parsebytes(rest + b"\r\n\r\n"))
        sink = open_sink(headers)
        skip_to_separator(sink)
        sink.close()
        parts += 1
