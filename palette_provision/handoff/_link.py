"""Steps 1 and 2 of formation: every host ``configured``, then every follower linked to the leader.

Link protocol (reference §3): the leader generates a one-time token (``generate-token``); each follower submits it
(``POST .../link`` with ``{"token": ...}``, the only field the follower needs, §3.2); each follower's
``link/status`` moves ``Pending`` -> ``InProgress`` -> ``Completed`` (or ``Failed`` with ``errorMessage``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from palette_provision.errors import HandoffError
from palette_provision.handoff._client import LocalApiError, LocalApiUnavailable
from palette_provision.handoff._session import HOST_ID_FACT, HOST_INFO, LINK_STATUS, HostFacts, Session, step_errors
from palette_provision.handoff.base import ReadyNode
from palette_provision.secrets import Secret

GENERATE_TOKEN = "/v1/edge-mgmt/edgehosts/current/link/generate-token"  # noqa: S105 - a path
LINK = "/v1/edge-mgmt/edgehosts/current/link"

CONFIGURED_STEP = "handoff.configured"
LINK_STEP = "handoff.link"

#: Never submit a link token with less than this many seconds left (capped at a quarter of its refresh interval,
#: so a short-lived token is still usable): a follower validates it against the leader after a network round
#: trip, and the leader replaces it when it runs out (link-hosts.md: ~2 minutes).
LINK_TOKEN_MARGIN_S = 15.0
#: Fresh tokens tried on one follower when it rejects the token (expired in flight, replaced by the leader).
LINK_SUBMIT_ATTEMPTS = 3

_LINKING = ("Pending", "InProgress", "Completed")


def wait_configured(session: Session) -> None:
    """Wait until every node's host info says ``configurationStatus: configured``; record its host facts."""
    journal = session.context.journal
    timeout = session.context.plan.timeouts.configured
    for node in session.context.nodes:
        api = session.api(node)

        def configured(api: Any = api, node: ReadyNode = node) -> dict[str, Any]:
            with step_errors(CONFIGURED_STEP):
                facts = session.wait(
                    CONFIGURED_STEP, lambda: HostFacts.from_info(api.get(HOST_INFO), node.address, node.name),
                    what=f"{node.name} to report configurationStatus 'configured'",
                    timeout=timeout, until=lambda f: f.configuration == "configured",
                )
            if not facts.host_id:
                raise HandoffError(CONFIGURED_STEP, f"{node.name}: host info has no metadata.id")
            session.facts[node.name] = facts
            journal.set_fact(node.name, HOST_ID_FACT, facts.host_id)
            return {"host_id": facts.host_id, "ip": facts.ip}

        # Always: later steps need every node's host facts, read afresh (a done node is just looked at again).
        session.context.run_step(CONFIGURED_STEP, configured, node=node.name, always=True)
    session.emit(CONFIGURED_STEP, "hosts_configured", nodes=[n.name for n in session.context.nodes])


def _peer_ids(status: dict[str, Any] | None) -> set[str]:
    peers = (status or {}).get("peers") or []
    return {str(p.get("id")) for p in peers if isinstance(p, dict)}


@dataclass(frozen=True)
class _LinkToken:
    value: Secret
    remaining_s: float
    margin_s: float


def _token_margin(answer: dict[str, Any]) -> float:
    interval = float(answer.get("interval") or 120)
    return max(1.0, min(LINK_TOKEN_MARGIN_S, interval / 4))


def _fresh_token(session: Session) -> str:
    """A link token from the leader with enough life left to be submitted (waits out a nearly expired one).

    The leader hands out its current token until it expires and only then makes a new one (link-hosts.md), so a
    token with too little ``remainingTime`` is waited out by asking again.
    """
    leader = session.api(session.leader)

    def probe() -> _LinkToken:
        answer = leader.call("POST", GENERATE_TOKEN) or {}
        if not isinstance(answer.get("token"), str) or not answer["token"]:
            raise HandoffError(LINK_STEP, f"{session.leader.name}: generate-token answered no token")
        # A Secret: the token carries the leader's one-time password, and a timeout error shows the last state.
        return _LinkToken(Secret(answer["token"], source="link-token"), float(answer.get("remainingTime") or 0),
                          _token_margin(answer))

    token = session.wait(
        LINK_STEP, probe, what=f"a link token from {session.leader.name} with enough time left",
        timeout=session.context.plan.timeouts.link, until=lambda t: t.remaining_s >= t.margin_s,
    )
    return token.value.reveal()


