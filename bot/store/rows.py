"""Row-level helpers shared by the SQL stores: audit rows, job payloads, store URLs.

Both :class:`~bot.store.sqlite.SqliteStore` and :class:`~bot.store.postgres.PostgresStore` keep
the audit trail as one table whose ``data`` column holds the whole hash-chained event and whose
other columns exist for queries. Checking those columns against the data, and deciding which
break to report first, must not differ between backends, so it lives here once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bot.domain.audit import AuditEvent, ChainCheck, verify_chain
from bot.errors import ConflictError, StoreError

# The audit_events columns, in the order every audit query selects them.
AUDIT_COLUMNS = ("sequence", "at", "actor_id", "kind", "case_id", "request_id", "identity", "data", "hash")

AuditRowOf = Callable[[AuditEvent], tuple[Any, ...]]
"""A backend's stored form of an event, in :data:`AUDIT_COLUMNS` order (e.g. ``at`` as text or timestamp)."""


def decode_audit(sequence: int, data: str) -> AuditEvent:
    """The event a row's ``data`` holds; :class:`StoreError` when it no longer parses."""
    try:
        return AuditEvent.model_validate_json(data)
    except ValueError as exc:  # pydantic's ValidationError
        raise StoreError(
            f"audit event {sequence} cannot be read back, its stored data was altered; "
            "run `remediation-bot audit verify`"
        ) from exc


def _read_audit_row(row: Sequence[Any], row_of: AuditRowOf) -> tuple[AuditEvent | None, str]:
    """The event a stored row holds (``None`` when unreadable), and what is wrong with the row."""
    try:
        event = AuditEvent.model_validate_json(row[7])
    except ValueError:
        return None, f"event {row[0]}: its stored data is not a readable audit event (modified)"
    # sequence is the chain's business (verify_chain); data is what the columns are checked against.
    differing = [
        name
        for name, stored, expected in zip(AUDIT_COLUMNS, row, row_of(event), strict=True)
        if name not in ("sequence", "data") and stored != expected
    ]
    if differing:
        return event, f"event {row[0]}: its {', '.join(differing)} column does not match its data (modified)"
    return event, ""


def verify_audit_rows(rows: Sequence[Sequence[Any]], row_of: AuditRowOf) -> ChainCheck:
    """Verify stored audit rows (in sequence order) and name the first broken event.

    Beyond :func:`~bot.domain.audit.verify_chain` this catches what only the rows show: data
    that no longer parses, and query columns edited apart from the data (which would hide
    events from ``history``), so an altered row is reported instead of crashing the check.
    """
    events: list[AuditEvent] = []
    bad_row: tuple[int, int, str] | None = None  # stored position, sequence, problem
    for position, row in enumerate(rows):
        event, problem = _read_audit_row(row, row_of)
        if problem and bad_row is None:
            bad_row = (position, row[0], problem)
        if event is None:
            break  # the chain cannot be followed past a row that does not parse
        events.append(event)
    check = verify_chain(events)
    # The first break in stored order wins; at the same row the chain's account (modified,
    # deleted, reordered) says more than "a column differs".
    if not check.ok and (bad_row is None or check.checked - 1 <= bad_row[0]):
        return check
    if bad_row is not None:
        position, sequence, problem = bad_row
        return ChainCheck(ok=False, checked=position + 1, first_broken=sequence, problem=problem)
    for position, (row, event) in enumerate(zip(rows, events, strict=True)):
        # A renumbered row breaks no hash, but the next append would collide with it.
        if row[0] != event.sequence:
            moved = f"event {event.sequence} is stored under sequence {row[0]} (moved)"
            return ChainCheck(ok=False, checked=position + 1, first_broken=event.sequence, problem=moved)
    return check


def job_payload_json(payload: Mapping[str, Any]) -> str:
    """``payload`` as JSON text; ``ValueError`` when it is not a plain JSON object.

    Checked before any SQL runs so both backends refuse the same payloads with the same message.
    """
    if not isinstance(payload, Mapping):
        raise ValueError(f"a job payload must be a JSON object, got {type(payload).__name__}")
    try:
        return json.dumps(payload, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a job payload must be plain JSON: {exc}") from None


def check_lease(seconds: float) -> None:
    """Refuse a lease that could never protect a claim."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("a job lease must be a positive duration")


def check_finish(key: str, worker: str, row: Sequence[Any] | None) -> None:
    """Refuse to finish a job that does not exist (``row`` is ``None``) or another worker holds.

    ``row`` is the job's ``(worker, finished_at)``. A finished job passes: finishing is idempotent.
    """
    if row is None:
        raise StoreError(f"no job {key!r}")
    holder, finished_at = row[0], row[1]
    if finished_at is None and holder != worker:
        raise ConflictError(
            f"job {key!r} is held by worker {holder!r}, not {worker!r}: "
            "its lease ran out and it was claimed again"
        )


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (in the authority and in the query)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, hostinfo = netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:***@{hostinfo}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*/:")
        if (netloc, query) == (parts.netloc, parts.query):
            return url  # nothing secret; rebuilding would also turn sqlite:/// into sqlite:/
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        # Not even parseable as a URL: show only the scheme rather than risk echoing a secret.
        return url.split(":", 1)[0] + "://…"
