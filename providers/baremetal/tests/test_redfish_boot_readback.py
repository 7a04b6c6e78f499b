"""A one-time boot override read back: kept (once, or made Continuous by the BMC itself) or dropped (made persistent).

The lab's emulator keeps every override (it reports them as Continuous), so the BMC that drops a one-time override
is played here by a stand-in for sushy's System: only the calls the session makes, recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import sushy  # type: ignore[import-untyped]
from palette_provision.provider import BootDevice
from structlog.testing import capture_logs

from palette_provision_baremetal._redfish import BOOT_TARGETS, RedfishSession


@dataclass
class _Boot:
    target: Any = None
    enabled: Any = sushy.BOOT_SOURCE_ENABLED_DISABLED


@dataclass
class _System:
    """A BMC whose read-back shows what ``keeps`` says: the override as set, as Continuous, or dropped."""

    keeps: str
    boot: _Boot = field(default_factory=_Boot)
    calls: list[tuple[Any, Any]] = field(default_factory=list)

    def set_system_boot_options(self, target: Any, enabled: Any) -> None:
        self.calls.append((target, enabled))
        if self.keeps == "as-set" or enabled == sushy.BOOT_SOURCE_ENABLED_CONTINUOUS:
            self.boot = _Boot(target, enabled)
        elif self.keeps == "continuous":
            self.boot = _Boot(target, sushy.BOOT_SOURCE_ENABLED_CONTINUOUS)

    def refresh(self) -> None:
        pass


class _Driver:
    node, key = "rack-1", "redfish:10.0.0.11:443"

    def call(self, what: str, action: Any, *, read: bool = False) -> Any:
        return action()


@pytest.mark.parametrize("keeps", ["as-set", "continuous"])
def test_a_kept_one_time_override_is_sent_once(keeps: str) -> None:
    system = _System(keeps)
    RedfishSession(_Driver(), None, system).set_boot_device(BootDevice.CD, persistent=False)  # type: ignore[arg-type]
    assert system.calls == [(BOOT_TARGETS[BootDevice.CD], sushy.BOOT_SOURCE_ENABLED_ONCE)]


def test_a_dropped_one_time_override_is_made_persistent_and_said() -> None:
    system = _System("drops")
    with capture_logs() as events:
        RedfishSession(_Driver(), None, system).set_boot_device(BootDevice.CD, persistent=False)  # type: ignore[arg-type]
    cd = BOOT_TARGETS[BootDevice.CD]
    assert system.calls == [(cd, sushy.BOOT_SOURCE_ENABLED_ONCE), (cd, sushy.BOOT_SOURCE_ENABLED_CONTINUOUS)]
    assert system.boot == _Boot(cd, sushy.BOOT_SOURCE_ENABLED_CONTINUOUS)
    assert [(e["event"], e["node"]) for e in events] == [("bmc_one_time_boot_ignored", "rack-1")]
