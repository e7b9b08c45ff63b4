"""The audit trail: append-only, hash-chained events. Pure: no I/O, no clock reads.

Every event carries the SHA-256 of its own content and the hash of the event before it, so
changing, deleting or reordering a stored event breaks the chain at that event, and
:func:`verify_chain` names the first place it breaks. The hash covers the canonical JSON of the
event (sorted keys, no whitespace, UTF-8, datetimes as ISO 8601 in UTC): an auditor can recompute
it from an exported line with nothing but ``json`` and ``hashlib``.

The chain shows tampering with what is stored; it cannot show that the newest events were cut
off, because nothing after them points back. Keep the last hash somewhere else (a ticket, the
SIEM) to anchor it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import field_validator

from bot.domain.models import Frozen

GENESIS_HASH = "0" * 64
"""The ``previous_hash`` of the first event."""

BOT_ACTOR_ID = "remediation-bot"
"""The ``actor_id`` of events the bot records on its own behalf (expiry, execution, intake)."""


class AuditEvent(Frozen):
    """One recorded fact: who did what to which case, request and identity, and when.

    ``payload`` holds JSON-safe details (reason text, refusal sentence, result summary, verified
    state, Graph request id); never secrets, because the trail is exported to auditors.
    Constructing an event does not check its hash: a tampered event must still load so that
    :func:`verify_chain` can report it.
    """

    sequence: int
    at: datetime
    actor_id: str
    actor_name: str
    kind: str
    case_id: str | None
    request_id: str | None
    identity: str | None
    payload: dict[str, Any]
    previous_hash: str
    hash: str

    @field_validator("at")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        # A naive time has no single meaning, so it cannot be hashed reproducibly.
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("an audit event's time must be timezone-aware")
        return value.astimezone(UTC)

    @field_validator("payload", mode="before")
    @classmethod
    def _json_payload(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise ValueError(f"the payload must be a JSON object, got {type(value).__name__}")
        return _json_safe(value)

    def hashed_fields(self) -> dict[str, Any]:
        """Every field the hash covers: all of them except ``hash``."""
        return self.model_dump(exclude={"hash"})

    def to_json(self) -> str:
        """The canonical JSON of every field, ``hash`` included: the stored and exported form."""
        return _canonical({**self.hashed_fields(), "hash": self.hash})


def _json_safe(value: Any, where: str = "payload") -> Any:
    """A plain-JSON copy of ``value``; ``ValueError`` naming the spot when it is not JSON.

    Accepted: dicts with string keys, lists and tuples (copied as lists), strings, integers,
    finite floats, booleans and ``None``. Anything else (a datetime, a set, an object, NaN) is
    refused rather than converted, so what is stored is exactly what was hashed and reads back
    equal. The copy also means a caller changing its own dict later cannot change the event.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)  # a StrEnum member becomes the plain string JSON would store
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} is not a JSON number")
        return float(value)
    if isinstance(value, Mapping):
        copied: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: key {key!r} is not a string; JSON object keys must be")
            copied[str.__str__(key)] = _json_safe(item, f"{where}[{key!r}]")
        return copied
    if isinstance(value, list | tuple):
        return [_json_safe(item, f"{where}[{index}]") for index, item in enumerate(value)]
    raise ValueError(
        f"{where}: a {type(value).__name__} is not JSON-serializable; "
        "convert it to a string, number, list or object first"
    )


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("cannot hash a naive datetime")
        return value.astimezone(UTC).isoformat()
    raise ValueError(f"cannot hash a {type(value).__name__}")


def _canonical(fields: Mapping[str, Any]) -> str:
    return json.dumps(
        fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_iso
    )


def event_hash(event_fields: Mapping[str, Any] | AuditEvent) -> str:
    """Hex SHA-256 of the canonical JSON of an event's fields, ``hash`` itself left out."""
    fields = event_fields.hashed_fields() if isinstance(event_fields, AuditEvent) else event_fields
    content = {key: value for key, value in fields.items() if key != "hash"}
    return hashlib.sha256(_canonical(content).encode("utf-8")).hexdigest()


