"""Redfish BMCs, through sushy (OpenStack's Redfish library, Ironic's).

Why sushy and not pyghmi's Redfish client: pyghmi's ``attach_remote_media`` silently does nothing on BMCs that
report their slots as in use (sushy-tools' emulator does), and it caches the boot device for 30 s.

Sessions: basic authentication on every request (no Redfish session to leak; some BMCs, and the emulator, have no
SessionService at all), through one HTTP client per :class:`BmcGate` session, closed when it ends. sushy asks the
BMC to close each connection after its answer (``Connection: close``: BMCs were seen to choke on persistent ones),
so every request is a TCP and TLS handshake of its own: a session asks nothing twice, and what does not change
(where the system and its virtual-media slots are) is learnt once per driver, so later sessions skip the service
root and the slot collection. Proxies are never taken from the environment. TLS: verified against the system store
or ``ca_bundle``, or pinned to the certificate's SHA-256 in the handshake (self-signed BMC certificates), or, when
the plan says so, not at all.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import sys
import threading
from collections.abc import Iterator
from typing import Any

import requests
import sushy  # type: ignore[import-untyped]
from palette_provision.errors import AuthenticationError, ProviderError, TransientError
from palette_provision.log import RedactingFilter, get_logger
from palette_provision.provider import BootDevice, MediaSlot, PowerState, SlotKind
from palette_provision.secrets import Secret
from palette_provision.tls import pinned_context, verified_context
from palette_provision.waiting import Backoff, wait_for
from requests.adapters import HTTPAdapter
from sushy.auth import BasicAuth  # type: ignore[import-untyped]
from sushy.connector import Connector  # type: ignore[import-untyped]
from sushy.exceptions import (  # type: ignore[import-untyped]
    AccessError,
    BadRequestError,
    ServerSideError,
    SushyError,
)
from sushy.exceptions import (
    ConnectionError as SushyConnectionError,
)
from sushy.resources.manager.virtual_media import VirtualMedia  # type: ignore[import-untyped]
from sushy.resources.system.system import System  # type: ignore[import-untyped]
from urllib3.connection import HTTPConnection
from urllib3.exceptions import ReadTimeoutError

from palette_provision_baremetal._bmc import BmcSession, BmcTimedOut

__all__ = ["RedfishDriver", "RedfishSession"]

PROVIDER = "baremetal"

#: Redfish ``PowerState`` -> the core's. ``PoweringOn``/``PoweringOff`` are transitions, reported as such.
POWER_STATES: dict[Any, PowerState] = {
    sushy.POWER_STATE_ON: PowerState.ON,
    sushy.POWER_STATE_OFF: PowerState.OFF,
    sushy.POWER_STATE_POWERING_ON: PowerState.UNKNOWN,
    sushy.POWER_STATE_POWERING_OFF: PowerState.UNKNOWN,
}
#: The core's boot devices -> Redfish ``BootSourceOverrideTarget``.
BOOT_TARGETS: dict[BootDevice, Any] = {
    BootDevice.CD: sushy.BOOT_SOURCE_TARGET_CD,
    BootDevice.DISK: sushy.BOOT_SOURCE_TARGET_HDD,
    BootDevice.PXE: sushy.BOOT_SOURCE_TARGET_PXE,
}
#: Redfish ``MediaTypes`` -> the slot kind they make.
SLOT_KINDS: dict[str, SlotKind] = {
    "CD": SlotKind.CD,
    "DVD": SlotKind.CD,
    "Floppy": SlotKind.REMOVABLE_DISK,
    "USBStick": SlotKind.REMOVABLE_DISK,
}
_POWER_BACKOFF = Backoff(initial=0.5, maximum=3.0)


_QUIET = threading.local()
_log = get_logger(__name__)


class _DropExpectedRefusals(logging.Filter):
    """Drops sushy's warnings about a refusal this thread expects (and handles) while inside ``_expected_refusal``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_QUIET, "on", False)


