"""What the provider asks of a BMC, and the discipline every BMC is driven with.

A :class:`BmcDriver` is one protocol's way to one BMC (:mod:`._redfish`, :mod:`._ipmi`). Drivers are used only
through :class:`BmcGate`, which holds, per BMC address:

* **one session at a time, always closed**: a driver opens its session (an IPMI session, a Redfish connection) in
  :meth:`BmcDriver.open` and :meth:`BmcDriver.close` ends it, in a ``finally``; real BMCs have a handful of session
  slots and lock out when they leak;
* **a minimum interval between commands** (``min_interval_s``): some BMCs drop or mis-order commands that follow each
  other too closely.

Power states and boot devices cross this boundary in the core's words (:class:`PowerState`, :class:`BootDevice`);
each driver maps its protocol's words through explicit tables.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar

from palette_provision.errors import TransientError
from palette_provision.provider import BootDevice, MediaSlot, PowerState
from palette_provision.waiting import interruptible_sleep

__all__ = ["BmcDriver", "BmcGate", "BmcSession", "BmcTimedOut"]

T = TypeVar("T")


class BmcTimedOut(TransientError):
    """The BMC took the connection but did not answer in time: a hung service, or a request stalled on a lossy link,
    where the next try usually goes through. (A refused connection is a plain :class:`TransientError`: nothing
    listens there now.)"""


class BmcSession(Protocol):
    """An open session to one BMC: the commands the provider needs."""

    def power_state(self) -> PowerState:
        """The machine's power state, in the core's words."""
        ...

    def set_power(self, on: bool) -> None:
        """Power on or (hard) off; already in that state is success. Returns once the BMC accepted the change."""
        ...

    def set_boot_device(self, device: BootDevice, *, persistent: bool) -> None:
        """The next boot's device (``persistent``: every boot's)."""
        ...

    def clear_boot_override(self) -> None:
        """Back to the machine's own boot order."""
        ...

    def media_slots(self) -> list[MediaSlot]:
        """The virtual-media slots the BMC offers (none over IPMI)."""
        ...

    def insert_media(self, slot: MediaSlot, url: str) -> None:
        """Insert the image at ``url`` in ``slot`` (replacing what is there)."""
        ...

    def inserted_media(self) -> dict[MediaSlot, str]:
        """What each slot holds now, by URL (empty slots left out)."""
        ...

    def eject_media(self, slot: MediaSlot) -> None:
        """Empty ``slot``; an empty slot is success."""
        ...


class BmcDriver(Protocol):
    """How to open a session to one BMC."""

    key: str
    """The BMC's identity for the gate: its address and port."""

    def open(self) -> BmcSession:
        """Log in (credentials refused: :class:`~palette_provision.errors.AuthenticationError`)."""
        ...

    def close(self, session: BmcSession) -> None:
        """Log out; never raises for a session that is already gone."""
        ...


class BmcGate:
    """Serialises and paces every BMC's sessions (see the module docstring); one per provider."""

    def __init__(self, min_interval_s: float) -> None:
        self._min_interval_s = min_interval_s
        self._locks: dict[str, threading.Lock] = {}
        self._last: dict[str, float] = {}
        self._guard = threading.Lock()
        self.opened = 0
        """Sessions opened so far (tests compare it with the sessions closed)."""
        self.closed = 0

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    @contextmanager
    def session(self, driver: BmcDriver) -> Iterator[BmcSession]:
        """An open session to ``driver``'s BMC, the only one, closed when the block ends (raised or not)."""
        with self._lock(driver.key):
            wait = self._last.get(driver.key, 0.0) + self._min_interval_s - time.monotonic()
            if wait > 0:
                interruptible_sleep(wait)
            session = driver.open()
            self.opened += 1
            try:
                yield session
            finally:
                try:
                    driver.close(session)
                finally:
                    self.closed += 1
                    self._last[driver.key] = time.monotonic()

    def run(self, driver: BmcDriver, command: Callable[[BmcSession], T]) -> T:
        """Run ``command`` in a session of its own (see :meth:`session`)."""
        with self.session(driver) as session:
            return command(session)
