"""The whole suite's scheduling: every lab test in one xdist group.

The lab's tests share one set of network namespaces, addresses and simulators, so they run one after another, in
collection order, on one worker (``pytest -n 2 --dist loadgroup``, as ``./dev test`` runs them); the other tests are
spread over the workers beside them. Without xdist the mark changes nothing.
"""

from __future__ import annotations

import pytest


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("lab") or item.get_closest_marker("qemu"):
            item.add_marker(pytest.mark.xdist_group("lab"))