for _name in ("sushy.connector", "sushy.exceptions"):
    logging.getLogger(_name).addFilter(_DropExpectedRefusals())
    # sushy logs each request's body at debug level: an InsertMedia body holds the seed's URL, whose token is the
    # seed's only protection. Scrubbed here, whatever logging the application set up.
    logging.getLogger(_name).addFilter(RedactingFilter())


@contextlib.contextmanager
def _expected_refusal() -> Iterator[None]:
    _QUIET.on = True
    try:
        yield
    finally:
        _QUIET.on = False


#: ``TCP_THIN_LINEAR_TIMEOUTS`` from ``linux/tcp.h`` (the socket module does not name it).
_TCP_THIN_LINEAR_TIMEOUTS = 16


def _socket_options() -> list[tuple[int, int, int]]:
    """urllib3's defaults, plus linear retransmission timeouts on Linux.

    A BMC conversation is a thin stream (a request, an answer, a few packets in flight). After a lost packet the
    kernel doubles the retransmission timeout each time, so on a lossy management network a few losses in a row
    stall a request for a minute (seen in the lab at 30 % loss). With this option (tcp(7)) Linux retransmits a
    thin stream at a steady interval for its first six timeouts, and the same losses cost seconds.
    """
    options: list[tuple[int, int, int]] = list(HTTPConnection.default_socket_options)
    if sys.platform == "linux":
        options.append((socket.IPPROTO_TCP, _TCP_THIN_LINEAR_TIMEOUTS, 1))
    return options


class _Unanswered(requests.exceptions.RequestException):
    """A request its BMC did not answer: a timeout (``timed_out``), a refused or reset connection."""

    def __init__(self, message: str, *, request: requests.PreparedRequest, timed_out: bool) -> None:
        super().__init__(message, request=request)
        self.timed_out = timed_out


