"""The readiness ladder: prove, rung by rung, that a freshly installed node is really up.

Rungs, climbed in order under one deadline per node::

    address      the provider's discovered address (falling back to the plan's static one)
    ssh_banner   the node sends ``SSH-2.0-...``: an open port proves nothing (port forwarders accept at once)
    host_key     the node's host key is the pinned one (seeded; or recorded on first use, then pinned)
    ssh_session  public-key login with paramiko (RejectPolicy, the pinned key only) and ``echo ok`` exits 0
    local_api    ``GET https://<address>:<port>/v1/ping`` answers (a 401 counts), certificate pinned on first use

Each rung records evidence (when it was reached, what was seen) in the journal and in the returned
:class:`ReadinessReport`. Polling goes through :func:`palette_provision.waiting.wait_for`: at most two polls a
second, backing off to about one a second (under 60 TCP connections a minute per node). Transient failures
(connection refused or reset, timeouts, banner timeout, paramiko's ``Authentication timeout.`` on a lossy link) are
retried; final ones stop the node at once:

* a different host key: :class:`~palette_provision.errors.HostKeyMismatch`;
* the key refused (``Authentication failed.``): :class:`SessionAuthenticationFailed`;
* a different Local API certificate: :class:`LocalApiCertificateMismatch`.

Running out of time raises :class:`~palette_provision.errors.ReadinessError` naming the last rung reached and the
last error seen. Secrets (the private key) never reach logs, errors or the journal.

Example::

    target = ReadinessTarget(
        node="node-1", address=lambda: provider.discover_address(machine, spec) or "10.0.0.11",
        username="kairos", private_key=plan.cluster.node_account.ssh_private_key,
        pinned_host_key=journal.fact("node-1", "host_key_public"), local_api_port=5080, deadline_s=1200,
    )
    report = climb(target, journal=journal)
    print([rung.name for rung in report.rungs])   # ['address', 'ssh_banner', 'host_key', 'ssh_session', 'local_api']
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import paramiko

from palette_provision.errors import (
    HostKeyMismatch,
    LocalApiCertificateMismatch,
    ReadinessError,
    SessionAuthenticationFailed,
    TransientError,
    WaitTimeout,
)
from palette_provision.journal import Journal
from palette_provision.log import get_logger
from palette_provision.secrets import Secret
from palette_provision.tls import normalize_fingerprint, pinned_context
from palette_provision.waiting import Backoff, wait_for

__all__ = [
    "FACT_HOST_KEY_FINGERPRINT",
    "FACT_HOST_KEY_PUBLIC",
    "FACT_LOCAL_API_CERT",
    "POLL_BACKOFF",
    "RUNGS",
    "LocalApiCertificateMismatch",
    "ReadinessReport",
    "ReadinessTarget",
    "Rung",
    "SessionAuthenticationFailed",
    "climb",
]

#: The rungs, in climbing order.
RUNGS = ("address", "ssh_banner", "host_key", "ssh_session", "local_api")
#: Journal facts read and written by the ladder (public values only).
FACT_HOST_KEY_PUBLIC = "host_key_public"
FACT_HOST_KEY_FINGERPRINT = "host_key_fingerprint"
FACT_LOCAL_API_CERT = "local_api_cert_sha256"

#: Polling cadence per node: 0.5 s then 1 s (+ up to 0.2 s jitter). Never more than two polls a second; about
#: 55 TCP connections a minute while a node is down; a node noticed within ~1.2 s of its sshd listening.
POLL_BACKOFF = Backoff(initial=0.5, maximum=1.0, jitter=0.2)

# Per-attempt caps; each is also bounded by the node's remaining time. Generous, because on a lossy link (30 %
# loss in the lab) TCP retransmissions stretch one handshake or key exchange over several seconds.
_CONNECT_TIMEOUT_S = 5.0
_SSH_TIMEOUT_S = 15.0
_HTTP_TIMEOUT_S = 10.0
_MAX_BANNER_BYTES = 8192  # RFC 4253 4.2: lines before the version line are allowed; bound them
_PROBE_COMMAND = "echo ok"

_log = get_logger(__name__)

T = TypeVar("T")


@dataclass(kw_only=True)
class ReadinessTarget:
    """One node to climb the ladder for.

    Attributes:
        node: the node's name (journal key, messages).
        address: returns the node's address, or ``None`` while unknown: provider discovery falling back to the
            plan's static address. May raise :class:`~palette_provision.errors.TransientError` (retried).
        username: the node account, used for the SSH session.
        private_key: the account's OpenSSH private key text (a :class:`Secret`); required when ``ssh``.
        pinned_host_key: the node's public host key line (``ssh-ed25519 AAAA... comment``), from the journal.
        trust_on_first_use: with no pinned key (argument or journal fact ``host_key_public``), record the first
            key seen, then pin it. Otherwise a missing pin is an error.
        local_api_port: climb the ``local_api`` rung on this port; ``None`` skips it.
        local_api_cert_sha256: a known certificate pin; else the journal fact ``local_api_cert_sha256``, else
            pinned on first contact.
        deadline_s: the whole ladder's deadline, in seconds.
        ssh_port: the SSH port.
        ssh: climb the SSH rungs (``readiness.ssh`` in the plan).

    >>> t = ReadinessTarget(node="n1", address=lambda: "10.0.0.11", username="kairos", deadline_s=60)
    >>> t.ssh_port, t.local_api_port
    (22, None)
    """

    node: str
    address: Callable[[], str | None]
    username: str
    private_key: Secret | None = None
    pinned_host_key: str | None = None
    trust_on_first_use: bool = False
    local_api_port: int | None = None
    local_api_cert_sha256: str | None = None
    deadline_s: float = 1200.0
    ssh_port: int = 22
    ssh: bool = True


@dataclass(frozen=True)
class Rung:
    """A rung reached: its name, when (wall clock, and seconds into the climb), after how many polls, and what
    was seen (``detail``: banner text, key fingerprint, command output, HTTP status...)."""

    name: str
    reached_at: float
    elapsed_s: float
    attempts: int
    detail: Mapping[str, Any]


@dataclass(frozen=True)
class ReadinessReport:
    """The outcome of a successful climb: every rung reached, in order, with its evidence.

    ``connections`` counts the TCP connections the ladder opened (refused ones included).
    """

    node: str
    address: str
    rungs: tuple[Rung, ...]
    elapsed_s: float
    connections: int

    def rung(self, name: str) -> Rung | None:
        """The rung called ``name``, or ``None`` if it was not climbed."""
        return next((r for r in self.rungs if r.name == name), None)


# ------------------------------------------------------------------------------------------- the climb


@dataclass
class _Climb:
    target: ReadinessTarget
    journal: Journal | None
    on_rung: Callable[[Rung], None] | None
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    start: float
    deadline: float
    log: Any
    rungs: list[Rung] = field(default_factory=list)
    connections: int = 0
    attempts: int = 0

    @property
    def last_rung(self) -> str:
        return self.rungs[-1].name if self.rungs else "none"

    def remaining(self, cap: float) -> float:
        """A per-attempt timeout: ``cap``, bounded by the time left (never below 0.5 s)."""
        return max(0.5, min(cap, self.deadline - self.clock()))

    def connect(self, address: str, port: int, timeout: float) -> socket.socket:
        self.connections += 1
        return _open_tcp(address, port, timeout)

    def connect_or_transient(self, address: str, port: int) -> socket.socket:
        try:
            return self.connect(address, port, self.remaining(_CONNECT_TIMEOUT_S))
        except OSError as exc:
            raise _transient("TCP connect", exc) from exc

    def reached(self, name: str, detail: dict[str, Any]) -> None:
        rung = Rung(name, time.time(), self.clock() - self.start, self.attempts, detail)
        self.rungs.append(rung)
        if self.journal is not None:
            self.journal.add_evidence(self.target.node, name, {**detail, "elapsed_s": round(rung.elapsed_s, 3)})
        self.log.info("readiness_rung_reached", rung=name, elapsed_s=round(rung.elapsed_s, 3), **detail)
        if self.on_rung is not None:
            self.on_rung(rung)

    def wait(self, probe: Callable[[], T], what: str) -> T:
        """Poll ``probe`` until it returns, retrying :class:`TransientError`, under the node's deadline."""
        self.attempts = 0

        def counted() -> T:
            self.attempts += 1
            try:
                return probe()
            except TransientError as exc:
                self.log.debug("readiness_retry", waiting_for=what, attempt=self.attempts, error=str(exc))
                raise

        try:
            return wait_for(
                counted,
                what=what,
                timeout=max(0.0, self.deadline - self.clock()),
                until=lambda _: True,
                retry_on=(TransientError,),
                backoff=POLL_BACKOFF,
                clock=self.clock,
                sleep=self.sleep,
            )
        except WaitTimeout as exc:
            last = exc.last_error
            last_text = f"{last}" if last is not None else None
            self.log.warning("readiness_timed_out", waiting_for=what, last_rung=self.last_rung, last_error=last_text)
            raise ReadinessError(
                self.target.node,
                self.last_rung,
                f"not ready after {exc.waited_s:.1f}s: still waiting for {what}"
                + (f"; last error: {last_text}" if last_text else ""),
                last_error=last_text,
            ) from exc


