"""Fault and timing knobs: set at start (``--knobs``) and at runtime (``POST /__sim__/knobs``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from palette_provision.testing import _simhttp


@dataclass
class Knobs(_simhttp.KnobSet):
    """Every tunable of one simulated node. All times are seconds.

    Timings default to short values (a simulator for tests); the published appliance defaults are
    kept where the brief fixes them (2 h / 24 h session tokens, ~120 s link tokens).
    """

    delay_s: float = 0.0
    """Sleep this long before answering every request whose path starts with ``delay_prefix``."""
    delay_prefix: str = "/v1/"
    fail_next: dict[str, int] = field(default_factory=dict)
    """``{path_prefix: n}``: answer the next n matching requests with 500 ``InjectedFailure``."""
    drop_next: dict[str, int] = field(default_factory=dict)
    """``{path_prefix: n}``: close the connection without answering the next n matching requests."""
    token_lifetime_s: float = 7200.0
    extended_token_lifetime_s: float = 86400.0
    link_token_lifetime_s: float = 120.0
    link_step_s: float = 1.0
    """Time a follower spends in ``Pending`` and then in ``InProgress`` before ``Completed``."""
    refuse_links: bool = False
    refuse_reason: str = "the leader refused the link request"
    inprogress_after_s: float = 0.5
    configured_after_s: float = 2.0
    sync_delay_s: float = 2.0
    cluster_running_s: float = 3.0
    cluster_error: bool = False
    cluster_error_message: str = "control plane did not become ready: etcd member failed to start"
    cluster_delete_s: float = 1.0
    cluster_unhealthy: bool = False
    """The cluster reaches ``Running`` but stays ``Unhealthy`` (a node not ready), kubeconfig already served."""
    login_failure_status: int = 400
    ping_requires_auth: bool = False
    kubeconfig_encoding: str = "raw"
    """``raw`` (YAML text in ``status.kubeconfig``) or ``base64`` (the YAML base64-encoded)."""
    app_not_running: str = ""
    """Name of a pack of ``cluster/applications`` that reports ``app_not_running_status`` instead of ``Running``."""
    app_not_running_status: str = "Error"
    console_down: bool = False
    """The system console's listener is closed (connections refused, open ones cut) while set."""
    console_cert_changed: bool = False
    """The system console serves a second certificate (same names, new key) while set; open connections are cut."""
    console_unhealthy: bool = False
    """``GET /v1/mgmt/app/health`` answers ``isHealthy: false`` with a message."""
    console_unavailable_next: int = 0
    """The next n ``syslogin`` requests answer 503 ``ServiceUnavailable`` (a console still starting up)."""
    console_lockout_s: float = 900.0
    """How long 5 failed system-console logins in a row lock the ``admin`` account (the documented 15 minutes)."""
    console_token_lifetime_s: float = 900.0
    registry_sync_s: float = 2.0
    """Duration of an OCI registry sync (knob value when the sync is triggered)."""
    registry_sync_fails: bool = False
    """A sync triggered while set ends ``Failed`` with a message."""
    registry_sync_stale_s: float = 0.0
    """For this long after a trigger, the sync status still reports the previous run (its status, message and
    ``lastRunTime``), as a console whose status lags its trigger; a client must check ``lastRunTime``."""
    pod_crashloop: str = ""
    """``<namespace>/<pod name prefix>``: those pods stay ``Running`` with a container in ``CrashLoopBackOff``."""


class KnobBox(_simhttp.KnobBox[Knobs]):
    """Thread-safe holder of the node's current :class:`Knobs`; readers get a snapshot copy.

    A ``fail_next`` / ``drop_next`` key is a path prefix (``/v1/edge-mgmt/``: any method) or a method and a path prefix
    (``POST /v1/edge-mgmt/edgehosts/current/link``: that method only), so a fault can hit a link submission without
    hitting the link-status reads that share its path prefix.
    """

    def __init__(self, initial: Mapping[str, Any] | None = None) -> None:
        super().__init__(Knobs, initial)

    def check(self, name: str, value: Any) -> None:
        """The string knobs that take only some values."""
        if name == "kubeconfig_encoding" and value not in ("raw", "base64"):
            raise ValueError("knob 'kubeconfig_encoding' must be 'raw' or 'base64'")
        if name == "pod_crashloop" and value and not all(value.partition("/")[::2]):
            raise ValueError("knob 'pod_crashloop' must be '' or '<namespace>/<pod name prefix>'")
        if name == "app_not_running_status" and not value:
            raise ValueError("knob 'app_not_running_status' must not be empty")
