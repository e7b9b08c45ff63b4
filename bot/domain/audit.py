"""The audit trail: append-only, chained events keyed with a secret. Pure: no I/O, no clock reads.

Every event carries a hash of its own content and the hash of the event before it, so changing,
deleting or reordering a stored event breaks the chain at that event, and :func:`verify_chain`
names the first place it breaks. The hash covers the canonical JSON of the event (sorted keys, no
whitespace, UTF-8, datetimes as ISO 8601 in UTC).

**Keyed chain.** An event written with an :class:`AuditKey` carries that key's id (``key_id``)
and its hash is HMAC-SHA256 of the canonical JSON under the key. The key lives in the bot's
configuration (``AUDIT_HMAC_KEY``, from Key Vault), never with the events, so someone who can
edit the database but does not hold the key cannot recompute the hashes after an edit. Events
written before a key was configured have no ``key_id`` and a plain SHA-256 hash (the first
scheme, still verifiable with nothing but ``json`` and ``hashlib``); the first event under a new
key (the first key, or the next one after a rotation) is an ``audit.key_changed`` event naming the
old and new key ids. An unkeyed event after a keyed one, or a key change that was not recorded,
is a rewrite.

**Checkpoints.** A chain cannot show by itself that its newest events were cut off, or that an
attacker holding the key rewrote it: nothing after the end points back. A :class:`Checkpoint`
(sequence number and head hash, authenticated with the key) published somewhere else — the
incident thread, a ticket, the SIEM — anchors it: :func:`verify_chain` given checkpoints reports
a trail that ends before one (truncated), holds no events at all (deleted), or holds a different
event at a checkpoint's sequence (rewritten).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import Field, field_validator, model_validator

from bot.domain.models import Frozen

GENESIS_HASH = "0" * 64
"""The ``previous_hash`` of the first event."""

BOT_ACTOR_ID = "remediation-bot"
"""The ``actor_id`` of events the bot records on its own behalf (expiry, execution, intake)."""

KEY_CHANGED = "audit.key_changed"
"""The kind of the event that starts a key: its payload names ``key_id`` and ``previous_key_id``."""

SANDBOX_AUDIT_SECRET = "remediation-bot sandbox audit key: public, for the local demo and tests only"
"""The fixed key sandbox mode uses when ``AUDIT_HMAC_KEY`` is not set. It is published here, so
events keyed with it are not tamper-evident: anyone can recompute them."""

_KEY_ID_LABEL = b"remediation-bot audit key id"
_CHECKPOINT_LABEL = "remediation-bot audit checkpoint"
MIN_HASH_CHARS = 16
"""The shortest hash or mac prefix a checkpoint may publish (64 bits)."""


@dataclass(frozen=True)
class AuditKey:
    """A key for the audit chain: the secret and the id recorded with every event it keys.

    The id is derived from the secret (HMAC of a fixed label), so the same secret always has the
    same id, a different secret a different one, and the id reveals nothing usable about the
    secret. ``repr`` shows only the id.
    """

    key_id: str
    secret: bytes = field(repr=False)

    @classmethod
    def from_secret(cls, secret: str | bytes) -> AuditKey:
        """The key for ``secret`` (a string is taken as UTF-8); ``ValueError`` when empty."""
        raw = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
        if not raw:
            raise ValueError("an audit key cannot be empty")
        key_id = "k-" + hmac.new(raw, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:12]
        return cls(key_id=key_id, secret=raw)

    def mac(self, message: str) -> str:
        """Hex HMAC-SHA256 of ``message`` (UTF-8) under this key."""
        return hmac.new(self.secret, message.encode("utf-8"), hashlib.sha256).hexdigest()


SANDBOX_AUDIT_KEY = AuditKey.from_secret(SANDBOX_AUDIT_SECRET)
"""The public sandbox key (see :data:`SANDBOX_AUDIT_SECRET`)."""


class AuditEvent(Frozen):
    """One recorded fact: who did what to which case, request and identity, and when.

    ``payload`` holds JSON-safe details (reason text, refusal sentence, result summary, verified
    state, Graph request id); never secrets, because the trail is exported to auditors.
    ``key_id`` names the key whose HMAC ``hash`` is (``None``: a plain SHA-256, the scheme of
    events written before a key was configured; such events keep their original JSON form).
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
    key_id: str | None = None

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
        """Every field the hash covers: all of them except ``hash`` (and an absent ``key_id``)."""
        return self.model_dump(exclude={"hash", "key_id"} if self.key_id is None else {"hash"})

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


