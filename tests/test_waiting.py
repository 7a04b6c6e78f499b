"""wait_for: deadline, backoff, early stop on failure states, transient errors, injectable clock."""

from __future__ import annotations

import pytest

from palette_provision.errors import TransientError, WaitFailed, WaitTimeout
from palette_provision.waiting import Backoff, wait_for


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_returns_the_awaited_state() -> None:
    states = iter(["off", "off", "on"])
    clock = FakeClock()
    assert (
        wait_for(
            lambda: next(states), what="power", until=lambda s: s == "on", timeout=60, clock=clock, sleep=clock.sleep
        )
        == "on"
    )
    assert len(clock.sleeps) == 2


def test_backoff_is_capped_exponential_with_jitter() -> None:
    clock = FakeClock()
    with pytest.raises(WaitTimeout):
        wait_for(
            lambda: 0,
            what="x",
            timeout=100,
            clock=clock,
            sleep=clock.sleep,
            backoff=Backoff(initial=1, maximum=8, jitter=0.5),
            rng=lambda: 1.0,
        )
    assert clock.sleeps[:5] == [1.5, 2.5, 4.5, 8.5, 8.5]


def test_timeout_names_what_how_long_and_last_state() -> None:
    clock = FakeClock()
    with pytest.raises(WaitTimeout) as info:
        wait_for(
            lambda: "installing",
            what="the installer to finish",
            until=lambda s: s == "off",
            timeout=30,
            clock=clock,
            sleep=clock.sleep,
        )
    err = info.value
    assert err.what == "the installer to finish" and err.last_state == "installing"
    assert 30 <= err.waited_s < 31
    assert str(err).startswith("timed out after 30.0s waiting for the installer to finish; last state: installing")


def test_sleep_never_overshoots_the_deadline() -> None:
    clock = FakeClock()
    with pytest.raises(WaitTimeout):
        wait_for(
            lambda: False,
            what="x",
            timeout=10,
            clock=clock,
            sleep=clock.sleep,
            backoff=Backoff(initial=7, maximum=7, jitter=0),
        )
    assert clock.now == 10


def test_failure_state_stops_early() -> None:
    clock = FakeClock()
    with pytest.raises(WaitFailed) as info:
        wait_for(
            lambda: "Error",
            what="cluster",
            until=lambda s: s == "Running",
            failed=lambda s: "cluster failed" if s == "Error" else None,
            timeout=3600,
            clock=clock,
            sleep=clock.sleep,
        )
    assert clock.sleeps == [] and info.value.state == "Error"


def test_transient_errors_are_retried_and_reported_on_timeout() -> None:
    clock = FakeClock()
    calls = []

    def probe() -> str:
        calls.append(1)
        raise TransientError("connection reset")

    with pytest.raises(WaitTimeout) as info:
        wait_for(probe, what="ssh", timeout=5, clock=clock, sleep=clock.sleep)
    assert len(calls) > 2 and isinstance(info.value.last_error, TransientError)
    assert "last error: TransientError: connection reset" in str(info.value)


def test_other_errors_propagate_at_once() -> None:
    def probe() -> str:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        wait_for(probe, what="x", timeout=5)


class RecordingLog:
    """A Logger stand-in that keeps (level, event, fields)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, object]]] = []

    def warning(self, event: str, **kw: object) -> None:
        self.events.append(("warning", event, kw))

    def info(self, event: str, **kw: object) -> None:
        self.events.append(("info", event, kw))


def test_a_probe_that_keeps_failing_ends_the_wait_after_errors_for_not_at_the_deadline() -> None:
    clock = FakeClock()
    answers = iter(["installing"])

    def probe() -> str:
        state = next(answers, None)
        if state is None:
            raise TransientError("BMC 10.0.0.9 did not answer")
        return state

    with pytest.raises(WaitTimeout) as info:
        wait_for(probe, what="the installer to finish", until=lambda s: s == "off", timeout=3600, errors_for=60,
                 clock=clock, sleep=clock.sleep, backoff=Backoff(initial=5, maximum=5, jitter=0))  # fmt: skip
    err = info.value
    # Failing from t = 5 s; the look at t = 65 s is the first 60 s after the first failure.
    assert clock.now == 65 and err.waited_s == 65
    assert err.why == "every look for 60 s failed" and err.last_state == "installing"
    assert str(err) == ("gave up after 65.0s waiting for the installer to finish: every look for 60 s failed; "
                        "last state: installing; last error: TransientError: BMC 10.0.0.9 did not answer")  # fmt: skip
    assert isinstance(err.__cause__, TransientError)


def test_any_answer_starts_the_count_of_failures_again_and_the_log_says_when_it_fails_and_answers() -> None:
    clock = FakeClock()
    log = RecordingLog()
    # Fails for 40 s, answers "installing" once, fails 40 s again, then "off": never 60 s of failures in a row.
    script = ["err"] * 8 + ["installing"] + ["err"] * 8 + ["off"]
    answers = iter(script)

    def probe() -> str:
        state = next(answers)
        if state == "err":
            raise TransientError("BMC busy")
        return state

    state = wait_for(probe, what="install", until=lambda s: s == "off", timeout=3600, errors_for=60,
                     clock=clock, sleep=clock.sleep, backoff=Backoff(initial=5, maximum=5, jitter=0),
                     log=log)  # type: ignore[arg-type]  # fmt: skip
    assert state == "off" and clock.now == 5 * (len(script) - 1)
    levels = [(level, event) for level, event, _ in log.events]
    assert levels == [("warning", "wait_failing"), ("info", "wait_answering_again")] * 2
    warning, recovered = log.events[0][2], log.events[1][2]
    assert warning == {"what": "install", "error": "TransientError: BMC busy"}
    assert recovered == {"what": "install", "failed_for_s": 40.0}


def test_without_errors_for_a_failing_probe_is_retried_until_the_deadline() -> None:
    clock = FakeClock()

    def probe() -> str:
        raise TransientError("no route to host")

    with pytest.raises(WaitTimeout) as info:
        wait_for(probe, what="x", timeout=300, clock=clock, sleep=clock.sleep,
                 backoff=Backoff(initial=5, maximum=5, jitter=0))  # fmt: skip
    assert clock.now == 300 and info.value.why is None
    assert str(info.value).startswith("timed out after 300.0s waiting for x; last error: TransientError")
