"""What the command line prints: JSON documents, the human report, validation evidence, and the live view.

Everything here that shows remote text (a node's error, an SSH banner, an API's answer) passes it through
:func:`plain` first: escape sequences removed, control characters replaced, never rendered as markup.
"""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Any

from palette_provision.report import Event


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


_ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-_])")


def plain(text: str, *, lines: bool = False) -> str:
    """Remote text made safe to print on a terminal: escape sequences removed, other control characters replaced
    (newlines kept with ``lines``)."""
    text = _ANSI.sub("", str(text))
    return "".join(c if c.isprintable() or c == " " or (lines and c == "\n") else "?" for c in text)


class LiveView:
    """Live per-node, per-phase progress on a terminal (rich); silent otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.rows: dict[str, dict[str, Any]] = {}
        self._live: Any = None

    def __enter__(self) -> LiveView:
        if self.enabled:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(self._table(), console=Console(stderr=True), refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._table())
            self._live.__exit__(None, None, None)

    def _table(self) -> Any:
        from rich.table import Table

        table = Table(title="palette-provision", expand=False)
        for col in ("node", "phase", "status", "detail", "elapsed"):
            table.add_column(col)
        from rich.text import Text

        colours = {"done": "green", "skipped": "cyan", "failed": "bold red", "started": "yellow", "progress": "yellow"}
        for node, row in self.rows.items():
            elapsed = f"{time.time() - row['since']:.0f}s" if row["status"] in ("started", "progress") else ""
            status = Text(row["status"], style=colours.get(row["status"], "white"))
            # Text, never markup: details carry remote words (an SSH banner, a node's error message).
            cells = (plain(node), plain(row["phase"]), status, plain(row["detail"])[:70], Text(elapsed))
            table.add_row(*(Text(c) if isinstance(c, str) else c for c in cells))
        return table

    def __call__(self, event: Event) -> None:
        row = self.rows.setdefault(event.node, {"phase": "", "status": "", "detail": "", "since": event.at})
        if event.phase != row["phase"]:
            row["since"] = event.at
        detail = event.message
        if event.status == "done" and not detail:
            if event.data.get("address"):
                detail = f"address {event.data['address']}"
            elif "seconds" in event.data:
                detail = f"took {float(event.data['seconds']):.1f}s"
        if event.status == "progress" and "bytes" in event.data:
            total = event.data.get("total") or 0
            done = int(event.data["bytes"])
            detail = f"{done / 2**20:.0f} MiB" + (f" of {total / 2**20:.0f} MiB" if total else "")
            if "rate_mib_s" in event.data:
                detail += f" at {event.data['rate_mib_s']} MiB/s"
        row.update(phase=event.phase, status=event.status, detail=detail)
        if self._live is not None:
            self._live.update(self._table())


def print_report(report: Any) -> None:
    for node in report.nodes:
        line = f"{node.name:<20} {node.status:<8} address={node.address or '-'}"
        if node.address and node.address_source:
            line += f" ({node.address_source})"
        if node.host_key_fingerprint:
            line += f" host_key={node.host_key_fingerprint}"
        if node.status == "failed":
            line += f"\n    failed in {node.phase}: {plain(node.error or '')}"
            if node.last_state:
                line += f" (last state: {plain(node.last_state)})"
            if node.seed_left:
                line += (
                    f"\n    its seed (private SSH host key, password hash) stays at {plain(node.seed_left)}"
                    " until 'destroy --seeds-only' or 'destroy'"
                )
        print(line)
    if report.handoff is not None:
        h = report.handoff
        if h.cluster_state:
            print(
                f"cluster: {h.cluster_state} {h.cluster_health or ''} endpoint={h.endpoint} kubeconfig={h.kubeconfig}"
            )
        print_validation(h.details.get("validation") or [])
        for f in h.files:
            print(f"wrote {f}")
    if report.handoff_error:
        print_validation(report.validation)  # the checks' evidence until the failed one (its entry last)
        print(f"hand-off failed: {plain(report.handoff_error)}")
    print("OK" if report.ok else "FAILED")


def print_validation(evidence: list[Any]) -> None:
    for entry in evidence:
        when = time.strftime("%H:%M:%S", time.localtime(float(entry.get("at", 0))))
        verdict = "FAILED" if entry.get("failed") else "validated"
        print(f"{verdict} {plain(str(entry.get('check')))}: {plain(str(entry.get('answered')))} "
              f"[{plain(str(entry.get('asked')))} at {when}]")  # fmt: skip