class _BmcAdapter(HTTPAdapter):
    """requests with our socket options and, when given, our own TLS context (a pin checked in the handshake, or a
    CA bundle). A request the BMC does not answer raises :class:`_Unanswered`, tried once."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self._context = context
        super().__init__()

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        # sushy's connector (5.x) tries a request that timed out or lost its connection three times, sleeping 2 s
        # between tries in a way Ctrl-C cannot cut short, and whatever its server_side_retries say (0 means 3). So a
        # stalled request cost three request timeouts. It retries only requests' own connection and timeout errors:
        # raised as another RequestException, the failure reaches us at once, and the provider retries it (a new
        # session, logged, interruptible). TLS errors stay what they are: a wrong pin is not worth a retry. The body
        # is read here too: requests reads it after the adapter returns, where a timeout would reach sushy's loop.
        try:
            response = super().send(request, *args, **kwargs)
            if not kwargs.get("stream"):
                _ = response.content
            return response
        except requests.exceptions.SSLError:
            raise
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:  # fmt: skip
            # requests reports a timeout while reading the body as a ConnectionError around urllib3's.
            cause = exc.args[0] if exc.args else None
            timed_out = isinstance(exc, requests.exceptions.Timeout) or isinstance(cause, ReadTimeoutError)
            raise _Unanswered(str(exc), request=request, timed_out=timed_out) from exc

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        if self._context is not None:
            kwargs["ssl_context"] = self._context
        kwargs["socket_options"] = _socket_options()
        super().init_poolmanager(*args, **kwargs)


class RedfishSession:
    """An open connection to one BMC's system (see :class:`~._bmc.BmcSession`)."""

    def __init__(self, driver: RedfishDriver, connector: Any, system: Any) -> None:
        self._driver = driver
        self.connector = connector
        """The HTTP connection, closed by :meth:`RedfishDriver.close`."""
        self._system = system
        # Each request may cross a slow or lossy management network, so a session asks nothing twice: the system
        # just read when the session opened answers its first power read, and the virtual-media slots are listed
        # once (a slot's own state is read again after we change it).
        self._system_fresh = True
        self._slots: list[tuple[MediaSlot, Any]] | None = None

    def _call(self, what: str, action: Any, *, read: bool = False) -> Any:
        self._system_fresh = False
        return self._driver.call(what, action, read=read)

    def power_state(self) -> PowerState:
        if self._system_fresh:
            self._system_fresh = False  # read when the session opened, nothing asked since
        else:
            self._call("reading the power state", self._system.refresh, read=True)
        return POWER_STATES.get(self._system.power_state, PowerState.UNKNOWN)

    def set_power(self, on: bool) -> None:
        want = PowerState.ON if on else PowerState.OFF
        if self.power_state() is want:
            return  # already in that state: success, and no second command
        value = sushy.RESET_ON if on else sushy.RESET_FORCE_OFF
        self._call(f"powering {'on' if on else 'off'}", lambda: self._system.reset_system(value))
        # BMCs apply power changes asynchronously (the emulator after a delay, on a later read): poll.
        wait_for(
            self.power_state,
            what=f"{self._driver.node}'s BMC to report power {want.value}",
            until=lambda s: s is want,
            timeout=self._driver.power_timeout_s,
            backoff=_POWER_BACKOFF,
            log=_log.bind(node=self._driver.node, bmc=self._driver.key),  # a busy BMC's failed reads are seen
        )

    def set_boot_device(self, device: BootDevice, *, persistent: bool) -> None:
        enabled = sushy.BOOT_SOURCE_ENABLED_CONTINUOUS if persistent else sushy.BOOT_SOURCE_ENABLED_ONCE
        target = BOOT_TARGETS[device]
        self._call(
            f"setting the boot device to {device.value}",
            lambda: self._system.set_system_boot_options(target, enabled=enabled),
        )
        if persistent:
            return
        # Read back: some BMCs accept a one-time override and then drop it (answering 200, the next boot uses the
        # usual order: a server that never boots the installer). Then the override is made persistent; the core
        # sets the disk after the install, and destroy clears the override. A BMC reporting every override as
        # Continuous (sushy-tools' emulator) kept it: nothing to do.
        self._call("reading the boot override back", self._system.refresh, read=True)
        boot = self._system.boot
        if boot.target != target or boot.enabled == sushy.BOOT_SOURCE_ENABLED_DISABLED:
            _log.warning("bmc_one_time_boot_ignored", node=self._driver.node, bmc=self._driver.key,
                         device=device.value)  # fmt: skip
            self._call(
                f"setting the boot device to {device.value} persistently",
                lambda: self._system.set_system_boot_options(target, enabled=sushy.BOOT_SOURCE_ENABLED_CONTINUOUS),
            )

    def clear_boot_override(self) -> None:
        # Not every BMC lists "None" among its allowed targets (the emulator does not): then only the override's
        # enablement is turned off, which any BMC takes.
        allowed = self._call("reading the boot targets", self._system.get_allowed_system_boot_source_values,
                             read=True)
        target = sushy.BOOT_SOURCE_TARGET_NONE if sushy.BOOT_SOURCE_TARGET_NONE in allowed else None

        def clear() -> None:
            try:
                with _expected_refusal():
                    self._system.set_system_boot_options(target, enabled=sushy.BOOT_SOURCE_ENABLED_DISABLED)
            except BadRequestError:
                # Some BMCs (sushy-tools' emulator among them) refuse "Disabled": booting the disk every time is
                # the same result for a server whose OS is installed on it.
                self._system.set_system_boot_options(
                    sushy.BOOT_SOURCE_TARGET_HDD, enabled=sushy.BOOT_SOURCE_ENABLED_CONTINUOUS
                )

        self._call("clearing the boot override", clear)

    def _media(self) -> list[tuple[MediaSlot, Any]]:
        if self._slots is None:
            self._slots = self._list_media()
        for _, member in self._slots:
            self._call("reading the virtual media", lambda m=member: m.refresh(force=False), read=True)  # if changed
        return self._slots

    def _list_media(self) -> list[tuple[MediaSlot, Any]]:
        known = self._driver.media_paths
        if known is not None:  # the slots' paths, learnt by an earlier session: read each slot, not the collection
            read = "reading the virtual media"
            return [(slot, self._call(read, lambda p=path: VirtualMedia(self.connector, p), read=True))
                    for slot, path in known]  # fmt: skip
        collection = self._call("listing the virtual media", lambda: self._system.virtual_media, read=True)
        members = self._call("listing the virtual media", collection.get_members, read=True)
        slots: list[tuple[MediaSlot, Any]] = []
        counts: dict[SlotKind, int] = {}
        for member in sorted(members, key=lambda m: str(m.path)):
            # sushy gives MediaTypes as its VirtualMediaType enum, whose values are Redfish's words.
            words = {str(getattr(t, "value", t)) for t in (member.media_types or [])}
            kinds = {SLOT_KINDS[w] for w in words if w in SLOT_KINDS}
            if not kinds:
                continue
            kind = SlotKind.CD if SlotKind.CD in kinds else SlotKind.REMOVABLE_DISK
            slots.append((MediaSlot(kind, counts.get(kind, 0)), member))
            counts[kind] = counts.get(kind, 0) + 1
        self._driver.media_paths = [(slot, str(member.path)) for slot, member in slots]
        return slots

    def media_slots(self) -> list[MediaSlot]:
        return [slot for slot, _ in self._media()]

    def _member(self, slot: MediaSlot) -> Any:
        for known, member in self._media():
            if (known.kind, known.index) == (slot.kind, slot.index):
                return member
        raise ProviderError(
            f"{self._driver.node}'s BMC has no {slot} slot", provider=PROVIDER, resource=self._driver.key
        )

    def insert_media(self, slot: MediaSlot, url: str) -> None:
        member = self._member(slot)
        if member.inserted and member.image == url:
            return
        if member.inserted:
            self._call(f"ejecting {slot}", member.eject_media)
        self._call(f"inserting media in {slot}", lambda: member.insert_media(url, inserted=True, write_protected=True))
        self._call(f"reading {slot} back", member.refresh, read=True)  # forced: this is the verification
        # Read back: some BMCs accept the request and then fail to mount the image.
        if not (member.inserted and member.image == url):
            raise ProviderError(
                f"{self._driver.node}'s BMC accepted the media for {slot} but does not report it inserted",
                provider=PROVIDER,
                resource=self._driver.key,
            )

    def inserted_media(self) -> dict[MediaSlot, str]:
        return {slot: str(member.image) for slot, member in self._media() if member.inserted and member.image}

    def eject_media(self, slot: MediaSlot) -> None:
        member = self._member(slot)
        if member.inserted or member.image:
            self._call(f"ejecting {slot}", member.eject_media)
            member.invalidate()  # read again when next asked