def climb(
    target: ReadinessTarget,
    *,
    journal: Journal | None = None,
    on_rung: Callable[[Rung], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ReadinessReport:
    """Climb ``target``'s readiness ladder and return the evidence of every rung.

    With a ``journal``: evidence goes to ``journal.add_evidence(node, rung, detail)``; the pinned host key is read
    from (and, on first use, written to) the fact ``host_key_public`` (and ``host_key_fingerprint``), the Local API
    certificate pin from/to ``local_api_cert_sha256``. ``on_rung`` is called as each rung is reached.

    Example::

        report = climb(target, journal=journal, on_rung=lambda r: print("reached", r.name))

    Raises:
        ReadinessError: the deadline passed; names the last rung reached and the last error (wraps the
            :class:`~palette_provision.errors.WaitTimeout`); or no host key is pinned and trust on first use is off.
        HostKeyMismatch: the node's host key is not the pinned one (at once, no retries).
        SessionAuthenticationFailed: the account's key was refused (at once, no retries).
        LocalApiCertificateMismatch: the Local API certificate is not the pinned one (at once, no retries).
        PaletteProvisionError: whatever non-transient error ``target.address()`` raised (e.g. a ProviderError).
    """
    start = clock()
    state = _Climb(
        target=target,
        journal=journal,
        on_rung=on_rung,
        clock=clock,
        sleep=sleep,
        start=start,
        deadline=start + target.deadline_s,
        log=_log.bind(node=target.node, phase="await_ready"),
    )
    address = _climb_address(state)
    if target.ssh:
        _climb_banner(state, address)
        host_key = _climb_host_key(state, address)
        _climb_session(state, address, host_key)
    if target.local_api_port is not None:
        _climb_local_api(state, address, target.local_api_port)
    return ReadinessReport(
        node=target.node,
        address=address,
        rungs=tuple(state.rungs),
        elapsed_s=clock() - start,
        connections=state.connections,
    )


# ------------------------------------------------------------------------------------------- rungs


def _open_tcp(address: str, port: int, timeout: float) -> socket.socket:
    """Open one TCP connection (the one place the ladder connects: benchmarks count here)."""
    return socket.create_connection((address, port), timeout=timeout)


def _transient(what: str, exc: BaseException) -> TransientError:
    # Type and message only: vendor messages here carry addresses and protocol text, never our secrets.
    return TransientError(f"{what}: {type(exc).__name__}: {exc}".rstrip(": "))


def _climb_address(state: _Climb) -> str:
    def probe() -> str:
        found = state.target.address()
        if not found:
            raise TransientError("no address known yet")
        return found

    address = state.wait(probe, f"an address for node {state.target.node}")
    state.reached("address", {"address": address})
    return address


def _read_banner(sock: socket.socket) -> str:
    data = b""
    while len(data) < _MAX_BANNER_BYTES:
        chunk = sock.recv(512)
        if not chunk:
            raise EOFError("connection closed before an SSH banner")
        data += chunk
        for line in data.split(b"\n")[:-1]:
            if line.startswith(b"SSH-"):
                return line.rstrip(b"\r").decode("ascii", "replace")
    raise EOFError("no SSH banner in the first 8 KiB")


def _climb_banner(state: _Climb, address: str) -> None:
    port = state.target.ssh_port

    def probe() -> str:
        try:
            with state.connect(address, port, state.remaining(_CONNECT_TIMEOUT_S)) as sock:
                sock.settimeout(state.remaining(_CONNECT_TIMEOUT_S))
                return _read_banner(sock)
        except (OSError, EOFError) as exc:
            raise _transient("SSH banner", exc) from exc

    banner = state.wait(probe, f"the SSH banner at {address}:{port}")
    if not banner.startswith(("SSH-2.0-", "SSH-1.99-")):
        raise ReadinessError(state.target.node, state.last_rung, f"not an SSH-2 server: {banner!r}", banner)
    state.reached("ssh_banner", {"banner": banner[:255], "port": port})


def _key_from_line(line: str) -> paramiko.PKey:
    parts = line.split()
    try:
        return paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1], validate=True))
    except (IndexError, binascii.Error, paramiko.SSHException, ValueError) as exc:
        raise ValueError("the pinned host key is not an OpenSSH public key line") from exc