def chain_next(
    previous: AuditEvent | None,
    *,
    at: datetime,
    actor_id: str,
    actor_name: str,
    kind: str,
    case_id: str | None = None,
    request_id: str | None = None,
    identity: str | None = None,
    payload: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """The event that follows ``previous`` (``None`` for the first), hashed and linked.

    ``identity`` is lower-cased so that ``history <upn>`` finds the events whatever case the
    responder types. Raises ``ValueError`` for a payload that is not plain JSON, a naive ``at``,
    or an empty ``actor_id`` or ``kind``.
    """
    if not actor_id:
        raise ValueError("an audit event needs an actor_id")
    if not kind:
        raise ValueError("an audit event needs a kind")
    # Checked here as well as by the model so the caller gets the plain ValueError message.
    content = _json_safe(dict(payload or {}))
    unsigned = AuditEvent(
        sequence=1 if previous is None else previous.sequence + 1,
        at=at,
        actor_id=actor_id,
        actor_name=actor_name,
        kind=kind,
        case_id=case_id,
        request_id=request_id,
        identity=None if identity is None else identity.lower(),
        payload=content,
        previous_hash=GENESIS_HASH if previous is None else previous.hash,
        hash="",
    )
    # Hash the validated model, not the arguments: ``at`` has been normalised to UTC by then.
    return unsigned.model_copy(update={"hash": event_hash(unsigned)})


@dataclass(frozen=True)
class ChainCheck:
    """The verdict of :func:`verify_chain`.

    ``checked`` counts the events examined (the broken one included); ``first_broken`` is the
    sequence number of the first event found broken and ``problem`` a sentence about it (both
    empty when ``ok``).
    """

    ok: bool
    checked: int
    first_broken: int | None = None
    problem: str = ""


def verify_chain(events: Iterable[AuditEvent]) -> ChainCheck:
    """Check ``events`` (in stored order) link up from the first; report the first break.

    Each event must hash to its ``hash`` (else it was modified), carry the next sequence number
    (else one was deleted or moved) and point at the previous event's hash.
    """
    stored = list(events)
    previous: AuditEvent | None = None
    for index, event in enumerate(stored):
        # Every event before this one checked out, so this is the sequence it must have.
        expected = index + 1
        checked = index + 1
        if event_hash(event) != event.hash:
            claimed = "" if event.sequence == expected else f" (stored with sequence {event.sequence})"
            return _broken(
                checked,
                expected,
                f"event {expected}{claimed}: its hash does not match its content (modified)",
            )
        if event.sequence != expected:
            return _broken(checked, event.sequence, _sequence_problem(stored, index, previous))
        wanted = GENESIS_HASH if previous is None else previous.hash
        if event.previous_hash != wanted:
            before = "the start of the chain" if previous is None else f"event {previous.sequence}"
            return _broken(
                checked,
                event.sequence,
                f"event {event.sequence}: previous_hash does not match {before} (deleted or reordered)",
            )
        previous = event
    return ChainCheck(ok=True, checked=len(stored))


def _broken(checked: int, sequence: int, problem: str) -> ChainCheck:
    return ChainCheck(ok=False, checked=checked, first_broken=sequence, problem=problem)


def _sequence_problem(stored: list[AuditEvent], index: int, previous: AuditEvent | None) -> str:
    event = stored[index]
    expected = index + 1
    where = "is the first event" if previous is None else f"follows event {previous.sequence}"
    if event.sequence < expected:
        return f"event {event.sequence} {where}: out of order (reordered or duplicated)"
    # A gap is a deletion, unless the missing event turns up further down.
    if any(later.sequence == expected for later in stored[index + 1 :]):
        return (
            f"event {event.sequence} {where}: out of order, event {expected} is stored after it (reordered)"
        )
    return f"event {event.sequence} {where}: sequence gap (deleted)"