def event_hash(event_fields: Mapping[str, Any] | AuditEvent, key: AuditKey | None = None) -> str:
    """The hash of an event's fields (``hash`` itself left out): hex HMAC-SHA256 under ``key``,
    or hex SHA-256 without one (the scheme of events written before a key was configured)."""
    fields = event_fields.hashed_fields() if isinstance(event_fields, AuditEvent) else event_fields
    content = {
        name: value
        for name, value in fields.items()
        if name != "hash" and not (name == "key_id" and value is None)
    }
    text = _canonical(content)
    if key is None:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()
    return key.mac(text)


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
    key: AuditKey | None = None,
) -> AuditEvent:
    """The event that follows ``previous`` (``None`` for the first), hashed and linked.

    With ``key`` the event records the key's id and its hash is the HMAC under the key; without
    one it is a plain SHA-256 (see :func:`chain_append`, which also records a change of key).
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
        key_id=None if key is None else key.key_id,
    )
    # Hash the validated model, not the arguments: ``at`` has been normalised to UTC by then.
    return unsigned.model_copy(update={"hash": event_hash(unsigned, key)})


def chain_append(previous: AuditEvent | None, key: AuditKey | None, **event: Any) -> list[AuditEvent]:
    """The events to store after ``previous`` for one new event (``event``: :func:`chain_next`'s
    keyword arguments): the event itself, preceded by an ``audit.key_changed`` event when
    ``key`` is not the key of ``previous`` (the first keyed event, or the first after a rotation).

    Raises ``ValueError`` when ``previous`` is keyed and ``key`` is ``None``: an unkeyed event
    after a keyed one would read as a rewrite, so it is never written.
    """
    events: list[AuditEvent] = []
    key_id = None if key is None else key.key_id
    if previous is not None and previous.key_id != key_id:
        if key is None:
            raise ValueError(
                f"the audit trail is keyed (its last event uses key {previous.key_id}) and no key was "
                "given: an unkeyed event would break it"
            )
        previous = chain_next(
            previous,
            at=event["at"],
            actor_id=BOT_ACTOR_ID,
            actor_name="remediation-bot",
            kind=KEY_CHANGED,
            payload={"key_id": key.key_id, "previous_key_id": previous.key_id},
            key=key,
        )
        events.append(previous)
    events.append(chain_next(previous, key=key, **event))
    return events


# -- checkpoints ----------------------------------------------------------------------------------

_HEX = re.compile(r"[0-9a-f]+")


class Checkpoint(Frozen):
    """The head of the trail as published outside the store: ``sequence`` and its ``hash``.

    ``hash`` may be shortened to a prefix (at least :data:`MIN_HASH_CHARS` hex characters: the
    thread shows 16). ``key_id`` and ``mac`` authenticate it: ``mac`` is the HMAC under that key
    of ``"remediation-bot audit checkpoint:<sequence>:<hash>:<key_id>"`` with ``hash`` exactly as
    published, possibly shortened too. ``at`` is when it was taken (informational, not covered by
    the mac). A checkpoint without a mac is taken on the word of whoever gives it.
    """

    sequence: int = Field(ge=1)
    hash: str
    key_id: str | None = None
    mac: str | None = None
    at: datetime | None = None

    @field_validator("hash", "mac")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.lower()
        if not _HEX.fullmatch(value) or not MIN_HASH_CHARS <= len(value) <= 64:
            raise ValueError(f"must be {MIN_HASH_CHARS} to 64 hexadecimal characters")
        return value

    @model_validator(mode="after")
    def _mac_names_its_key(self) -> Checkpoint:
        if self.mac is not None and self.key_id is None:
            raise ValueError("a checkpoint's mac needs the key_id it was made with")
        return self

    def text(self) -> str:
        """``Audit checkpoint #123 · 9f2c4e1a7b3d5f60 · k-… · mac 3e5a…``: the published form."""
        line = f"Audit checkpoint #{self.sequence} · {self.hash}"
        if self.key_id is not None and self.mac is not None:
            line += f" · {self.key_id} · mac {self.mac}"
        return line


def checkpoint_mac(key: AuditKey, sequence: int, hash_text: str) -> str:
    """Hex HMAC-SHA256 authenticating a checkpoint of ``sequence`` publishing ``hash_text``."""
    return key.mac(f"{_CHECKPOINT_LABEL}:{sequence}:{hash_text}:{key.key_id}")