def _key_types(key: paramiko.PKey) -> list[str]:
    # Ask the server for the pinned key's type only: a node holding several host keys would otherwise answer
    # with paramiko's favourite type (ed25519 first) and look like a mismatch against, say, a pinned RSA key.
    name = key.get_name()
    return ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] if name == "ssh-rsa" else [name]


def _fingerprint(key: paramiko.PKey) -> str:
    return "SHA256:" + base64.b64encode(_sha256(key.asbytes())).decode("ascii").rstrip("=")


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _pinned_line(state: _Climb) -> str | None:
    if state.target.pinned_host_key:
        return state.target.pinned_host_key
    if state.journal is not None:
        fact = state.journal.fact(state.target.node, FACT_HOST_KEY_PUBLIC)
        return str(fact) if fact else None
    return None


def _mismatch(state: _Climb, seen: paramiko.PKey, pinned: paramiko.PKey | None, why: str) -> HostKeyMismatch:
    want = _fingerprint(pinned) if pinned is not None else "?"
    message = f"host key mismatch: the node presented {seen.get_name()} {_fingerprint(seen)}, pinned is {want}"
    return HostKeyMismatch(state.target.node, state.last_rung, f"{message} ({why})", message)


def _climb_host_key(state: _Climb, address: str) -> paramiko.PKey:
    target = state.target
    line = _pinned_line(state)
    if line is None and not target.trust_on_first_use:
        raise ReadinessError(
            target.node,
            state.last_rung,
            "no pinned SSH host key (journal fact host_key_public) and trust on first use is off",
        )
    try:
        pinned = _key_from_line(line) if line else None
    except ValueError as exc:
        raise ReadinessError(target.node, state.last_rung, str(exc)) from None

    def probe() -> paramiko.PKey:
        sock = state.connect_or_transient(address, target.ssh_port)
        try:
            transport = paramiko.Transport(sock)
        except BaseException:
            sock.close()
            raise
        try:
            transport.banner_timeout = state.remaining(_SSH_TIMEOUT_S)
            if pinned is not None:
                transport.get_security_options().key_types = _key_types(pinned)
            transport.start_client(timeout=state.remaining(_SSH_TIMEOUT_S))
            return transport.get_remote_server_key()
        except paramiko.ssh_exception.IncompatiblePeer as exc:
            # The node offers no key of the pinned type: as final as a different key.
            raise HostKeyMismatch(
                target.node,
                state.last_rung,
                f"the node offers no {pinned.get_name() if pinned else ''} host key",
                f"{type(exc).__name__}: {exc}",
            ) from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise _transient("SSH key exchange", exc) from exc
        finally:
            transport.close()

    seen = state.wait(probe, f"the SSH host key of {address}:{target.ssh_port}")
    if pinned is None:
        # Trust on first use: this key is now the pin, for this climb and every later one.
        pinned = seen
        if state.journal is not None:
            state.journal.set_fact(target.node, FACT_HOST_KEY_PUBLIC, f"{seen.get_name()} {seen.get_base64()}")
            state.journal.set_fact(target.node, FACT_HOST_KEY_FINGERPRINT, _fingerprint(seen))
        how = "recorded on first use"
    elif seen.get_name() != pinned.get_name() or seen.asbytes() != pinned.asbytes():
        raise _mismatch(state, seen, pinned, "refusing to log in; not retried")
    else:
        how = "pinned"
    state.reached("host_key", {"type": seen.get_name(), "fingerprint": _fingerprint(seen), "trust": how})
    return pinned


