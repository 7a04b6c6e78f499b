"""Run one hand-off in this process, as ``apply`` would, so a test can SIGKILL it or measure its memory.

``python tests/handoff/runner.py <spec.json>``; the spec holds ``plan`` (plan data), ``journal``, ``sims`` and
optionally ``kill_at`` (a checkpoint name: the process SIGKILLs itself there), ``kill_on_event`` (``step:message``
of an emitted event: the same, mid-step), ``vip`` (``[console URL, kube URL]`` of the simulated cluster), ``rss_file`` (where to write the
peak RSS before and after the hand-off, KiB) and ``log`` (``{"level": ..., "json": bool}``: configure logging as the
CLI does). Prints the result as JSON, or exits 3 with the error.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from palette_provision.errors import HandoffError  # noqa: E402
from palette_provision.journal import Journal  # noqa: E402
from palette_provision.testing.metrics import peak_rss_kib  # noqa: E402
from tests.handoff import rig  # noqa: E402


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    if spec.get("log"):
        from palette_provision.cli import _configure_logging

        _configure_logging(spec["log"]["level"], spec["log"]["json"])
    plan = rig.build_plan(spec["plan"])
    kill_at = spec.get("kill_at")

    def checkpoint(name: str) -> None:
        if name == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    before = peak_rss_kib()
    events: list[tuple[str, str, dict[str, object]]] = []
    kill_on_event = spec.get("kill_on_event")
    extra = {"vip_services": lambda _context: tuple(spec["vip"])} if spec.get("vip") else {}
    with Journal.open(Path(spec["journal"]), deployment=plan.name) as journal:
        context = rig.context_for(plan, journal, spec["sims"], events)
        if kill_on_event:
            def emit(step: str, message: str, data: object) -> None:
                if f"{step}:{message}" == kill_on_event:
                    os.kill(os.getpid(), signal.SIGKILL)

            context = dataclasses.replace(context, emit=emit)
        try:
            result = rig.former(spec["sims"], checkpoint=checkpoint, **extra).form(context)
        except HandoffError as exc:
            print(json.dumps({"error": str(exc), "step": exc.step}))
            return 3
    after = peak_rss_kib()
    if spec.get("rss_file"):
        Path(spec["rss_file"]).write_text(json.dumps({"before_kib": before, "after_kib": after}))
    print(json.dumps(result.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
