"""Counters for ``GET /metrics`` in the Prometheus text format (no client library needed)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

_HELP = {
    "remediation_alerts_ingested_total": "Alerts that were new or changed, by source.",
    "remediation_cards_posted_total": "Case cards posted to the incident channel.",
    "remediation_card_updates_total": "Case card updates sent to the incident channel.",
    "remediation_requests_total": "Action requests opened, by action.",
    "remediation_refusals_total": "Clicks refused (not authorized, protected, stale, ...).",
    "remediation_actions_total": "Actions run, by action and outcome (succeeded, failed).",
}


@dataclass
class Metrics:
    """Process-local counters; each replica exposes its own (sum them in Prometheus)."""

    counts: Counter[tuple[str, tuple[tuple[str, str], ...]]] = field(default_factory=Counter)

    def add(self, name: str, amount: int = 1, **labels: str) -> None:
        """Add ``amount`` to the counter ``name`` with ``labels``."""
        self.counts[(name, tuple(sorted(labels.items())))] += amount

    def exposition(self) -> str:
        """Every counter in the Prometheus text exposition format."""
        lines: list[str] = []
        for name, text in _HELP.items():
            lines += [f"# HELP {name} {text}", f"# TYPE {name} counter"]
            series = [
                (labels, value) for (metric, labels), value in sorted(self.counts.items()) if metric == name
            ]
            for labels, value in series or [((), 0)]:
                rendered = ",".join(f'{key}="{_escape(val)}"' for key, val in labels)
                lines.append(f"{name}{{{rendered}}} {value}" if rendered else f"{name} {value}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