def _load_private_key(state: _Climb) -> paramiko.PKey:
    secret = state.target.private_key
    if secret is None:
        raise ReadinessError(state.target.node, state.last_rung, "no SSH private key for the node account")
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            key: paramiko.PKey = cls.from_private_key(io.StringIO(secret.reveal()))
            return key
        except paramiko.PasswordRequiredException:
            raise ReadinessError(
                state.target.node,
                state.last_rung,
                "the account's SSH private key is encrypted; give an unencrypted key",
            ) from None
        except (paramiko.SSHException, ValueError):
            continue
    # Never the key text, nor paramiko's message (it may quote key material).
    raise ReadinessError(state.target.node, state.last_rung, "the account's SSH private key could not be loaded")


def _is_final_auth_failure(exc: paramiko.AuthenticationException) -> bool:
    # paramiko says "Authentication failed." when the server answered USERAUTH_FAILURE: the key is refused.
    # "Authentication timeout." and "... transport shut down or saw EOF" come from a lossy or dropped link (seen
    # at 30 % loss in the lab): retry those.
    return isinstance(exc, paramiko.BadAuthenticationType) or str(exc) == "Authentication failed."


def _climb_session(state: _Climb, address: str, host_key: paramiko.PKey) -> None:
    target = state.target
    pkey = _load_private_key(state)

    def probe() -> dict[str, Any]:
        client = paramiko.SSHClient()
        # The pinned key is the only one this client knows; anything else is rejected, never added.
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        name = address if target.ssh_port == 22 else f"[{address}]:{target.ssh_port}"
        client.get_host_keys().add(name, host_key.get_name(), host_key)
        try:
            sock = state.connect_or_transient(address, target.ssh_port)
            timeout = state.remaining(_SSH_TIMEOUT_S)
            client.connect(
                address,
                port=target.ssh_port,
                username=target.username,
                pkey=pkey,
                sock=sock,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
                look_for_keys=False,
                allow_agent=False,
            )
            _stdin, stdout, _stderr = client.exec_command(_PROBE_COMMAND, timeout=timeout)
            output = stdout.read(256).decode("utf-8", "replace").strip()
            if not stdout.channel.status_event.wait(timeout):
                raise TimeoutError("no exit status from the probe command")
            status = stdout.channel.exit_status
        except paramiko.BadHostKeyException as exc:
            raise _mismatch(state, exc.key, host_key, "seen at login; not retried") from None
        except paramiko.AuthenticationException as exc:
            if _is_final_auth_failure(exc):
                raise SessionAuthenticationFailed(
                    target.node,
                    state.last_rung,
                    f"the node refused the key of user {target.username!r} ({exc}); not retried",
                    f"{type(exc).__name__}: {exc}",
                ) from None
            raise _transient("SSH authentication", exc) from exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise _transient("SSH session", exc) from exc
        finally:
            client.close()
        if status != 0 or output != "ok":
            raise TransientError(f"probe command {_PROBE_COMMAND!r} exited {status} with output {output!r}")
        return {"user": target.username, "command": _PROBE_COMMAND, "exit_status": status, "output": output}

    detail = state.wait(probe, f"an SSH session as {target.username} on {address}:{target.ssh_port}")
    state.reached("ssh_session", detail)