def _submit(session: Session, follower: ReadyNode) -> None:
    """Submit a fresh leader token on ``follower``; retry with a new token when the follower rejects it."""
    api = session.api(follower)
    leader_id = session.facts[session.leader.name].host_id
    last: LocalApiError | LocalApiUnavailable | None = None
    for _attempt in range(LINK_SUBMIT_ATTEMPTS):
        token = _fresh_token(session)
        try:
            api.call("POST", LINK, json_body={"token": token})
            return
        except (LocalApiError, LocalApiUnavailable) as exc:
            if isinstance(exc, LocalApiError) and exc.status != 400:
                raise
            last = exc
        # A 400 also answers a token that expired in flight or that the leader replaced; a 5xx or a reset may
        # hide a link that started anyway. Observe before trying a fresh token.
        status = api.get_optional(LINK_STATUS)
        if status and status.get("status") in _LINKING and leader_id in _peer_ids(status):
            return
        reason = last.message if isinstance(last, LocalApiError) else str(last)
        session.log.info("link_token_rejected", follower=follower.name, reason=reason, phase=LINK_STEP)
    reason = last.message if isinstance(last, LocalApiError) else str(last)
    raise HandoffError(LINK_STEP, f"{follower.name} refused the link token {LINK_SUBMIT_ATTEMPTS} times: {reason}")


def _start_link(session: Session, follower: ReadyNode) -> None:
    """Observe the follower first; submit a token only when it is not already linking to our leader."""
    leader_id = session.facts[session.leader.name].host_id
    status = session.api(follower).get_optional(LINK_STATUS)
    state = (status or {}).get("status")
    if status is not None and state in _LINKING:
        if leader_id not in _peer_ids(status) and state != "Pending":
            raise HandoffError(
                LINK_STEP,
                f"{follower.name} is already linked to another host group (peers: {sorted(_peer_ids(status))}); "
                "unlink it in its Local UI first",
            )
        if leader_id in _peer_ids(status):
            session.log.info("link_already_started", node=follower.name, status=state, phase=LINK_STEP)
            return
    _submit(session, follower)
    session.checkpoint(f"{LINK_STEP}:{follower.name}:submitted")


def link_followers(session: Session) -> None:
    """Link every follower to the leader (a no-op for one node, and for links that exist already)."""
    session.context.run_step(LINK_STEP, lambda: _link_all(session))
    session.checkpoint(f"{LINK_STEP}:done")


def _link_failure(status: dict[str, Any]) -> str | None:
    return (status.get("errorMessage") or "link failed") if status.get("status") == "Failed" else None


def _link_all(session: Session) -> dict[str, Any]:
    journal = session.context.journal
    followers = session.followers
    session.checkpoint(f"{LINK_STEP}:begin")
    timeout = session.context.plan.timeouts.link
    with step_errors(LINK_STEP):
        pending = [f for f in followers if not journal.is_done(LINK_STEP, f.name)]
        for follower in pending:
            _start_link(session, follower)
        for follower in pending:
            api = session.api(follower)

            def linked(api: Any = api, follower: ReadyNode = follower) -> dict[str, Any]:
                with step_errors(LINK_STEP):
                    session.wait(
                        LINK_STEP, lambda: api.get(LINK_STATUS),
                        what=f"{follower.name} to link to {session.leader.name}", timeout=timeout,
                        until=lambda s: s.get("status") == "Completed",
                        failed=_link_failure,
                    )
                session.emit(LINK_STEP, "follower_linked", follower=follower.name, leader=session.leader.name)
                return {"leader": session.leader.name}

            session.context.run_step(LINK_STEP, linked, node=follower.name)
        if followers:
            want = {session.facts[f.name].host_id for f in followers}
            session.wait(
                LINK_STEP, lambda: session.api(session.leader).get(LINK_STATUS),
                what=f"every follower to appear linked on the leader {session.leader.name}", timeout=timeout,
                until=lambda s: s.get("status") == "Completed" and want <= _peer_ids(s),
                failed=lambda s: (s.get("errorMessage") or "link failed") if s.get("status") == "Failed" else None,
            )
    return {"leader": session.leader.name, "followers": [f.name for f in followers]}