class RedfishDriver:
    """One Redfish BMC (see :class:`~._bmc.BmcDriver`)."""

    def __init__(
        self,
        address: str,
        port: int,
        username: str,
        password: Secret,
        *,
        node: str,
        tls: str = "verify",
        ca_bundle: str | None = None,
        fingerprint: str | None = None,
        system_id: str | None = None,
        power_timeout_s: float = 120.0,
        request_timeout_s: float = 60.0,
    ) -> None:
        self.key = f"redfish:{address}:{port}"
        self.node = node
        self.power_timeout_s = power_timeout_s
        self.request_timeout_s = request_timeout_s
        self._url = f"https://{address}:{port}"
        self._where = f"node {node}: BMC {address}:{port}"
        self._username = username
        self._password = password
        self._tls, self._ca_bundle, self._fingerprint = tls, ca_bundle, fingerprint
        # Where the system is: from system_id, else learnt from the service root by the first session. Sessions
        # after that read the system directly, one request fewer each (on a slow or lossy management network, a
        # request costs seconds). Sessions to one BMC never overlap (BmcGate), so these need no lock.
        self._system_path: str | None = None
        if system_id:
            self._system_path = system_id if system_id.startswith("/") else f"/redfish/v1/Systems/{system_id}"
        self.media_paths: list[tuple[MediaSlot, str]] | None = None
        """The system's virtual-media slots and their paths, once a session has listed them."""

    def call(self, what: str, action: Any, *, read: bool = False) -> Any:
        """Run a sushy call, translating its errors into the project's (never with the BMC's answer as text).

        ``read``: the call changes nothing, so a 5xx answer is worth a retry (a BMC's Redfish service answers 500 or
        503 while busy after an operation; sushy retries nothing here: our connectors keep its default of no
        server-side retries, whose sleeps could not be interrupted, and :class:`_BmcAdapter` keeps it from retrying
        unanswered requests). A 503 ("try again later") is transient for any call: every command reads before it
        acts. Any other 5xx to a command is a failure.
        """
        try:
            return action()
        except ServerSideError as exc:
            status = exc.status_code
            if read or status == 503:
                raise TransientError(f"{self._where} answered HTTP {status} while {what}", provider=PROVIDER) from None
            raise ProviderError(f"{self._where}: {what} failed (HTTP {status})", provider=PROVIDER) from None
        except AccessError as exc:
            if getattr(exc, "status_code", None) == 401:
                raise AuthenticationError(f"{self._where} refused the login", provider=PROVIDER) from None
            raise ProviderError(f"{self._where} refused {what} (HTTP {exc.status_code})", provider=PROVIDER) from None
        except BadRequestError as exc:
            raise ProviderError(f"{self._where} rejected {what} (HTTP {exc.status_code})", provider=PROVIDER) from None
        except SushyConnectionError as exc:
            # sushy raises its ConnectionError while handling requests' error: that one is the context.
            if getattr(exc.__context__, "timed_out", False):
                raise BmcTimedOut(
                    f"{self._where} did not answer within {self.request_timeout_s:g} s while {what}", provider=PROVIDER
                ) from exc
            raise TransientError(f"{self._where} did not answer while {what}", provider=PROVIDER) from exc
        except SushyError as exc:
            raise ProviderError(f"{self._where}: {what} failed ({type(exc).__name__})", provider=PROVIDER) from None

    def _connector(self) -> Any:
        connector = Connector(
            self._url,
            verify=self._tls == "verify" and not self._fingerprint,
            default_request_timeout=self.request_timeout_s,  # connect and read, each request (sushy's default: 60)
        )
        http: requests.Session = connector._session
        http.trust_env = False  # proxies are never taken from the environment (docs/security.md)
        if self._fingerprint:
            http.mount("https://", _BmcAdapter(pinned_context(self._fingerprint, server=self._where)))
        elif self._ca_bundle:
            http.mount("https://", _BmcAdapter(verified_context(self._ca_bundle)))
        else:
            http.mount("https://", _BmcAdapter())
        return connector

    def open(self) -> RedfishSession:
        """Connect and read the system (its Id, or the only one, found through the service root once)."""
        connector = self._connector()

        def connect() -> Any:
            if self._system_path is not None:
                # sushy's root object only discovers paths and sets the credentials: neither is needed here.
                connector.set_http_basic_auth(self._username, self._password.reveal())
                return System(connector, self._system_path)
            root = sushy.Sushy(self._url, auth=BasicAuth(self._username, self._password.reveal()), connector=connector)
            members = root.get_system_collection().get_members()
            if len(members) != 1:
                raise ProviderError(
                    f"{self._where} manages {len(members)} systems: set bmc.system_id", provider=PROVIDER
                )
            self._system_path = str(members[0].path)
            return members[0]

        try:
            system = self.call("connecting", connect, read=True)  # GETs only (basic auth: no session)
        except BaseException:
            connector.close()
            raise
        return RedfishSession(self, connector, system)

    def close(self, session: BmcSession) -> None:
        """Close the HTTP connection (basic auth: no Redfish session to end)."""
        if isinstance(session, RedfishSession):
            with contextlib.suppress(Exception):  # a connection that is already gone
                session.connector.close()
