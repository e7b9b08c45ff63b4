"""Retry timing shared by the Graph client and the Teams messenger: Retry-After parsing and
jittered exponential backoff. Pure functions, no I/O."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait according to a ``Retry-After`` header, or None when absent or unreadable.

    Graph sends delta-seconds, sometimes fractional ("2.128"); HTTP also allows an HTTP-date.
    A date in the past means "retry now" (0.0).
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        # float() also reads "nan" and "inf"; neither is a wait a server can mean.
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        # RFC 9110 dates are GMT; parsedate_to_datetime leaves "-0000" naive.
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**(attempt-1))].

    ``attempt`` counts from 1 (the attempt that just failed). Full jitter spreads the retries of
    many callers hit by the same outage instead of synchronising them.
    """
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return rng.uniform(0.0, ceiling)
