"""Row-level helpers shared by the SQL stores: audit rows, job payloads, store URLs.

Both :class:`~bot.store.sqlite.SqliteStore` and :class:`~bot.store.postgres.PostgresStore` keep
the audit trail as one table whose ``data`` column holds the whole hash-chained event and whose
other columns exist for queries. Chaining the next event under the store's key, checking those
columns against the data, deciding which break to report first and taking a checkpoint of the
head must not differ between backends, so they live here once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bot.domain.audit import (
    AuditEvent,
    AuditKey,
    Break,
    ChainCheck,
    Checkpoint,
    chain_append,
    make_checkpoint,
    verify_chain,
)
from bot.domain.models import ActionRequest, RequestState
from bot.errors import ConflictError, StoreError

# The audit_events columns, in the order every audit query selects them.
AUDIT_COLUMNS = ("sequence", "at", "actor_id", "kind", "case_id", "request_id", "identity", "data", "hash")

AuditRowOf = Callable[[AuditEvent], tuple[Any, ...]]
"""A backend's stored form of an event, in :data:`AUDIT_COLUMNS` order (e.g. ``at`` as text or timestamp)."""

LAST_AUDIT_EVENT = "SELECT sequence, data FROM audit_events ORDER BY sequence DESC LIMIT 1"
"""The head of the trail, as ``(sequence, data)`` (what :func:`next_audit_events` and
:func:`audit_checkpoint` take)."""


def decode_audit(sequence: int, data: str) -> AuditEvent:
    """The event a row's ``data`` holds; :class:`StoreError` when it no longer parses."""
    try:
        return AuditEvent.model_validate_json(data)
    except ValueError as exc:  # pydantic's ValidationError
        raise StoreError(
            f"audit event {sequence} cannot be read back, its stored data was altered; "
            "run `remediation-bot audit verify`"
        ) from exc


def next_audit_events(
    last: Sequence[Any] | None, key: AuditKey | None, event: Mapping[str, Any]
) -> list[AuditEvent]:
    """The events to insert after the head row ``last`` for one new ``event`` (keyword arguments
    of :func:`~bot.domain.audit.chain_next`), keyed with ``key``: the event, preceded by an
    ``audit.key_changed`` event when the key differs from the head's.

    :class:`StoreError` when the trail is keyed and the store has no key (an unkeyed event would
    read as a rewrite); ``ValueError`` for a payload that is not plain JSON.
    """
    previous = None if last is None else decode_audit(last[0], last[1])
    if previous is not None and previous.key_id is not None and key is None:
        raise StoreError(
            f"the audit trail is keyed (its last event uses key {previous.key_id}) but this store was "
            "opened without an audit key: set AUDIT_HMAC_KEY; nothing was recorded"
        )
    return chain_append(previous, key, **event)


def audit_checkpoint(
    last: Sequence[Any] | None, key: AuditKey | None, *, at: datetime, short: bool = False
) -> Checkpoint | None:
    """The checkpoint of the head row ``last`` under ``key`` (``None`` for an empty trail)."""
    if last is None:
        return None
    return make_checkpoint(decode_audit(last[0], last[1]), key, at=at, short=short)


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


def verify_audit_rows(
    rows: Sequence[Sequence[Any]],
    row_of: AuditRowOf,
    keys: Iterable[AuditKey] = (),
    checkpoints: Iterable[Checkpoint] = (),
) -> ChainCheck:
    """Verify stored audit rows (in sequence order) under ``keys`` against ``checkpoints``, and
    name the first break.

    Beyond :func:`~bot.domain.audit.verify_chain` this catches what only the rows show: data
    that no longer parses, query columns edited apart from the data (which would hide events
    from ``history``) and rows renumbered, so an altered row is reported instead of crashing the
    check. The break at the earliest row wins; at the same row the chain's account (modified,
    deleted, reordered, recomputed) says more than "a column differs".
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
    marks = list(checkpoints)
    if len(events) < len(rows):
        # Only what could be read is checked; the unreadable row is the break, not a truncation.
        marks = [mark for mark in marks if mark.sequence <= len(events)]
    check = verify_chain(events, keys, marks)
    found: list[tuple[int, int, ChainCheck]] = []  # (stored position, precedence, verdict)
    if not check.ok:
        found.append((len(events) if check.kind is Break.TRUNCATED else check.checked - 1, 0, check))
    if bad_row is not None:
        position, sequence, problem = bad_row
        modified = ChainCheck(
            ok=False, checked=position + 1, first_broken=sequence, problem=problem, kind=Break.MODIFIED
        )
        found.append((position, 1, modified))
    for position, (row, event) in enumerate(zip(rows, events, strict=False)):
        # A renumbered row breaks no hash, but the next append would collide with it.
        if row[0] != event.sequence:
            moved = f"event {event.sequence} is stored under sequence {row[0]} (moved)"
            verdict = ChainCheck(
                ok=False,
                checked=position + 1,
                first_broken=event.sequence,
                problem=moved,
                kind=Break.REORDERED,
            )
            found.append((position, 2, verdict))
            break
    if found:
        return min(found, key=lambda item: item[:2])[2]
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


RECHECKED_STATES = (RequestState.SUCCEEDED, RequestState.FAILED)
"""Finished requests whose result may still await a re-check (a later read-back)."""


def recheck_due(request: ActionRequest) -> datetime | None:
    """When the sweep should re-check ``request``'s result: the ``recheck_at`` column's value."""
    if request.state not in RECHECKED_STATES or request.result is None:
        return None
    return request.result.recheck_at
