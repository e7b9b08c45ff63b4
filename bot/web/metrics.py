"""The bot's Prometheus metrics (prometheus-client): counters, histograms and scrape-time gauges.

Each app has a registry of its own (a process may run several, as the tests do); each replica
exposes its own series, to be summed in Prometheus. Names and labels follow Prometheus'
conventions: ``remediation_`` prefix, base units (seconds), ``_total`` for counters, and labels
with a small, fixed set of values (never an id or a name).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger(__name__)

# One series per counter, not also a "_created" one: simpler to read, nothing is lost.
# prometheus-client leaves this one function unannotated; it takes and returns nothing.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST

# name -> (help, label names)
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "remediation_alerts_ingested_total": ("Alerts that were new or changed, by source.", ("source",)),
    "remediation_cards_posted_total": ("Case cards posted to the incident channel.", ()),
    "remediation_card_updates_total": ("Case card updates sent to the incident channel.", ()),
    "remediation_requests_total": ("Action requests opened, by action.", ("action",)),
    "remediation_refusals_total": ("Clicks refused (not authorized, protected, stale, ...).", ()),
    "remediation_actions_total": (
        "Actions run, by action and outcome (succeeded, failed).",
        ("action", "outcome"),
    ),
}

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ACTION_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
PACING_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)

# name -> (help, label names, buckets)
HISTOGRAMS: dict[str, tuple[str, tuple[str, ...], Sequence[float]]] = {
    "remediation_invoke_duration_seconds": (
        "Time to answer a card click, by verb and outcome: answered (a card, a refusal included), "
        "http_<status> (an error answer such as http_404), failed (an exception).",
        ("verb", "outcome"),
        LATENCY_BUCKETS,
    ),
    "remediation_graph_request_duration_seconds": (
        "Microsoft Graph call latency, retries included, by operation (method and path template) "
        "and final HTTP status (0: no answer).",
        ("operation", "status"),
        LATENCY_BUCKETS,
    ),
    "remediation_action_duration_seconds": (
        "From the start of an approved action (the executor takes it up as soon as it is "
        "approved) to its recorded, read-back result, by action and outcome.",
        ("action", "outcome"),
        ACTION_BUCKETS,
    ),
    "remediation_teams_pacing_wait_seconds": (
        "Time a Bot Connector call waited for room under Teams' rate limits before it was sent.",
        (),
        PACING_BUCKETS,
    ),
}

GAUGES: dict[str, str] = {
    "remediation_jobs_pending": "Unfinished background jobs (executions, reports) in the store.",
    "remediation_job_oldest_age_seconds": "Age of the oldest unfinished background job (0: none).",
    "remediation_poll_lag_seconds": (
        "Now minus the alert poll's watermark: how far behind Graph the bot has read (absent "
        "before the first poll)."
    ),
}


class Metrics:
    """The app's metrics and the registry they are exposed from."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._counters = {
            name: Counter(name.removesuffix("_total"), text, labels, registry=self.registry)
            for name, (text, labels) in COUNTERS.items()
        }
        self._histograms = {
            name: Histogram(name, text, labels, buckets=buckets, registry=self.registry)
            for name, (text, labels, buckets) in HISTOGRAMS.items()
        }
        self._gauges = {name: Gauge(name, text, registry=self.registry) for name, text in GAUGES.items()}
        self._unknown: set[str] = set()

    def add(self, name: str, amount: int = 1, **labels: str) -> None:
        """Add ``amount`` to the counter ``name``; an undeclared name is logged once, not raised."""
        counter = self._counters.get(name)
        if counter is None:
            self._undeclared(name)
            return
        (counter.labels(**labels) if labels else counter).inc(amount)

    def observe(self, name: str, value: float, **labels: str) -> None:
        """Record ``value`` (seconds) in the histogram ``name``."""
        histogram = self._histograms.get(name)
        if histogram is None:
            self._undeclared(name)
            return
        (histogram.labels(**labels) if labels else histogram).observe(max(value, 0.0))

    def graph_call(self, operation: str, status: int, seconds: float) -> None:
        """One Graph call ended (the Graph client's observer)."""
        self.observe(
            "remediation_graph_request_duration_seconds", seconds, operation=operation, status=str(status)
        )

    def pacing_wait(self, seconds: float) -> None:
        """A Bot Connector call waited ``seconds`` for Teams' limits (the messenger's observer)."""
        self.observe("remediation_teams_pacing_wait_seconds", seconds)

    def set_backlog(self, pending: int, oldest: datetime | None, now: datetime) -> None:
        """The job queue at scrape time."""
        self._gauges["remediation_jobs_pending"].set(pending)
        age = 0.0 if oldest is None else max((now - oldest).total_seconds(), 0.0)
        self._gauges["remediation_job_oldest_age_seconds"].set(age)

    def set_poll_lag(self, watermark: datetime | None, now: datetime) -> None:
        """How far behind the alert source the poller is, at scrape time."""
        if watermark is not None:
            self._gauges["remediation_poll_lag_seconds"].set(max((now - watermark).total_seconds(), 0.0))

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text exposition format."""
        return generate_latest(self.registry)

    def _undeclared(self, name: str) -> None:
        if name not in self._unknown:
            self._unknown.add(name)
            log.error("metric %s is not declared in bot/web/metrics.py; its values are dropped", name)