def make_checkpoint(
    head: AuditEvent, key: AuditKey | None, *, at: datetime, short: bool = False
) -> Checkpoint:
    """The checkpoint of ``head``, authenticated with ``key`` when given.

    ``short`` publishes the first 16 hex characters of the hash and of the mac (what the thread
    shows); otherwise both are whole.
    """
    chars = MIN_HASH_CHARS if short else 64
    published = head.hash[:chars]
    if key is None:
        return Checkpoint(sequence=head.sequence, hash=published, at=at)
    return Checkpoint(
        sequence=head.sequence,
        hash=published,
        key_id=key.key_id,
        mac=checkpoint_mac(key, head.sequence, published)[:chars],
        at=at,
    )


_TEXT_FORM = re.compile(
    r"#?(?P<sequence>\d+)\s*[·:]\s*(?P<hash>[0-9a-fA-F]{16,64})(?![0-9a-fA-F])"
    r"(?:\s*[·:]\s*(?P<key_id>k-[0-9a-f]{12})\s*[·:]\s*(?:mac\s+)?(?P<mac>[0-9a-fA-F]{16,64})(?![0-9a-fA-F]))?"
)


def parse_checkpoint(text: str) -> Checkpoint:
    """A checkpoint from its published forms; ``ValueError`` saying what is wrong.

    Accepted: the line the bot posts (``Audit checkpoint #123 · 9f2c… · k-… · mac 3e5a…``, also
    with text around it), ``SEQ:HASH`` or ``SEQ:HASH:KEY_ID:MAC``, and the JSON object
    ``remediation-bot audit checkpoint --json`` prints.
    """
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            return Checkpoint.model_validate_json(stripped)
        except ValueError as exc:
            raise ValueError(f"not a checkpoint: {_first_error(exc)}") from None
    found = _TEXT_FORM.search(stripped)
    if found is None:
        raise ValueError(
            "not a checkpoint: expected SEQ:HASH (at least 16 hex characters of the hash), "
            "SEQ:HASH:KEY_ID:MAC, or the bot's 'Audit checkpoint #SEQ · HASH · KEY_ID · mac MAC' line"
        )
    try:
        return Checkpoint(
            sequence=int(found["sequence"]),
            hash=found["hash"],
            key_id=found["key_id"],
            mac=found["mac"],
        )
    except ValueError as exc:
        raise ValueError(f"not a checkpoint: {_first_error(exc)}") from None


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        return f"{where}: {first.get('msg', '')}" if where else str(first.get("msg", ""))
    return str(exc)


# -- verification ---------------------------------------------------------------------------------


class Break(StrEnum):
    """What kind of break :func:`verify_chain` found (the CLI's exit code depends on it)."""

    MODIFIED = "modified"
    """An event's content no longer matches its hash (edited in place), or a row was altered."""
    DELETED = "deleted"
    """A sequence gap, or no events at all although a checkpoint was published."""
    REORDERED = "reordered"
    """Events out of order, duplicated, or stored under another sequence number."""
    RECOMPUTED = "recomputed"
    """Hashes were recomputed to hide an edit: an HMAC that does not match under the event's key
    (recomputed without it), an unkeyed event after a keyed one, a key change that was not
    recorded, or links that no longer join."""
    TRUNCATED = "truncated"
    """The trail ends before a published checkpoint: its newest events were cut off."""
    REWRITTEN = "rewritten"
    """The chain holds together but differs from a published checkpoint: rewritten by someone
    holding the key (or, for unkeyed events, by anyone)."""
    UNVERIFIABLE = "unverifiable"
    """The check could not be made: an event's key or a checkpoint's key was not given, or a
    checkpoint is not authentic."""


@dataclass(frozen=True)
class ChainCheck:
    """The verdict of :func:`verify_chain`.

    ``checked`` counts the events examined (the broken one included); ``first_broken`` is the
    sequence number of the first event found broken, ``problem`` a sentence about it and
    ``kind`` what it shows (all empty when ``ok``). For an intact trail, ``keyed`` counts the
    events under a key (``public_key`` of them under the public sandbox key), ``key_ids`` lists
    the keys in order of first use and ``checkpoints`` counts the checkpoints it matched.
    """

    ok: bool
    checked: int
    first_broken: int | None = None
    problem: str = ""
    kind: Break | None = None
    keyed: int = 0
    public_key: int = 0
    key_ids: tuple[str, ...] = ()
    checkpoints: int = 0


