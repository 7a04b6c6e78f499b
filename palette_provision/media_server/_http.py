"""The little HTTP/1.1 the media server speaks: request heads, byte ranges, response heads. Pure functions.

Only what a BMC's virtual-media client and ``curl`` send is accepted: ``GET`` and ``HEAD`` (405 otherwise) with a
request head of at most :data:`MAX_HEAD` bytes and no body (a request announcing one is answered and its connection
closed, so no body can be taken for the next request). A hand-written parser rather than
:mod:`http.server`'s: the surface is small enough to check line by line, and a request costs ~10 us instead of
~100 us (``email.parser`` for the headers), which matters when a BMC reads a 1 GiB ISO in 64 KiB ranges.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from email.utils import formatdate

__all__ = [
    "MAX_HEAD",
    "UNSATISFIABLE",
    "BadRequest",
    "Request",
    "format_head",
    "http_date",
    "parse_head",
    "parse_range",
]

#: The largest request head accepted (request line and headers); a longer one is answered 431.
MAX_HEAD = 16 * 1024
_MAX_HEADERS = 64
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_VERSION = re.compile(r"HTTP/1\.[01]\Z")
_DIGITS = re.compile(r"[0-9]{1,19}\Z")  # 19 digits: any offset of any file, and no unbounded integer parsing

REASONS = {
    200: "OK",
    206: "Partial Content",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    416: "Range Not Satisfiable",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


class BadRequest(Exception):
    """A request head we refuse: answered with ``status`` and the connection closed."""

    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail
        super().__init__(f"{status} {detail}")


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed request head. Header names are lower-case; a repeated header's values are joined with ``, ``."""

    method: str
    path: str
    version: str
    headers: dict[str, str]
    keep_alive: bool
    has_body: bool


def parse_head(head: bytes) -> Request:
    """Parse a request head (everything before the blank line).

    The request target keeps its raw bytes (no percent-decoding, no dot-segment removal): the server matches it
    exactly against published paths, so ``/seed/../x`` or ``%2e%2e`` can only ever miss. A query string is dropped;
    an absolute-form target (``http://host/iso/x``, RFC 9112 3.2.2) is reduced to its path.

    Raises:
        BadRequest: a malformed line (400) or an HTTP version other than 1.0 and 1.1 (505).
    """
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest(400, "request head is not ASCII") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    if not _VERSION.match(version):
        raise BadRequest(505 if version.startswith("HTTP/") else 400, "only HTTP/1.0 and HTTP/1.1")
    if not _TOKEN.match(method):
        raise BadRequest(400, "malformed method")
    if len(lines) - 1 > _MAX_HEADERS:
        raise BadRequest(431, "too many header fields")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.match(name):  # also refuses obsolete line folding and "Name :" (RFC 9112 5.1)
            raise BadRequest(400, "malformed header field")
        key = name.lower()
        value = value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if "://" in target[:10]:
        scheme_end = target.index("://") + 3
        slash = target.find("/", scheme_end)
        target = target[slash:] if slash >= 0 else "/"
    path = target.split("?", 1)[0]
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens
    length = headers.get("content-length", "0").strip()
    has_body = "transfer-encoding" in headers or length not in ("", "0")
    return Request(method, path, version, headers, keep_alive, has_body)


class _Unsatisfiable:
    def __repr__(self) -> str:
        return "UNSATISFIABLE"


#: :func:`parse_range`'s answer for a range that cannot be served (answer 416).
UNSATISFIABLE = _Unsatisfiable()


def parse_range(value: str | None, size: int) -> tuple[int, int] | _Unsatisfiable | None:
    """The byte range a ``Range`` header asks of a ``size``-byte file: ``(first, last)`` inclusive, or
    :data:`UNSATISFIABLE` (answer 416), or ``None`` (serve the whole file, 200).

    ``None`` when there is no header, when it is not a valid ``bytes`` range set (RFC 9110 14.2: ignore it), and for
    a set of several ranges: multi-range requests are answered with the whole file, which RFC 9110 allows; no BMC we
    know of sends them, and a ``multipart/byteranges`` body cannot be sent with ``sendfile`` in one piece.

    >>> parse_range("bytes=0-99", 1000), parse_range("bytes=900-", 1000), parse_range("bytes=-100", 1000)
    ((0, 99), (900, 999), (900, 999))
    >>> parse_range("bytes=1000-", 1000), parse_range("bytes=0-1,5-6", 1000), parse_range("bytes=5-1", 1000)
    (UNSATISFIABLE, None, None)
    """
    if value is None:
        return None
    unit, sep, spec = value.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    specs = [s.strip() for s in spec.split(",") if s.strip()]
    if len(specs) != 1:
        return None
    first_text, dash, last_text = specs[0].partition("-")
    first_text, last_text = first_text.strip(), last_text.strip()
    if not dash or (first_text and not _DIGITS.match(first_text)) or (last_text and not _DIGITS.match(last_text)):
        return None
    if not first_text:  # suffix range: the last n bytes
        if not last_text:
            return None
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            return UNSATISFIABLE
        return (max(0, size - suffix), size - 1)
    first = int(first_text)
    if last_text:
        last = int(last_text)
        if last < first:
            return None  # invalid, not unsatisfiable: ignored
        if first >= size:
            return UNSATISFIABLE
        return (first, min(last, size - 1))
    if first >= size:
        return UNSATISFIABLE
    return (first, size - 1)


_date_cache: tuple[int, str] = (0, "")


def http_date(when: float | None = None) -> str:
    """An IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``); the current time's is cached for the second."""
    global _date_cache
    if when is not None:
        return formatdate(when, usegmt=True)
    now = int(time.time())
    cached = _date_cache
    if cached[0] != now:
        cached = (now, formatdate(now, usegmt=True))
        _date_cache = cached
    return cached[1]


def format_head(status: int, headers: list[tuple[str, str]], *, keep_alive: bool) -> bytes:
    """A response head: status line, ``Date``, ``Server``, the given headers, ``Connection``, blank line."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}", f"Date: {http_date()}", "Server: palette-media"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
