"""The IPMI driver: one BMC over IPMI 2.0 (RMCP+), through pyghmi.

:class:`IpmiDriver` logs in (:meth:`IpmiDriver.open`, one pyghmi ``Command`` and so one IPMI session) and out
(:meth:`IpmiDriver.close`); :class:`IpmiSession` is what the provider does in between: read and set the power, set
or clear the boot device override. IPMI has no virtual media: an operator attaches the ISO and the seed (see
docs/providers/baremetal.md). Like every driver it is used only through :class:`~._bmc.BmcGate`.

Words cross the boundary through the tables below (:data:`POWER_STATES`, :data:`BOOT_DEVICES`,
:data:`CLEAR_BOOT_OVERRIDE`); pyghmi's errors become the project's here, naming the node and the BMC, never a
password and never a BMC's answer beyond pyghmi's short error text.

pyghmi 1.6.19 quirks this module works around (see each place):

* a class-level login cache, ``Session.initting_sessions``, keyed by the *str* credentials but cleared with the
  *bytes* ones, so its entries are never removed: the next login to the same BMC with the same credentials in this
  process gets the old session object back, dead (its first command fails with a ``TypeError``, or a repeated wrong
  password raises nothing at all). :meth:`IpmiDriver.open` drops the entry after every login, succeeded or not;
* a session left open is never closed by pyghmi, not even when the process exits: :meth:`IpmiDriver.close` logs
  out explicitly (the gate calls it in a ``finally``);
* ``set_power(..., wait=True)`` polls inside pyghmi (see :meth:`IpmiSession.set_power` for why it is not used).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any, Final

from palette_provision.errors import (
    AuthenticationError,
    PaletteProvisionError,
    ProviderError,
    TransientError,
    describe_state,
)
from palette_provision.log import get_logger
from palette_provision.provider import BootDevice, MediaSlot, PowerState
from palette_provision.secrets import Secret
from palette_provision.waiting import Backoff, wait_for
from pyghmi.exceptions import IpmiException, PyghmiException  # type: ignore[import-untyped]
from pyghmi.ipmi.command import Command  # type: ignore[import-untyped]
from pyghmi.ipmi.private.session import Session  # type: ignore[import-untyped]

from palette_provision_baremetal._bmc import BmcSession

__all__ = [
    "BOOT_DEVICES",
    "CLEAR_BOOT_OVERRIDE",
    "DEFAULT_POWER_TIMEOUT_S",
    "IPMI_PORT",
    "POWER_STATES",
    "POWER_WORDS",
    "IpmiDriver",
    "IpmiSession",
]

_PROVIDER = "baremetal"
IPMI_PORT: Final = 623
DEFAULT_POWER_TIMEOUT_S: Final = 30.0
"""How long :meth:`IpmiSession.set_power` waits for the machine to read back in the asked state."""
_POWER_BACKOFF: Final = Backoff(initial=0.5, maximum=3.0, jitter=0.2)

POWER_STATES: Final[dict[str, PowerState]] = {
    "on": PowerState.ON,
    "off": PowerState.OFF,
}
"""pyghmi's power words (``Command.get_power()["powerstate"]``) -> the core's. pyghmi's generic code only ever says
``on`` or ``off`` (bit 0 of Get Chassis Status); any other word (an OEM extension's) reads as
:attr:`PowerState.UNKNOWN` rather than an error: a power read is also a status display, and ``set_power`` treats
UNKNOWN as "not there yet", so an unexpected word can still only end in a clear :class:`WaitTimeout`."""

POWER_WORDS: Final[dict[bool, str]] = {True: "on", False: "off"}
"""``set_power(on)`` -> pyghmi's ``set_power`` word. ``off`` is a hard power-down (Chassis Control 0), not the ACPI
``shutdown``: an enrolled machine is powered off to boot something else, never to keep its running system."""

BOOT_DEVICES: Final[dict[BootDevice, str]] = {
    BootDevice.CD: "cdrom",
    BootDevice.DISK: "hd",
    BootDevice.PXE: "network",
}
"""The core's boot devices -> pyghmi's ``set_bootdev`` names (Boot Flags device selectors 0x14, 0x08, 0x04).
(OpenIPMI's ipmi_sim hands them to its chassis program as ``cdrom``, ``default`` and ``pxe``.)"""

CLEAR_BOOT_OVERRIDE: Final = "default"
"""pyghmi's name for "no override" (Boot Flags not valid: the machine's own boot order); ipmi_sim says ``none``."""

# pyghmi's login failures, by the start of the text it raises them with. Credentials refused -> AuthenticationError
# (with our own words for the reason, never pyghmi's text).
_REFUSALS: Final[dict[str, str]] = {
    "Incorrect password provided": "wrong password",  # RAKP 2 integrity check failed
    "Unauthorized name": "unknown user name",  # RMCP+ status 0x0d in RAKP 2
    "Invalid user name": "unknown user name",  # IPMI 1.5 Get Session Challenge
    "Null user disabled": "empty user name not allowed",
    "Invalid RAKP4 integrity code": "wrong BMC key (Kg)",
    "Invalid role": "privilege refused",
    "Unauthorized role or privilege level requested": "privilege refused",
    "User is not allowed requested privilege level": "the user lacks the privilege to control the machine",
    "Requested privilege level exceeds requested user permissions": "the user lacks the privilege",
}
# A busy BMC, or one that did not answer: worth a retry -> TransientError. pyghmi raises a login that got no answer
# as IpmiException(None) (~5 s here), a command that got none as "Session no longer connected" or "timeout".
_TRANSIENT: Final[tuple[str, ...]] = (
    "Insufficient resources to create",  # no free session slot
    "No available login slots",
    "No slot available",
    "Node Busy",  # completion code 0xc0
    "Timeout while processing command",  # 0xc3
    "Command response could not be provided",  # 0xce
    "BMC initialization in progress",  # 0xd2
    "Device in firmware update mode",  # 0xd1
    "Session no longer connected",
    "Session failed to initialize",
    "timeout",
    "Timeout",
    "None",
)
# Completion code 0xFF ("Unspecified") on a *read*: BMC firmware answers it when something behind it was busy or
# failed for a moment (the lab's ipmi_sim does when its chassis program is cut short). A read changes nothing, so it
# is retried like a busy BMC (bounded: the provider's bmc_retry_s, the core's timeouts.unreachable). On a command
# (power, boot device) it stays a refusal: the BMC said it could not do it.
_TRANSIENT_READS: Final[tuple[str, ...]] = ("Unspecified",)

_log = get_logger(__name__)

# One login at a time per BMC in this process: pyghmi hands a login in progress (its initting_sessions entry) to
# any other Command for the same BMC and credentials, and two of our sessions must never share one IPMI session
# (closing one would close the other). Held only around Command() and the removal of that entry.
_login_locks: dict[tuple[str, int], threading.Lock] = {}
_login_locks_guard = threading.Lock()


def _login_lock(address: str, port: int) -> threading.Lock:
    with _login_locks_guard:
        return _login_locks.setdefault((address, port), threading.Lock())


def _forget_cached_session(address: str, username: str, password: Secret, port: int) -> None:
    """Drop pyghmi's cache entry for this login (its key holds the clear password; see the module docstring)."""
    Session.initting_sessions.pop((address, username, password.reveal(), port, None), None)


class IpmiDriver:
    """How to open IPMI sessions to one BMC (a :class:`~._bmc.BmcDriver`).

    ``node`` names the node in every error; ``timeout_s`` bounds the wait for a power change to read back (pyghmi
    bounds each login and command itself: a BMC that does not answer fails a login after ~5 s).
    """

    def __init__(
        self,
        address: str,
        port: int,
        username: str,
        password: Secret,
        *,
        node: str,
        timeout_s: float = DEFAULT_POWER_TIMEOUT_S,
    ) -> None:
        self.address = address
        self.port = port
        self.username = username
        self._password = password
        self.node = node
        self.timeout_s = timeout_s
        self.key = f"ipmi:{address}:{port}"
        self.bmc = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        """The BMC as messages show it."""

    def __repr__(self) -> str:
        return f"IpmiDriver({self.bmc}, user={self.username!r}, node={self.node!r})"

    def open(self) -> IpmiSession:
        """Log in (one IPMI session).

        Raises:
            AuthenticationError: the BMC refused the user name or password.
            TransientError: the BMC did not answer, or has no free session slot.
            ProviderError: any other failure.
        """
        with _login_lock(self.address, self.port):
            try:
                command = Command(bmc=self.address, userid=self.username, password=self._password.reveal(),
                                  port=self.port)  # fmt: skip
            except IpmiException as exc:
                raise self._login_error(exc) from None
            except socket.gaierror:
                raise ProviderError(
                    f"node {self.node}: cannot resolve the BMC address {self.bmc}", provider=_PROVIDER,
                    resource=self.node,
                ) from None  # fmt: skip
            except OSError as exc:
                raise TransientError(
                    f"node {self.node}: cannot reach BMC {self.bmc} ({type(exc).__name__})", provider=_PROVIDER,
                    resource=self.node,
                ) from None  # fmt: skip
            finally:
                # Succeeded or not: a cached entry would be handed, dead, to the next open (see the module docstring).
                _forget_cached_session(self.address, self.username, self._password, self.port)
        return IpmiSession(self, command)

    def close(self, session: BmcSession) -> None:
        """Log out; never raises for a session that is already gone (or closed before)."""
        if not isinstance(session, IpmiSession):
            raise TypeError(f"not a session of an IpmiDriver: {type(session).__name__}")
        session._close()

    # ---------------------------------------------------------------------------------------------- errors

    def _login_error(self, exc: IpmiException) -> PaletteProvisionError:
        # `from None` at the raise: pyghmi's exception and its traceback stay out of our error (and of logs).
        text = str(exc)
        for start, reason in _REFUSALS.items():
            if text.startswith(start):
                return AuthenticationError(
                    f"node {self.node}: BMC {self.bmc} refused the login (user {self.username!r}: {reason})",
                    provider=_PROVIDER,
                )
        if text.startswith(_TRANSIENT):
            what = "did not answer" if text in ("None", "timeout", "Timeout") else "is busy"
            return TransientError(
                f"node {self.node}: BMC {self.bmc} {what} at login ({self._shown(text)})", provider=_PROVIDER,
                resource=self.node,
            )  # fmt: skip
        return ProviderError(
            f"node {self.node}: login to BMC {self.bmc} failed: {self._shown(text)}", provider=_PROVIDER,
            resource=self.node,
        )  # fmt: skip

    def _shown(self, text: str) -> str:
        """pyghmi's error text as a message may show it: short, printable, and never holding the password."""
        password = self._password.reveal()
        if password:
            text = text.replace(password, "***")
        return describe_state(text) if text != "None" else "no reply"

    @contextlib.contextmanager
    def _translate(self, doing: str, *, read: bool = False) -> Iterator[None]:
        """Turn what pyghmi raises inside the block into our errors, saying what failed (``doing``; ``read``: it
        changes nothing, so more answers count as transient)."""
        try:
            yield
        except PaletteProvisionError:
            raise
        except IpmiException as exc:
            text = str(exc)
            transient = text.startswith(_TRANSIENT) or (read and text.startswith(_TRANSIENT_READS))
            cls = TransientError if transient else ProviderError
            raise cls(
                f"node {self.node}: {doing} through BMC {self.bmc} failed: {self._shown(text)}", provider=_PROVIDER,
                resource=self.node,
            ) from None  # fmt: skip
        except (PyghmiException, AssertionError, TypeError, KeyError, IndexError, ValueError) as exc:
            # pyghmi asserts on the shape of some answers and indexes into them: an answer it could not read. Its
            # text may quote the answer, so only the type is shown.
            raise ProviderError(
                f"node {self.node}: {doing} through BMC {self.bmc} failed: pyghmi could not use the BMC's answer "
                f"({type(exc).__name__})", provider=_PROVIDER, resource=self.node,
            ) from None  # fmt: skip
        except OSError as exc:
            raise TransientError(
                f"node {self.node}: {doing} through BMC {self.bmc} failed ({type(exc).__name__})", provider=_PROVIDER,
                resource=self.node,
            ) from None  # fmt: skip


class IpmiSession:
    """One open IPMI session (a :class:`~._bmc.BmcSession`); made by :meth:`IpmiDriver.open`."""

    def __init__(self, driver: IpmiDriver, command: Any) -> None:
        self._driver = driver
        self._command = command  # pyghmi.ipmi.command.Command
        self._closed = False

    def __repr__(self) -> str:
        return f"IpmiSession({self._driver.bmc}, node={self._driver.node!r}{', closed' if self._closed else ''})"

    def _cmd(self) -> Any:
        if self._closed:
            raise ProviderError(
                f"node {self._driver.node}: the IPMI session to BMC {self._driver.bmc} is closed", provider=_PROVIDER,
                resource=self._driver.node,
            )  # fmt: skip
        return self._command

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        ipmi_session = self._command.ipmi_session
        # logout() sends Close Session without waiting for the answer (retry=False) and skips it for a session that
        # is no longer logged in; it still touches pyghmi's bookkeeping, which can raise for a session that broke
        # half-way (its socket gone): the session is gone either way, and close must not hide the block's error.
        with contextlib.suppress(Exception):
            ipmi_session.logout()
        d = self._driver
        _forget_cached_session(d.address, d.username, d._password, d.port)

    # ---------------------------------------------------------------------------------------------- power

    def power_state(self) -> PowerState:
        """The machine's power state (:data:`POWER_STATES`; a word pyghmi should not say reads as UNKNOWN)."""
        cmd = self._cmd()
        with self._driver._translate("reading the power state", read=True):
            answer = cmd.get_power()
        word = answer.get("powerstate") if isinstance(answer, dict) else None
        return POWER_STATES.get(word, PowerState.UNKNOWN) if isinstance(word, str) else PowerState.UNKNOWN

    def set_power(self, on: bool) -> None:
        """Power on or hard off; already in that state is success (nothing is sent). Returns once the machine
        reads back in that state.

        The wait is :func:`~palette_provision.waiting.wait_for`, not pyghmi's ``wait=``: pyghmi's loop counts
        attempts rather than seconds, cannot be interrupted (Ctrl-C of a run, :func:`stop_on`), and ends in an
        ``IpmiException`` that says neither what nor how long; ours has a deadline (``timeout_s``), retries a
        transient failure of one read, and ends in a :class:`~palette_provision.errors.WaitTimeout` with the last
        state seen.

        Raises:
            WaitTimeout: the BMC accepted the change but the machine did not read back in time.
            TransientError, ProviderError: a command failed.
        """
        target = PowerState.ON if on else PowerState.OFF
        if self.power_state() is target:
            return
        word = POWER_WORDS[on]
        cmd = self._cmd()
        with self._driver._translate(f"power {word}"):
            # pyghmi reads the power once more and sends nothing if it already changed; wait=False: see above.
            cmd.set_power(word, wait=False)
        wait_for(
            self.power_state,
            what=f"node {self._driver.node} to power {word} (BMC {self._driver.bmc})",
            timeout=self._driver.timeout_s,
            until=lambda state: state is target,
            backoff=_POWER_BACKOFF,
            log=_log.bind(node=self._driver.node, bmc=self._driver.bmc),  # a busy BMC's failed reads are seen
        )

    # ---------------------------------------------------------------------------------------------- boot device

    def set_boot_device(self, device: BootDevice, *, persistent: bool) -> None:
        """Set the next boot's device (``persistent``: every boot's) through :data:`BOOT_DEVICES`."""
        self._set_bootdev(BOOT_DEVICES[device], persistent, f"setting the boot device to {device.value}")

    def clear_boot_override(self) -> None:
        """Remove the boot device override (:data:`CLEAR_BOOT_OVERRIDE`): the machine's own boot order again."""
        self._set_bootdev(CLEAR_BOOT_OVERRIDE, False, "clearing the boot device override")

    def _set_bootdev(self, name: str, persistent: bool, doing: str) -> None:
        cmd = self._cmd()
        with self._driver._translate(doing):
            answer = cmd.set_bootdev(name, persist=persistent)
        # pyghmi returns (does not raise) {'error': ...} for a name it does not know: our tables only hold its names.
        if isinstance(answer, dict) and "error" in answer:
            raise ProviderError(
                f"node {self._driver.node}: {doing} through BMC {self._driver.bmc} failed: pyghmi does not know the "
                f"boot device {name!r}", provider=_PROVIDER, resource=self._driver.node,
            )  # fmt: skip

    # ---------------------------------------------------------------------------------------------- media

    def media_slots(self) -> list[MediaSlot]:
        """None: IPMI has no virtual media."""
        return []

    def inserted_media(self) -> dict[MediaSlot, str]:
        """Nothing: IPMI has no virtual media (what an operator inserted by hand cannot be read over IPMI)."""
        return {}

    def insert_media(self, slot: MediaSlot, url: str) -> None:
        """Always refused: IPMI has no virtual media."""
        raise self._no_media(f"cannot insert media in {slot}")

    def eject_media(self, slot: MediaSlot) -> None:
        """Always refused: IPMI has no virtual media."""
        raise self._no_media(f"cannot eject {slot}")

    def _no_media(self, doing: str) -> ProviderError:
        return ProviderError(
            f"node {self._driver.node}: {doing}: IPMI has no virtual media (BMC {self._driver.bmc}); an IPMI node "
            f"boots media inserted by hand (media: preinserted)", provider=_PROVIDER, resource=self._driver.node,
        )  # fmt: skip
