"""OData literals for ``$filter``: every value the bot puts in a filter goes through here."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime


def odata_string(value: str) -> str:
    """Quote ``value`` as an OData string literal; a single quote is escaped by doubling it.

    ``odata_string("o'brien@contoso.com") == "'o''brien@contoso.com'"``
    """
    return "'" + value.replace("'", "''") + "'"


def odata_datetime(value: datetime) -> str:
    """Format an aware datetime as an OData ``DateTimeOffset`` literal in UTC (unquoted).

    Microseconds are kept when present so that ``gt`` after the newest seen timestamp does not
    re-read alerts updated within the same second.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"an OData datetime needs a time zone, got naive {value.isoformat()}")
    utc = value.astimezone(UTC)
    pattern = "%Y-%m-%dT%H:%M:%S.%fZ" if utc.microsecond else "%Y-%m-%dT%H:%M:%SZ"
    return utc.strftime(pattern)


def any_equal(field: str, values: Sequence[str]) -> str:
    """``(field eq 'a' or field eq 'b')``; one value needs no parentheses."""
    if not values:
        raise ValueError(f"any_equal({field!r}) needs at least one value")
    terms = [f"{field} eq {odata_string(v)}" for v in values]
    return terms[0] if len(terms) == 1 else "(" + " or ".join(terms) + ")"


def all_of(*clauses: str) -> str:
    """Join non-empty clauses with ``and``."""
    return " and ".join(c for c in clauses if c)