def verify_chain(
    events: Iterable[AuditEvent], keys: Iterable[AuditKey] = (), checkpoints: Iterable[Checkpoint] = ()
) -> ChainCheck:
    """Check ``events`` (in stored order) link up from the first; report the first break.

    ``keys`` are the keys the trail may use (the current one and earlier ones after a rotation;
    the public sandbox key is always known). Each event must hash to its ``hash`` under its key
    (else it was modified, or recomputed without the key), carry the next sequence number (else
    one was deleted or moved), keep or record a change of its predecessor's key, and point at
    the previous event's hash. Each of ``checkpoints`` must be authentic (when it carries a mac)
    and match the event at its sequence; a trail that ends before one was truncated.
    """
    stored = list(events)
    ring = {SANDBOX_AUDIT_KEY.key_id: SANDBOX_AUDIT_KEY, **{key.key_id: key for key in keys}}
    marks = sorted(checkpoints, key=lambda mark: mark.sequence)
    for mark in marks:
        problem = _unauthentic(mark, ring)
        if problem:
            return _broken(0, mark.sequence, Break.UNVERIFIABLE, problem)
    published: dict[int, list[Checkpoint]] = {}
    for mark in marks:
        published.setdefault(mark.sequence, []).append(mark)
    previous: AuditEvent | None = None
    keyed = public = matched = 0
    key_ids: list[str] = []
    for index, event in enumerate(stored):
        # Every event before this one checked out, so this is the sequence it must have.
        expected = index + 1
        found = (
            _hash_problem(stored, index, previous, ring)
            or _sequence_problem(stored, index, previous)
            or _key_change_problem(event, previous)
            or _link_problem(event, previous)
            or _checkpoint_problem(event, published.get(event.sequence, []))
        )
        if found is not None:
            kind, problem = found
            where = expected if kind is Break.MODIFIED else event.sequence
            return _broken(expected, where, kind, problem)
        matched += len(published.get(event.sequence, []))
        if event.key_id is not None:
            keyed += 1
            public += event.key_id == SANDBOX_AUDIT_KEY.key_id
            if event.key_id not in key_ids:
                key_ids.append(event.key_id)
        previous = event
    if marks and marks[-1].sequence > len(stored):
        last = marks[-1].sequence
        if not stored:
            problem = (
                f"the trail holds no events, but checkpoint #{last} was published: every event was deleted"
            )
            return _broken(0, 1, Break.DELETED, problem)
        end = len(stored)
        cut = f"event {end + 1}" if end + 1 == last else f"events {end + 1} to {last}"
        problem = (
            f"the trail ends at event {end}, but checkpoint #{last} was published: "
            f"the newest events (at least {cut}) were cut off (truncated)"
        )
        return _broken(end, end + 1, Break.TRUNCATED, problem)
    return ChainCheck(
        ok=True,
        checked=len(stored),
        keyed=keyed,
        public_key=public,
        key_ids=tuple(key_ids),
        checkpoints=matched,
    )


Found = tuple[Break, str] | None


def _broken(checked: int, sequence: int, kind: Break, problem: str) -> ChainCheck:
    return ChainCheck(ok=False, checked=checked, first_broken=sequence, problem=problem, kind=kind)


def _unauthentic(mark: Checkpoint, ring: Mapping[str, AuditKey]) -> str:
    """Why ``mark`` cannot be trusted as the bot's, or ``""`` (no mac: taken as given)."""
    if mark.mac is None:
        return ""
    key = ring.get(mark.key_id or "")
    if key is None:
        return f"checkpoint #{mark.sequence} is authenticated with key {mark.key_id}, which was not given"
    wanted = checkpoint_mac(key, mark.sequence, mark.hash)[: len(mark.mac)]
    if not hmac.compare_digest(wanted, mark.mac):
        return (
            f"checkpoint #{mark.sequence} is not authentic: its mac does not match under key "
            f"{mark.key_id} (mistyped, or not published by the bot)"
        )
    return ""


