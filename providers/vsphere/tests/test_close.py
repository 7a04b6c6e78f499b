"""Closing the provider: the vCenter session is logged out even when an earlier close fails (sessions counted)."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import ProviderFactory


def _sessions(si: Any) -> set[str]:
    return {s.key for s in si.content.sessionManager.sessionList or []}


def test_a_failing_datastore_client_close_still_logs_out(make_provider: ProviderFactory, si: Any) -> None:
    before = _sessions(si)
    provider = make_provider()
    provider._backend()  # connect (what the first platform call does)
    opened = _sessions(si) - before
    assert len(opened) == 1, "the provider opened one vCenter session"

    stager = provider._state.stager  # type: ignore[union-attr]

    def broken_close() -> None:
        raise OSError("simulated failure closing the datastore HTTP client")

    stager.close = broken_close  # type: ignore[method-assign]
    with pytest.raises(OSError):
        provider.close()
    assert not (_sessions(si) & opened), "the session was logged out despite the failing close"
    provider.close()  # twice is fine, and nothing is left to close
