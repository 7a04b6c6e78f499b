"""The one waiting primitive: :func:`wait_for`.

Every wait in palette-provision (a VM to power off, an SSH banner, a cluster to reach ``Running``) goes through
:func:`wait_for`, built on tenacity: a deadline, capped exponential backoff with jitter, an early stop when a
failure state is seen, and an injectable clock and sleep so tests run in no time. It raises
:class:`~palette_provision.errors.WaitTimeout` naming what was awaited, for how long, and the last state and
error seen.

Example::

    state = wait_for(
        lambda: vm.power_state(),
        what="vm node-1 to power off after install",
        until=lambda s: s == "off",
        failed=lambda s: "VM was deleted" if s == "gone" else None,
        timeout=3600,
    )
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from palette_provision.errors import TransientError, WaitFailed, WaitTimeout

if TYPE_CHECKING:
    import tenacity

    from palette_provision.log import Logger

__all__ = ["Backoff", "Interrupted", "interruptible_sleep", "stop_on", "wait_for"]

T = TypeVar("T")


class Interrupted(BaseException):
    """The run is stopping (Ctrl-C): raised in a worker thread at its next wait or step.

    A ``BaseException``, like ``KeyboardInterrupt``: the step it interrupts is not failed, it stays ``started`` in the
    journal, exactly as after a SIGKILL, and the next ``apply`` resumes it.
    """


_local = threading.local()


@contextmanager
def stop_on(event: threading.Event) -> Iterator[None]:
    """Within the block, this thread's waits end with :class:`Interrupted` as soon as ``event`` is set."""
    previous = getattr(_local, "stop", None)
    _local.stop = event
    try:
        yield
    finally:
        _local.stop = previous


def interruptible_sleep(seconds: float) -> None:
    """``time.sleep``, but woken by this thread's stop event (:func:`stop_on`), raising :class:`Interrupted`."""
    event: threading.Event | None = getattr(_local, "stop", None)
    if event is None:
        time.sleep(seconds)
    elif event.wait(seconds) or event.is_set():
        raise Interrupted


@dataclass(frozen=True)
class Backoff:
    """Polling cadence: start at ``initial`` seconds, double up to ``maximum``, add up to ``jitter`` seconds."""

    initial: float = 0.5
    maximum: float = 10.0
    jitter: float = 0.25


@dataclass
class _Poll(Generic[T]):
    last_state: T | None = None
    seen_state: bool = False
    last_error: BaseException | None = None
    attempts: int = 0
    failing_since: float | None = None
    """When the current run of failed attempts (``retry_on``) began; ``None`` while the probe answers."""


class _NotYet(Exception):
    """Internal: the probe answered, but not with the awaited state."""


def wait_for(
    probe: Callable[[], T],
    *,
    what: str,
    timeout: float,
    until: Callable[[T], bool] = bool,
    failed: Callable[[T], str | None] | None = None,
    retry_on: tuple[type[BaseException], ...] = (TransientError,),
    backoff: Backoff = Backoff(),
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = interruptible_sleep,
    rng: Callable[[], float] = random.random,
    on_state: Callable[[T], None] | None = None,
    describe: Callable[[T], str] | None = None,
    errors_for: float | None = None,
    log: Logger | None = None,
) -> T:
    """Call ``probe`` until ``until(state)`` holds, and return that state.

    Args:
        probe: returns the current state; may raise one of ``retry_on`` to mean "not yet, try again".
        what: a human description of what is awaited, used in errors and logs.
        timeout: the deadline in seconds from the first call.
        until: the success predicate.
        failed: returns a reason when the state is a failure state (stop at once), else ``None``.
        retry_on: exception types treated as transient; anything else propagates at once.
        backoff: the polling cadence; sleeps never overshoot the deadline.
        clock, sleep, rng: injectable for tests.
        on_state: called with every observed state (progress reporting).
        describe: how errors show a state (default :func:`~palette_provision.errors.describe_state`, which never
            shows a whole mapping): give one for states that are API answers, e.g. their status words.
        errors_for: end the wait early when every attempt for this many seconds raised one of ``retry_on`` (the
            platform stopped answering), instead of retrying until ``timeout``. For long waits (an install's hour),
            where a platform that stays silent should fail the step long before the deadline.
        log: where to say that the probe started failing (a warning, once per run of failures) and answers again
            (info). Give it for waits whose errors a user should see; a readiness probe that is refused until the
            node boots should not warn.

    Raises:
        WaitTimeout: the deadline passed, or (``errors_for``) the probe failed for that long in a row; carries the
            last state and last error.
        WaitFailed: ``failed`` named a failure state.
    """
    poll: _Poll[T] = _Poll()
    start = clock()
    deadline = start + timeout

    def attempt() -> T:
        poll.attempts += 1
        try:
            state = probe()
        except retry_on as exc:
            poll.last_error = exc
            failing(exc)
            raise
        answered()
        poll.last_state, poll.seen_state = state, True
        if on_state is not None:
            on_state(state)
        if failed is not None:
            reason = failed(state)
            if reason:
                raise WaitFailed(what, state, reason, shown=describe(state) if describe else None)
        if not until(state):
            raise _NotYet()
        return state

    def failing(exc: BaseException) -> None:
        now = clock()
        if poll.failing_since is None:
            poll.failing_since = now
            if log is not None:
                log.warning("wait_failing", what=what, error=f"{type(exc).__name__}: {exc}")
        elif errors_for is not None and now - poll.failing_since >= errors_for:
            raise timed_out(f"every look for {now - poll.failing_since:.0f} s failed") from exc

    def answered() -> None:
        if poll.failing_since is not None:
            if log is not None:
                log.info("wait_answering_again", what=what, failed_for_s=round(clock() - poll.failing_since, 1))
            poll.failing_since = None

    def pause(n: int) -> float:
        """The pause after the ``n``-th failed attempt (1-based), never past the deadline."""
        base = min(backoff.maximum, backoff.initial * (2 ** (n - 1)))
        return float(max(0.0, min(base + backoff.jitter * rng(), deadline - clock())))

    def timed_out(why: str | None = None) -> WaitTimeout:
        last = poll.last_state if poll.seen_state else None
        shown = describe(last) if describe is not None and last is not None else None
        return WaitTimeout(what, clock() - start, last_state=last, last_error=poll.last_error, shown=shown, why=why)

    retryable: tuple[type[BaseException], ...] = (_NotYet, *retry_on)
    # The first look happens here: most waits (a vCenter task, a node already up on a re-run) are over by then,
    # and those never build, or import, tenacity's machinery.
    try:
        return attempt()
    except retryable as exc:
        if clock() >= deadline:
            raise timed_out() from (None if isinstance(exc, _NotYet) else exc)
    sleep(pause(1))

    import tenacity

    def next_sleep(retry_state: tenacity.RetryCallState) -> float:
        return pause(retry_state.attempt_number + 1)  # + 1: the first attempt ran above

    def out_of_time(_: tenacity.RetryCallState) -> bool:
        return clock() >= deadline

    retrying = tenacity.Retrying(
        stop=out_of_time,
        wait=next_sleep,
        sleep=sleep,
        retry=tenacity.retry_if_exception_type(retryable),
        reraise=True,
    )
    try:
        return retrying(attempt)
    except retryable as exc:
        raise timed_out() from (None if isinstance(exc, _NotYet) else exc)