def _hash_problem(
    stored: Sequence[AuditEvent], index: int, previous: AuditEvent | None, ring: Mapping[str, AuditKey]
) -> Found:
    event = stored[index]
    expected = index + 1
    name = f"event {expected}" + (
        "" if event.sequence == expected else f" (stored with sequence {event.sequence})"
    )
    key: AuditKey | None = None
    if event.key_id is not None:
        key = ring.get(event.key_id)
        if key is None:
            if previous is not None and previous.key_id != event.key_id and event.kind != KEY_CHANGED:
                return Break.RECOMPUTED, (
                    f"{name} is keyed with key {event.key_id}, unlike event {previous.sequence} before it "
                    f"({_key_name(previous.key_id)}), and no key change was recorded: "
                    "rewritten under another key (recomputed)"
                )
            return Break.UNVERIFIABLE, f"{name} is keyed with key {event.key_id}, which was not given"
    if hmac.compare_digest(event_hash(event, key), event.hash):
        return None
    if key is not None and event.hash == event_hash(event):
        return Break.RECOMPUTED, (
            f"{name}: its hash is a plain SHA-256, not the HMAC under key {key.key_id}: "
            "edited and recomputed without the key"
        )
    if key is not None and index + 1 < len(stored):
        following = stored[index + 1]
        following_key = ring.get(following.key_id or "")
        if (
            following.previous_hash == event.hash
            and following_key is not None
            and event_hash(following, following_key) != following.hash
        ):
            return Break.RECOMPUTED, (
                f"{name}: its hash does not match its content under key {key.key_id}, and the events "
                "after it were re-linked to it: edited, and the later hashes recomputed without the key"
            )
    return Break.MODIFIED, f"{name}: its hash does not match its content (modified)"


def _sequence_problem(stored: Sequence[AuditEvent], index: int, previous: AuditEvent | None) -> Found:
    event = stored[index]
    expected = index + 1
    if event.sequence == expected:
        return None
    where = "is the first event" if previous is None else f"follows event {previous.sequence}"
    if event.sequence < expected:
        return Break.REORDERED, f"event {event.sequence} {where}: out of order (reordered or duplicated)"
    # A gap is a deletion, unless the missing event turns up further down.
    if any(later.sequence == expected for later in stored[index + 1 :]):
        return Break.REORDERED, (
            f"event {event.sequence} {where}: out of order, event {expected} is stored after it (reordered)"
        )
    return Break.DELETED, f"event {event.sequence} {where}: sequence gap (deleted)"


def _key_name(key_id: str | None) -> str:
    if key_id is None:
        return "no key"
    if key_id == SANDBOX_AUDIT_KEY.key_id:
        return f"the public sandbox key {key_id}"
    return f"key {key_id}"


def _key_change_problem(event: AuditEvent, previous: AuditEvent | None) -> Found:
    if previous is None or previous.key_id == event.key_id:
        return None
    before = f"event {previous.sequence} before it ({_key_name(previous.key_id)})"
    if event.key_id is None:
        return Break.RECOMPUTED, (
            f"event {event.sequence} is not keyed, but {before} is: "
            "the trail was rewritten and recomputed without the key"
        )
    if event.key_id == SANDBOX_AUDIT_KEY.key_id and previous.key_id is not None:
        return Break.RECOMPUTED, (
            f"event {event.sequence} is keyed with the public sandbox key after {before}: "
            "rewritten and recomputed without the key"
        )
    recorded = event.kind == KEY_CHANGED and event.payload == {
        "key_id": event.key_id,
        "previous_key_id": previous.key_id,
    }
    if not recorded:
        return Break.RECOMPUTED, (
            f"event {event.sequence} uses {_key_name(event.key_id)}, unlike {before}, and no key change "
            "was recorded: rewritten under another key (recomputed)"
        )
    return None


def _link_problem(event: AuditEvent, previous: AuditEvent | None) -> Found:
    wanted = GENESIS_HASH if previous is None else previous.hash
    if event.previous_hash == wanted:
        return None
    before = "the start of the chain" if previous is None else f"event {previous.sequence}"
    return Break.RECOMPUTED, (
        f"event {event.sequence}: previous_hash does not match {before} "
        "(replaced and recomputed, deleted or reordered)"
    )


def _checkpoint_problem(event: AuditEvent, marks: Sequence[Checkpoint]) -> Found:
    for mark in marks:
        if event.hash.startswith(mark.hash):
            continue
        if event.key_id is None or event.key_id == SANDBOX_AUDIT_KEY.key_id:
            how = "; its events are not keyed with a secret, so no key was needed"
        else:
            how = f" by someone holding key {event.key_id}"
        return Break.REWRITTEN, (
            f"event {event.sequence} is not the one checkpoint #{mark.sequence} published "
            f"({mark.hash[:MIN_HASH_CHARS]}…, stored {event.hash[:MIN_HASH_CHARS]}…): "
            f"the trail up to it was rewritten after the checkpoint{how}"
        )
    return None
