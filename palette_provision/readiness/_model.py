"""The ladder's vocabulary: the target, the rungs, the report, and the polling cadence."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from palette_provision.journal import Fact
from palette_provision.log import get_logger
from palette_provision.secrets import Secret
from palette_provision.waiting import Backoff

#: The rungs, in climbing order.
RUNGS = ("address", "ssh_banner", "host_key", "ssh_session", "local_api")
#: Journal facts read and written by the ladder (public values only).
FACT_HOST_KEY_PUBLIC = Fact.HOST_KEY_PUBLIC
FACT_HOST_KEY_FINGERPRINT = Fact.HOST_KEY_FINGERPRINT
FACT_LOCAL_API_CERT = Fact.LOCAL_API_CERT

#: Polling cadence per node: 0.5 s then 1.1 s (+ up to 0.2 s jitter). Never more than two polls a second; about
#: 50 TCP connections a minute while a node is down (the cap was 1.0 s: 56 a minute, too close to the target of
#: 60); a node noticed within ~1.3 s of its sshd listening.
POLL_BACKOFF = Backoff(initial=0.5, maximum=1.1, jitter=0.2)

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
