"""The keyed chain and its checkpoints, pure: what each kind of tampering looks like to verify_chain.

The attacker here can rewrite any stored event (the database), and either does not hold the
audit key (the usual case: it lives in Key Vault) or does. Each test builds the tampered trail
the way that attacker would and checks the verdict names it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.domain.audit import (
    KEY_CHANGED,
    MIN_HASH_CHARS,
    SANDBOX_AUDIT_KEY,
    AuditEvent,
    AuditKey,
    Break,
    Checkpoint,
    chain_append,
    chain_next,
    checkpoint_mac,
    event_hash,
    make_checkpoint,
    parse_checkpoint,
    verify_chain,
)

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
KEY = AuditKey.from_secret("the bot's audit key, thirty-two characters or more")
NEW_KEY = AuditKey.from_secret("the next audit key after a rotation, also 32+ chars")
GUESS = AuditKey.from_secret("what an attacker without the key would have to guess")


def _fields(index: int) -> dict[str, Any]:
    return {
        "at": T0 + timedelta(minutes=index),
        "actor_id": "aaaaaaaa-0000-4000-8000-000000000001",
        "actor_name": "Alex Wilber",
        "kind": "request.opened",
        "case_id": "case-1",
        "request_id": f"req-{index}",
        "identity": "adele.vance@contoso.com",
        "payload": {"reason": f"step {index}"},
    }


def _append(events: list[AuditEvent], key: AuditKey | None, count: int) -> list[AuditEvent]:
    for _ in range(count):
        events += chain_append(events[-1] if events else None, key, **_fields(len(events)))
    return events


def _trail(count: int = 6, key: AuditKey | None = KEY) -> list[AuditEvent]:
    return _append([], key, count)


def _rehash(events: list[AuditEvent], start: int, key: AuditKey | None, *, keep_key_id: bool = True) -> None:
    """Recompute every hash from index ``start`` on and re-link the chain, as an attacker would:
    with ``key`` (a guess, the real key, or ``None`` for plain SHA-256)."""
    for index in range(start, len(events)):
        previous_hash = events[index - 1].hash if index else events[index].previous_hash
        key_id = events[index].key_id if keep_key_id else (None if key is None else key.key_id)
        event = events[index].model_copy(
            update={"previous_hash": previous_hash, "key_id": key_id, "hash": ""}
        )
        events[index] = event.model_copy(update={"hash": event_hash(event, key)})


def _edit(events: list[AuditEvent], index: int) -> None:
    events[index] = events[index].model_copy(update={"payload": {"reason": "nothing to see here"}})


# -- the keyed chain ----------------------------------------------------------------------------


def test_a_keyed_event_records_the_key_id_and_its_hash_is_the_hmac_an_auditor_can_rebuild() -> None:
    event = chain_next(None, key=KEY, **_fields(0))
    line = json.loads(event.to_json())

    stated = line.pop("hash")
    canonical = json.dumps(line, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    secret = b"the bot's audit key, thirty-two characters or more"
    assert line["key_id"] == KEY.key_id
    assert hmac.new(secret, canonical.encode(), hashlib.sha256).hexdigest() == stated == event.hash
    assert hashlib.sha256(canonical.encode()).hexdigest() != stated, "not recomputable without the key"


def test_the_key_id_is_derived_from_the_secret_and_the_secret_is_never_shown() -> None:
    again = AuditKey.from_secret("the bot's audit key, thirty-two characters or more")

    assert again.key_id == KEY.key_id != NEW_KEY.key_id
    assert KEY.key_id.startswith("k-") and len(KEY.key_id) == 14
    assert "thirty-two" not in repr(KEY) and KEY.key_id in repr(KEY)
    with pytest.raises(ValueError, match="empty"):
        AuditKey.from_secret("")


def test_an_unkeyed_trail_continues_under_a_key_and_the_first_keyed_event_records_the_switch() -> None:
    events = _trail(3, key=None)
    assert [json.loads(e.to_json()).get("key_id", "absent") for e in events] == ["absent"] * 3

    _append(events, KEY, 2)

    switch = events[3]
    assert (switch.sequence, switch.kind, switch.key_id) == (4, KEY_CHANGED, KEY.key_id)
    assert switch.payload == {"key_id": KEY.key_id, "previous_key_id": None}
    assert [e.key_id for e in events] == [None, None, None, KEY.key_id, KEY.key_id, KEY.key_id]
    check = verify_chain(events, [KEY])
    assert check.ok and (check.checked, check.keyed, check.key_ids) == (6, 3, (KEY.key_id,))


def test_a_rotation_is_recorded_and_verifies_with_the_old_and_the_new_key() -> None:
    events = _append(_trail(3), NEW_KEY, 2)

    assert events[3].kind == KEY_CHANGED
    assert events[3].payload == {"key_id": NEW_KEY.key_id, "previous_key_id": KEY.key_id}
    assert verify_chain(events, [NEW_KEY, KEY]).key_ids == (KEY.key_id, NEW_KEY.key_id)
    without_old = verify_chain(events, [NEW_KEY])
    assert (without_old.kind, without_old.first_broken) == (Break.UNVERIFIABLE, 1)
    assert without_old.problem == f"event 1 is keyed with key {KEY.key_id}, which was not given"


def test_an_unkeyed_event_is_never_appended_after_a_keyed_one() -> None:
    events = _trail(2)

    with pytest.raises(ValueError, match=f"keyed \\(its last event uses key {KEY.key_id}\\)"):
        chain_append(events[-1], None, **_fields(2))


def test_the_sandbox_key_is_public_and_counted() -> None:
    events = _trail(2, key=SANDBOX_AUDIT_KEY)

    check = verify_chain(events)  # no key given: the sandbox key is always known

    assert check.ok and check.public_key == 2


# -- tampering without the key ------------------------------------------------------------------


def test_an_edit_in_place_is_modified() -> None:
    events = _trail()
    _edit(events, 2)

    check = verify_chain(events, [KEY])

    assert (check.kind, check.first_broken) == (Break.MODIFIED, 3)
    assert check.problem == "event 3: its hash does not match its content (modified)"


def test_an_edit_with_every_later_hash_recomputed_as_plain_sha256_is_named() -> None:
    events = _trail()
    _edit(events, 2)
    _rehash(events, 2, None)

    check = verify_chain(events, [KEY])

    assert (check.kind, check.first_broken) == (Break.RECOMPUTED, 3)
    assert check.problem == (
        f"event 3: its hash is a plain SHA-256, not the HMAC under key {KEY.key_id}: "
        "edited and recomputed without the key"
    )


def test_an_edit_with_every_later_hash_recomputed_under_a_guessed_key_is_named() -> None:
    events = _trail()
    _edit(events, 2)
    _rehash(events, 2, GUESS)

    check = verify_chain(events, [KEY])

    assert (check.kind, check.first_broken) == (Break.RECOMPUTED, 3)
    assert check.problem == (
        f"event 3: its hash does not match its content under key {KEY.key_id}, and the events after it "
        "were re-linked to it: edited, and the later hashes recomputed without the key"
    )


def test_stripping_the_key_ids_and_recomputing_from_the_middle_is_named() -> None:
    events = _trail()
    _edit(events, 3)
    _rehash(events, 3, None, keep_key_id=False)

    check = verify_chain(events, [KEY])

    assert (check.kind, check.first_broken) == (Break.RECOMPUTED, 4)
    assert check.problem == (
        f"event 4 is not keyed, but event 3 before it (key {KEY.key_id}) is: "
        "the trail was rewritten and recomputed without the key"
    )


def test_switching_to_another_key_without_a_record_is_named() -> None:
    events = _trail()
    _edit(events, 3)
    _rehash(events, 3, GUESS, keep_key_id=False)

    check = verify_chain(events, [KEY])

    assert (check.kind, check.first_broken) == (Break.RECOMPUTED, 4)
    assert check.problem.startswith(f"event 4 is keyed with key {GUESS.key_id}, unlike event 3 before it")


def test_a_forged_key_change_to_the_public_sandbox_key_is_named() -> None:
    events = _trail(3)
    forged = _append(events[:2], SANDBOX_AUDIT_KEY, 2)  # a recorded switch, but to a public key

    check = verify_chain(forged, [KEY])

    assert (check.kind, check.first_broken) == (Break.RECOMPUTED, 3)
    assert "keyed with the public sandbox key after event 2" in check.problem


def test_a_forged_key_change_to_a_key_nobody_gave_cannot_pass() -> None:
    forged = _append(_trail(3)[:2], GUESS, 2)

    check = verify_chain(forged, [KEY])

    assert (check.kind, check.first_broken) == (Break.UNVERIFIABLE, 3)
    assert check.problem == f"event 3 is keyed with key {GUESS.key_id}, which was not given"


def test_a_wrong_key_is_named() -> None:
    check = verify_chain(_trail(), [NEW_KEY])

    assert (check.ok, check.kind, check.first_broken) == (False, Break.UNVERIFIABLE, 1)
    assert check.problem == f"event 1 is keyed with key {KEY.key_id}, which was not given"


def test_reordering_and_deletion_are_named_on_a_keyed_trail() -> None:
    events = _trail()
    events[2], events[3] = events[3], events[2]
    reordered = verify_chain(events, [KEY])
    deleted = verify_chain([*_trail()[:2], *_trail()[3:]], [KEY])

    assert (reordered.kind, reordered.first_broken) == (Break.REORDERED, 4)
    assert (deleted.kind, deleted.first_broken) == (Break.DELETED, 4)
    assert deleted.problem == "event 4 follows event 2: sequence gap (deleted)"


# -- what only a checkpoint shows ---------------------------------------------------------------


def _checkpoint(events: list[AuditEvent], sequence: int, *, short: bool = True) -> Checkpoint:
    return make_checkpoint(events[sequence - 1], KEY, at=T0, short=short)


def test_cutting_off_the_newest_events_passes_without_a_checkpoint_and_is_named_with_one() -> None:
    events = _trail(8)
    mark = _checkpoint(events, 7)
    cut = events[:5]

    assert verify_chain(cut, [KEY]).ok, "the documented limit: nothing after the end points back"
    check = verify_chain(cut, [KEY], [mark])

    assert (check.kind, check.first_broken, check.checked) == (Break.TRUNCATED, 6, 5)
    assert check.problem == (
        "the trail ends at event 5, but checkpoint #7 was published: "
        "the newest events (at least events 6 to 7) were cut off (truncated)"
    )


def test_deleting_every_event_is_named_with_a_checkpoint() -> None:
    mark = _checkpoint(_trail(), 6)

    assert verify_chain([], [KEY]).ok
    check = verify_chain([], [KEY], [mark])

    assert (check.kind, check.first_broken) == (Break.DELETED, 1)
    assert (
        check.problem == "the trail holds no events, but checkpoint #6 was published: every event was deleted"
    )


def test_a_rewrite_with_the_key_is_caught_up_to_the_last_checkpoint_only() -> None:
    events = _trail(8)
    mark = _checkpoint(events, 5)
    before, after = list(events), list(events)
    _edit(before, 3)
    _rehash(before, 3, KEY)  # an attacker holding the key AND the database
    _edit(after, 6)
    _rehash(after, 6, KEY)

    caught = verify_chain(before, [KEY], [mark])
    missed = verify_chain(after, [KEY], [mark])

    assert (caught.kind, caught.first_broken) == (Break.REWRITTEN, 5)
    assert caught.problem.startswith(f"event 5 is not the one checkpoint #5 published ({mark.hash}…, stored ")
    assert caught.problem.endswith(f"rewritten after the checkpoint by someone holding key {KEY.key_id}")
    assert missed.ok and missed.checkpoints == 1, "the documented limit: after the last checkpoint"


def test_a_fully_unkeyed_rewrite_is_caught_by_a_checkpoint() -> None:
    events = _trail()
    mark = _checkpoint(events, 4)
    _edit(events, 1)
    _rehash(events, 0, None, keep_key_id=False)  # every event made unkeyed: a "legacy" trail

    assert verify_chain(events, [KEY]).ok, "without a checkpoint it reads as a trail from before the key"
    check = verify_chain(events, [KEY], [mark])

    assert (check.kind, check.first_broken) == (Break.REWRITTEN, 4)
    assert "its events are not keyed with a secret, so no key was needed" in check.problem


def test_matching_checkpoints_are_counted_whole_or_short() -> None:
    events = _trail()

    check = verify_chain(events, [KEY], [_checkpoint(events, 2), _checkpoint(events, 6, short=False)])

    assert check.ok and check.checkpoints == 2


def test_a_checkpoint_that_is_not_authentic_or_whose_key_is_missing_is_refused() -> None:
    events = _trail()
    mark = _checkpoint(events, 3)
    mac = mark.mac or ""
    tampered_mac = mark.model_copy(update={"mac": ("0" if mac[0] != "0" else "1") + mac[1:]})

    forged = verify_chain(events, [KEY], [tampered_mac])
    unknown = verify_chain(events, [NEW_KEY], [mark])

    assert (forged.kind, forged.first_broken) == (Break.UNVERIFIABLE, 3)
    assert forged.problem == (
        f"checkpoint #3 is not authentic: its mac does not match under key {KEY.key_id} "
        "(mistyped, or not published by the bot)"
    )
    assert unknown.problem == f"checkpoint #3 is authenticated with key {KEY.key_id}, which was not given"


def test_a_checkpoint_mac_is_an_hmac_an_auditor_can_rebuild() -> None:
    events = _trail()
    mark = _checkpoint(events, 6, short=False)

    message = f"remediation-bot audit checkpoint:6:{events[5].hash}:{KEY.key_id}"
    secret = b"the bot's audit key, thirty-two characters or more"
    assert mark.mac == hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()
    assert mark.mac == checkpoint_mac(KEY, 6, events[5].hash)


# -- the published forms ------------------------------------------------------------------------


def test_the_thread_line_is_short_and_parses_back() -> None:
    events = _trail()
    mark = _checkpoint(events, 6)

    line = mark.text()

    assert line == f"Audit checkpoint #6 · {events[5].hash[:16]} · {KEY.key_id} · mac {mark.mac}"
    assert len(mark.mac or "") == MIN_HASH_CHARS
    again = parse_checkpoint(f"  Finished. {line}  ")
    assert again == mark.model_copy(update={"at": None})
    assert verify_chain(events, [KEY], [again]).checkpoints == 1


@pytest.mark.parametrize(
    "text",
    [
        "6:{hash}",
        "#6 · {hash}",
        "6:{hash}:{key_id}:{mac}",
        "6 · {hash} · {key_id} · mac {mac}",
    ],
)
def test_checkpoints_parse_from_the_command_line_forms(text: str) -> None:
    events = _trail()
    mark = _checkpoint(events, 6, short=False)

    parsed = parse_checkpoint(text.format(hash=mark.hash, key_id=mark.key_id, mac=mark.mac))

    assert (parsed.sequence, parsed.hash) == (6, mark.hash)
    assert verify_chain(events, [KEY], [parsed]).ok


def test_the_json_form_parses_back() -> None:
    mark = _checkpoint(_trail(), 6, short=False)

    assert parse_checkpoint(mark.model_dump_json()) == mark


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hello", "expected SEQ:HASH"),
        ("6:9f2c", "expected SEQ:HASH"),  # too short to mean anything
        ("0:" + "a" * 16, "sequence"),
        ('{"sequence": 6}', "hash"),
        ('{"sequence": 6, "hash": "xyz"}', "hexadecimal"),
        ('{"sequence": 6, "hash": "' + "a" * 16 + '", "mac": "' + "b" * 16 + '"}', "needs the key_id"),
        ("6:" + "a" * 65, "expected SEQ:HASH"),  # longer than any hash: not cut silently to 64
    ],
)
def test_what_is_not_a_checkpoint_is_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_checkpoint(text)
