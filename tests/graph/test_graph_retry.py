"""The pure parts of the client: Retry-After, backoff, OData literals."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from bot.graph import odata_datetime, odata_string
from bot.graph.odata import all_of, any_equal
from bot.retry import backoff_delay, parse_retry_after

NOW = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("0.5", 0.5),
        ("2.128", 2.128),
        ("3", 3.0),
        (" 7 ", 7.0),
        ("-1", 0.0),
        ("Tue, 24 Nov 2026 09:30:10 GMT", 10.0),
        ("Tue, 24 Nov 2026 09:29:00 GMT", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


def test_backoff_is_full_jitter_under_a_growing_capped_ceiling() -> None:
    rng = random.Random(3)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 30.0), (40, 30.0)]:
        waits = [backoff_delay(attempt, base=0.5, cap=30.0, rng=rng) for _ in range(200)]
        assert all(0.0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling * 0.8  # uses the whole range


def test_odata_literals() -> None:
    assert odata_string("o'brien@contoso.com") == "'o''brien@contoso.com'"
    assert odata_string("''") == "''''''"
    assert odata_datetime(datetime(2026, 11, 24, 10, 30, tzinfo=timezone(timedelta(hours=1)))) == (
        "2026-11-24T09:30:00Z"
    )
    assert odata_datetime(NOW.replace(microsecond=120)) == "2026-11-24T09:30:00.000120Z"
    with pytest.raises(ValueError, match="time zone"):
        odata_datetime(datetime(2026, 11, 24))
    assert any_equal("status", ["new"]) == "status eq 'new'"
    assert any_equal("status", ["new", "inProgress"]) == "(status eq 'new' or status eq 'inProgress')"
    assert all_of("a eq 'b'", "", "c gt 1") == "a eq 'b' and c gt 1"
