"""Timestamp formatting shared by the response builders."""

from __future__ import annotations

import datetime


def iso(timestamp: float) -> str:
    """Return an RFC 3339 UTC timestamp (``2024-01-02T03:04:05.678Z``) for a Unix time."""
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