def _climb_local_api(state: _Climb, address: str, port: int) -> None:
    target = state.target
    known: str | None = target.local_api_cert_sha256
    if known is None and state.journal is not None:
        fact = state.journal.fact(target.node, FACT_LOCAL_API_CERT)
        known = str(fact) if fact else None
    pin = normalize_fingerprint(known) if known else None
    host = f"[{address}]" if ":" in address else address
    url = f"https://{host}:{port}/v1/ping"

    def probe() -> tuple[int, str]:
        seen: list[str] = []

        def check(fingerprint: str) -> None:
            seen.append(fingerprint)
            if pin is not None and fingerprint != pin:
                raise LocalApiCertificateMismatch(
                    target.node,
                    state.last_rung,
                    f"Local API certificate is sha256:{fingerprint}, pinned is sha256:{pin}; not retried",
                    "certificate mismatch",
                )

        context = pinned_context(check, server=f"{target.node} Local API")
        try:
            with httpx.Client(verify=context, timeout=state.remaining(_HTTP_TIMEOUT_S)) as client:
                state.connections += 1
                response = client.get(url)
        except LocalApiCertificateMismatch:
            raise
        except httpx.HTTPError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, LocalApiCertificateMismatch):
                raise cause from None
            raise _transient("Local API", exc) from exc
        # Any answer of the API proves it is up, a 401 included (whether /v1/ping needs a token is not stated
        # by the spec); 5xx and other codes mean "starting" or "not the API yet".
        if not (200 <= response.status_code < 300 or response.status_code in (401, 403)):
            raise TransientError(f"Local API answered HTTP {response.status_code}")
        return response.status_code, seen[-1] if seen else ""

    status, fingerprint = state.wait(probe, f"the Local API at {url}")
    trust = "pinned"
    if pin is None:
        trust = "recorded on first use"
        if state.journal is not None and fingerprint:
            state.journal.set_fact(target.node, FACT_LOCAL_API_CERT, fingerprint)
    state.reached("local_api", {"url": url, "http_status": status, "cert_sha256": fingerprint, "trust": trust})
