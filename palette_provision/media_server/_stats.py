"""Who fetched what, and how much: per entry and per client, in memory and (process mode) in ``stats.json``."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ClientStats", "EntryStats", "FetchStats", "read_stats"]

STATS_FILE = "stats.json"


@dataclass
class ClientStats:
    """One client's fetches of one entry. ``highest_offset``: the end of the furthest byte sent (install progress:
    a BMC reads an ISO roughly in order, with re-reads, so bytes sent can exceed the file's size)."""

    requests: int = 0
    bytes: int = 0
    highest_offset: int = 0
    first_at: float = 0.0
    last_at: float = 0.0


@dataclass
class EntryStats:
    """Fetches of one entry (by key, never by token): totals and per client address."""

    key: str
    size: int = 0
    requests: int = 0
    bytes: int = 0
    clients: dict[str, ClientStats] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EntryStats:
        """Read back :func:`dataclasses.asdict`'s form."""
        clients = {ip: ClientStats(**c) for ip, c in data.get("clients", {}).items()}
        return cls(key=data["key"], size=data["size"], requests=data["requests"], bytes=data["bytes"], clients=clients)


class FetchStats:
    """The server's counters; thread-safe; :meth:`snapshot` returns copies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, EntryStats] = {}
        self.changed = False

    def request(self, key: str, client: str, size: int) -> None:
        """Count a request for ``key`` from ``client``."""
        now = time.time()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = EntryStats(key)
            entry.size = size
            entry.requests += 1
            seen = entry.clients.get(client)
            if seen is None:
                seen = entry.clients[client] = ClientStats(first_at=now)
            seen.requests += 1
            seen.last_at = now
            self.changed = True

    def sent(self, key: str, client: str, nbytes: int, end: int) -> None:
        """Count ``nbytes`` sent of ``key`` to ``client``, up to offset ``end``."""
        with self._lock:
            entry = self._entries[key]
            entry.bytes += nbytes
            seen = entry.clients[client]
            seen.bytes += nbytes
            seen.highest_offset = max(seen.highest_offset, end)
            seen.last_at = time.time()
            self.changed = True

    def snapshot(self) -> dict[str, EntryStats]:
        """A copy of every entry's counters."""
        with self._lock:
            return {k: EntryStats.from_json(asdict(v)) for k, v in self._entries.items()}

    def to_json(self) -> dict[str, Any]:
        """The ``stats.json`` document."""
        with self._lock:
            self.changed = False
            return {"updated_at": time.time(), "entries": [asdict(v) for v in self._entries.values()]}


def read_stats(state_dir: Path) -> dict[str, EntryStats]:
    """The fetch counters a ``media serve`` process for ``state_dir`` last wrote (at most a second old while it
    serves); empty when it has written none."""
    try:
        data = json.loads((Path(state_dir) / STATS_FILE).read_text())
    except FileNotFoundError:
        return {}
    return {e["key"]: EntryStats.from_json(e) for e in data.get("entries", [])}
