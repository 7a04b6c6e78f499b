"""Form bodies as MAAS takes them: ``application/x-www-form-urlencoded`` or ``multipart/form-data``.

Values are multi-valued (``tags=a&tags=b``), as in Django's ``QueryDict``; :meth:`Form.get` returns the last value
like ``QueryDict.get``. Multipart parts with a file name (or named ``content``) are streamed to a temporary file with
the shared streaming parser of the Local API simulator.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from urllib.parse import parse_qsl

from palette_provision.testing.localapi.body import BodyReader
from palette_provision.testing.localapi.multipart import FileSink, MemorySink, PartHeaders, Sink, parse_multipart

from .errors import bad_request

__all__ = ["Form", "parse_form"]

URLENCODED_LIMIT = 16 << 20
FIELD_LIMIT = 16 << 20
_counter = itertools.count()


@dataclass
class Form:
    """Parsed form fields (text) and file parts (on disk)."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, FileSink] = field(default_factory=dict)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The last value of ``name`` (``default`` when absent)."""
        values = self.fields.get(name)
        return values[-1] if values else default

    def get_list(self, name: str) -> list[str]:
        """Every value of ``name``."""
        return list(self.fields.get(name, []))

    def get_bool(self, name: str, default: bool = False) -> bool:
        """A boolean field as MAAS's ``StringBool`` reads it; 400 on anything else."""
        value = self.get(name)
        if value is None or value == "":
            return default
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise bad_request(f"Invalid value for {name}: {value[:40]!r} is not a boolean.")

    def discard(self) -> None:
        """Delete the temporary files of file parts."""
        for sink in self.files.values():
            sink.discard()
        self.files.clear()


def parse_form(content_type: str | None, body: BodyReader, tmp_dir: Path) -> Form:
    """Parse a request body into a :class:`Form` (an empty form for other content types)."""
    message = Message()
    message["content-type"] = content_type or "application/octet-stream"
    kind = message.get_content_type()
    form = Form()
    if kind == "application/x-www-form-urlencoded":
        raw = body.read_all(URLENCODED_LIMIT)
        try:
            pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError as exc:
            raise bad_request("form body is not UTF-8") from exc
        for name, value in pairs:
            form.fields.setdefault(name, []).append(value)
        return form
    if kind != "multipart/form-data":
        return form
    boundary = message.get_param("boundary")
    if not isinstance(boundary, str) or not boundary or len(boundary) > 200:
        raise bad_request("multipart/form-data without a valid boundary")
    memory: list[MemorySink] = []

    def open_sink(headers: PartHeaders) -> Sink:
        if not headers.name:
            raise bad_request("multipart part without a name")
        if headers.filename is not None or headers.name == "content":
            tmp_dir.mkdir(parents=True, exist_ok=True)
            path = tmp_dir / f"part-{os.getpid()}-{next(_counter)}"
            sink = FileSink(path)
            previous = form.files.pop(headers.name, None)
            if previous is not None:
                previous.discard()
            form.files[headers.name] = sink
            return sink
        field_sink = MemorySink(headers.name, FIELD_LIMIT)
        memory.append(field_sink)
        return field_sink

    try:
        parse_multipart(body, boundary.encode("latin-1"), open_sink)
    except BaseException:
        form.discard()
        raise
    for sink in memory:
        try:
            form.fields.setdefault(sink.name, []).append(bytes(sink.data).decode("utf-8"))
        except UnicodeDecodeError:
            with contextlib.suppress(Exception):
                form.discard()
            raise bad_request(f"form field {sink.name!r} is not UTF-8") from None
    return form
