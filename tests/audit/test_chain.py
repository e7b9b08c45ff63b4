"""The pure audit chain: hashing, linking, and naming the first broken event."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from bot.domain.audit import (
    GENESIS_HASH,
    AuditEvent,
    AuditKey,
    chain_next,
    event_hash,
    verify_chain,
)

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
KEY = AuditKey.from_secret("a test audit key of at least thirty-two characters")
OTHER_KEY = AuditKey.from_secret("another test audit key, thirty-two characters long")
ALEX = "aaaaaaaa-0000-4000-8000-000000000001"


def _chain(count: int) -> list[AuditEvent]:
    events: list[AuditEvent] = []
    for index in range(count):
        events.append(
            chain_next(
                events[-1] if events else None,
                at=T0 + timedelta(minutes=index),
                actor_id=ALEX,
                actor_name="Alex Wilber",
                kind="request.opened",
                case_id="case-1",
                request_id=f"req-{index}",
                identity="adele.vance@contoso.com",
                payload={"reason": f"step {index}"},
            )
        )
    return events


def test_the_first_event_starts_from_the_genesis_hash() -> None:
    event = chain_next(None, at=T0, actor_id=ALEX, actor_name="Alex Wilber", kind="case.opened")

    assert event.sequence == 1
    assert event.previous_hash == GENESIS_HASH == "0" * 64
    assert event.payload == {}
    assert event.hash == event_hash(event) == event_hash(event.hashed_fields())


def test_the_hash_is_sha256_of_the_canonical_json_an_auditor_can_rebuild() -> None:
    event = chain_next(
        None,
        at=T0,
        actor_id=ALEX,
        actor_name="Zoë",
        kind="request.opened",
        payload={"reason": "sign-in from Tor", "b": [1, 2.5, None, True]},
    )
    line = json.loads(event.to_json())

    stated = line.pop("hash")
    canonical = json.dumps(line, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert '"at":"2025-03-01T09:00:00+00:00"' in canonical
    assert '"actor_name":"Zoë"' in canonical
    assert hashlib.sha256(canonical.encode()).hexdigest() == stated == event.hash


def test_each_event_points_at_the_one_before() -> None:
    events = _chain(4)

    assert [e.sequence for e in events] == [1, 2, 3, 4]
    for before, after in pairwise(events):
        assert after.previous_hash == before.hash
    assert verify_chain(events).ok
    assert verify_chain(events).checked == 4


def test_an_empty_chain_is_intact() -> None:
    check = verify_chain([])

    assert (check.ok, check.checked, check.first_broken, check.problem) == (True, 0, None, "")


def test_identity_is_stored_lower_case_and_times_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    event = chain_next(
        None,
        at=T0.astimezone(paris),
        actor_id=ALEX,
        actor_name="",
        kind="k",
        identity="Adele.Vance@Contoso.com",
    )

    assert event.identity == "adele.vance@contoso.com"
    assert event.at == T0
    assert event.at.utcoffset() == timedelta(0)


class Colour(StrEnum):
    RED = "red"


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        ({"when": T0}, "payload['when']: a datetime"),
        ({"ids": {"a", "b"}}, "payload['ids']: a set"),
        ({"x": object()}, "payload['x']: a object"),
        ({"nested": {"n": [1, float("nan")]}}, "payload['nested']['n'][1]: nan"),
        ({"big": float("inf")}, "payload['big']: inf"),
        ({"m": {1: "one"}}, "payload['m']: key 1 is not a string"),
        ({"raw": b"bytes"}, "payload['raw']: a bytes"),
    ],
)
def test_a_payload_that_is_not_plain_json_is_refused(payload: dict[str, Any], where: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(where)}"):
        chain_next(None, at=T0, actor_id=ALEX, actor_name="", kind="k", payload=payload)


def test_payload_is_copied_into_plain_json_types() -> None:
    mine: dict[str, Any] = {"state": Colour.RED, "list": ("a", 1), "inner": {"x": 1}}
    event = chain_next(None, at=T0, actor_id=ALEX, actor_name="", kind="k", payload=mine)
    mine["inner"]["x"] = 2  # the caller changing its own dict later must not change the event

    assert event.payload == {"state": "red", "list": ["a", 1], "inner": {"x": 1}}
    assert type(event.payload["state"]) is str
    assert verify_chain([event]).ok


@pytest.mark.parametrize(
    "bad",
    [
        {"at": datetime(2025, 3, 1, 9, 0)},  # naive
        {"actor_id": ""},
        {"kind": ""},
    ],
)
def test_incomplete_events_are_refused(bad: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {"at": T0, "actor_id": ALEX, "actor_name": "", "kind": "k", **bad}
    with pytest.raises(ValueError):
        chain_next(None, **arguments)


def test_a_modified_event_is_named() -> None:
    events = _chain(5)
    events[2] = events[2].model_copy(update={"payload": {"reason": "nothing to see"}})

    check = verify_chain(events)

    assert (check.ok, check.first_broken, check.checked) == (False, 3, 3)
    assert check.problem == "event 3: its hash does not match its content (modified)"


def test_a_modified_event_whose_hash_was_recomputed_breaks_the_next_link() -> None:
    events = _chain(5)
    forged = events[2].model_copy(update={"payload": {"reason": "nothing to see"}})
    events[2] = forged.model_copy(update={"hash": event_hash(forged)})

    check = verify_chain(events)

    assert check.first_broken == 4
    assert check.problem == (
        "event 4: previous_hash does not match event 3 (replaced and recomputed, deleted or reordered)"
    )


def test_a_deleted_event_is_named() -> None:
    events = _chain(5)
    del events[2]

    check = verify_chain(events)

    assert check.first_broken == 4
    assert check.problem == "event 4 follows event 2: sequence gap (deleted)"


def test_a_deleted_first_event_is_named() -> None:
    check = verify_chain(_chain(3)[1:])

    assert check.first_broken == 2
    assert check.problem == "event 2 is the first event: sequence gap (deleted)"


def test_reordered_events_are_named() -> None:
    events = _chain(5)
    events[2], events[3] = events[3], events[2]

    check = verify_chain(events)

    assert check.first_broken == 4
    assert check.problem == "event 4 follows event 2: out of order, event 3 is stored after it (reordered)"


def test_a_duplicated_event_is_named() -> None:
    events = _chain(3)
    events.insert(2, events[1])

    check = verify_chain(events)

    assert check.first_broken == 2
    assert check.problem == "event 2 follows event 2: out of order (reordered or duplicated)"


def test_a_renumbered_and_rehashed_chain_still_fails_at_the_link() -> None:
    # Deleting event 2 and renumbering 3 as 2 (with a fresh hash) keeps the sequence gap-free,
    # but its previous_hash still names the deleted event.
    events = _chain(3)
    moved = events[2].model_copy(update={"sequence": 2})
    events = [events[0], moved.model_copy(update={"hash": event_hash(moved)})]

    check = verify_chain(events)

    assert check.first_broken == 2
    assert "previous_hash does not match event 1" in check.problem


# -- properties -------------------------------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
PAYLOADS = st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4)
OPTIONAL_IDS = st.none() | st.text(min_size=1, max_size=12)
EVENT_ARGUMENTS = st.fixed_dictionaries(
    {
        "at": st.datetimes(
            min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
        ),
        "actor_id": st.text(min_size=1, max_size=12),
        "actor_name": st.text(max_size=12),
        "kind": st.sampled_from(["request.opened", "request.approved", "action.succeeded", "case.opened"]),
        "case_id": OPTIONAL_IDS,
        "request_id": OPTIONAL_IDS,
        "identity": OPTIONAL_IDS,
        "payload": PAYLOADS,
    }
)
FIELDS = list(AuditEvent.model_fields)


def _build(arguments: list[dict[str, Any]], key: AuditKey | None = None) -> list[AuditEvent]:
    events: list[AuditEvent] = []
    for args in arguments:
        events.append(chain_next(events[-1] if events else None, key=key, **args))
    return events


@st.composite
def _other_value(draw: st.DrawFn, field: str, old: Any) -> Any:
    """A value for ``field`` that differs from ``old`` (and so must change the hash)."""
    if field == "sequence":
        return draw(st.integers().filter(lambda n: n != old))
    if field == "at":
        return old + timedelta(microseconds=draw(st.integers(1, 10**12)) * draw(st.sampled_from([1, -1])))
    if field in ("previous_hash", "hash"):
        flipped = "1" if old[0] != "1" else "2"
        return flipped + old[1:]
    if field == "payload":
        new = draw(PAYLOADS)
        assume(new != old)
        return new
    if field in ("case_id", "request_id", "identity"):
        return None if old is not None else draw(st.text(max_size=12))
    if field == "key_id":
        return None if old is not None else draw(st.sampled_from([KEY.key_id, OTHER_KEY.key_id, "k-forged"]))
    return old + draw(st.text(min_size=1, max_size=4))


@given(st.lists(EVENT_ARGUMENTS, max_size=8), st.sampled_from([None, KEY]))
def test_any_chain_that_was_built_verifies(arguments: list[dict[str, Any]], key: AuditKey | None) -> None:
    events = _build(arguments, key)

    check = verify_chain(events, [KEY])

    assert check.ok and check.checked == len(events)
    assert check.keyed == (len(events) if key else 0)


@given(st.lists(EVENT_ARGUMENTS, min_size=1, max_size=8), st.sampled_from([None, KEY]))
def test_events_survive_their_json_form(arguments: list[dict[str, Any]], key: AuditKey | None) -> None:
    events = _build(arguments, key)

    reread = [AuditEvent.model_validate_json(event.to_json()) for event in events]

    assert reread == events
    assert verify_chain(reread, [KEY]).ok


@given(
    st.lists(EVENT_ARGUMENTS, min_size=1, max_size=8),
    st.sampled_from(FIELDS),
    st.sampled_from([None, KEY]),
    st.data(),
)
def test_changing_any_field_of_any_event_breaks_the_chain_there(
    arguments: list[dict[str, Any]], field: str, key: AuditKey | None, data: st.DataObject
) -> None:
    events = _build(arguments, key)
    index = data.draw(st.integers(0, len(events) - 1))
    old = getattr(events[index], field)
    new = data.draw(_other_value(field, old))
    events[index] = events[index].model_copy(update={field: new})

    check = verify_chain(events, [KEY])

    assert not check.ok
    assert check.first_broken == index + 1
    assert check.problem.startswith(f"event {index + 1}")
