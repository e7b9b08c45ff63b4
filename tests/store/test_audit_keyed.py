"""The keyed audit trail and its checkpoints: one contract SQLite and PostgreSQL both pass.

Stores are opened like replicas, each with the key its configuration gives it. Tampering is
real SQL on the test's database (on PostgreSQL with the append-only triggers switched off, as
the table's owner could), and the verdicts are the stores' own.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from bot.domain.audit import KEY_CHANGED, AuditEvent, AuditKey, Break, event_hash
from bot.errors import StoreError
from bot.store import open_store
from bot.store.base import Store

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
KEY = AuditKey.from_secret("the contract's audit key - 32+ characters long")
NEW_KEY = AuditKey.from_secret("the audit key after a rotation - 32+ characters")
OpenKeyed = Callable[[AuditKey | None], Awaitable[Store]]


@pytest.fixture
async def open_keyed(store_url: str) -> AsyncIterator[OpenKeyed]:
    """Opens stores on the test's database, each with the audit key given (or none)."""
    opened: list[Store] = []

    async def open_one(key: AuditKey | None) -> Store:
        store = await open_store(store_url, audit_key=key)
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()


def _sql(store_url: str, statement: str, *params: Any) -> None:
    """Run one statement on the test's database behind the store's back."""
    if store_url.startswith("sqlite:///"):
        db = sqlite3.connect(store_url.removeprefix("sqlite:///"))
        try:
            with db:
                db.execute(statement, params)
        finally:
            db.close()
        return
    with psycopg.connect(store_url, autocommit=True) as pg:
        pg.execute("SET session_replication_role = replica")  # the owner can switch triggers off
        pg.execute(statement.replace("?", "%s"), params)


async def _append(store: Store, index: int) -> AuditEvent:
    return await store.append_audit(
        at=T0 + timedelta(seconds=index),
        actor_id="alex-id",
        actor_name="Alex Wilber",
        kind="request.opened",
        case_id="case-1",
        request_id=f"req-{index}",
        identity="adele.vance@contoso.com",
        payload={"index": index},
    )


async def _fill(store: Store, count: int, start: int = 0) -> list[AuditEvent]:
    return [await _append(store, start + index) for index in range(count)]


async def test_keyed_events_read_back_verify_and_checkpoint(open_keyed: OpenKeyed) -> None:
    store = await open_keyed(KEY)
    assert await store.audit_checkpoint(at=T0) is None

    appended = await _fill(store, 5)

    assert await store.list_audit() == appended
    assert {e.key_id for e in appended} == {KEY.key_id}
    check = await store.verify_audit()
    assert check.ok and (check.checked, check.keyed, check.key_ids) == (5, 5, (KEY.key_id,))
    whole = await store.audit_checkpoint(at=T0)
    short = await store.audit_checkpoint(at=T0, short=True)
    assert whole is not None and short is not None
    assert (whole.sequence, whole.hash, whole.key_id) == (5, appended[-1].hash, KEY.key_id)
    assert short.hash == appended[-1].hash[:16] and len(short.mac or "") == 16
    matched = await store.verify_audit(checkpoints=[whole, short])
    assert matched.ok and matched.checkpoints == 2
    # A reader without the key cannot vouch for the trail, and says why.
    reader = await open_keyed(None)
    unkeyed_view = await reader.verify_audit()
    assert (unkeyed_view.kind, unkeyed_view.first_broken) == (Break.UNVERIFIABLE, 1)
    assert (await reader.verify_audit(keys=[KEY], checkpoints=[short])).ok


async def test_an_unkeyed_trail_continues_keyed_and_a_rotation_is_recorded(open_keyed: OpenKeyed) -> None:
    before_the_key = await open_keyed(None)
    await _fill(before_the_key, 2)
    await _fill(await open_keyed(KEY), 2, start=2)
    await _fill(await open_keyed(NEW_KEY), 1, start=4)

    stored = await before_the_key.list_audit()

    assert [(e.kind == KEY_CHANGED, e.key_id) for e in stored] == [
        (False, None),
        (False, None),
        (True, KEY.key_id),
        (False, KEY.key_id),
        (False, KEY.key_id),
        (True, NEW_KEY.key_id),
        (False, NEW_KEY.key_id),
    ]
    assert stored[5].payload == {"key_id": NEW_KEY.key_id, "previous_key_id": KEY.key_id}
    assert (await before_the_key.verify_audit(keys=[NEW_KEY, KEY])).ok
    missing_old = await before_the_key.verify_audit(keys=[NEW_KEY])
    assert (missing_old.kind, missing_old.first_broken) == (Break.UNVERIFIABLE, 3)


async def test_a_store_without_the_key_appends_nothing_to_a_keyed_trail(open_keyed: OpenKeyed) -> None:
    keyed = await open_keyed(KEY)
    await _fill(keyed, 2)

    with pytest.raises(StoreError, match=r"opened without an audit key: set AUDIT_HMAC_KEY"):
        await _append(await open_keyed(None), 2)

    assert [e.sequence for e in await keyed.list_audit()] == [1, 2]


async def test_replicas_mid_rotation_make_one_linear_chain_with_every_change_recorded(
    open_keyed: OpenKeyed,
) -> None:
    # A rolling restart: one replica already has the new key, the other still the old one.
    old, new = await open_keyed(KEY), await open_keyed(NEW_KEY)

    await asyncio.gather(*((old, new)[n % 2].append_audit(**_args(n)) for n in range(40)))

    stored = await old.list_audit()
    assert [e.sequence for e in stored] == list(range(1, len(stored) + 1))
    assert len([e for e in stored if e.kind != KEY_CHANGED]) == 40
    for earlier, later in itertools.pairwise(stored):
        assert later.previous_hash == earlier.hash
        if later.key_id != earlier.key_id:
            assert later.kind == KEY_CHANGED
    assert (await new.verify_audit(keys=[KEY])).ok


def _args(n: int) -> dict[str, Any]:
    return {
        "at": T0,
        "actor_id": "remediation-bot",
        "actor_name": "bot",
        "kind": "alert.recorded",
        "payload": {"n": n},
    }


# -- tampering, named against a checkpoint published before it -----------------------------------


async def test_cutting_off_the_newest_events_is_truncation(open_keyed: OpenKeyed, store_url: str) -> None:
    store = await open_keyed(KEY)
    await _fill(store, 6)
    mark = await store.audit_checkpoint(at=T0, short=True)
    assert mark is not None

    _sql(store_url, "DELETE FROM audit_events WHERE sequence > 4")

    assert (await store.verify_audit()).ok, "the documented limit: no checkpoint, no end"
    check = await store.verify_audit(checkpoints=[mark])
    assert (check.kind, check.first_broken) == (Break.TRUNCATED, 5)
    assert "the trail ends at event 4, but checkpoint #6 was published" in check.problem


async def test_deleting_every_row_is_deletion(open_keyed: OpenKeyed, store_url: str) -> None:
    store = await open_keyed(KEY)
    await _fill(store, 3)
    mark = await store.audit_checkpoint(at=T0, short=True)
    assert mark is not None

    _sql(store_url, "DELETE FROM audit_events")

    check = await store.verify_audit(checkpoints=[mark])
    assert (check.kind, check.problem) == (
        Break.DELETED,
        "the trail holds no events, but checkpoint #3 was published: every event was deleted",
    )


@pytest.mark.parametrize(("rehash_key", "kind"), [(None, Break.RECOMPUTED), (KEY, Break.REWRITTEN)])
async def test_an_edit_with_every_later_hash_recomputed(
    open_keyed: OpenKeyed, store_url: str, rehash_key: AuditKey | None, kind: Break
) -> None:
    store = await open_keyed(KEY)
    events = await _fill(store, 6)
    mark = await store.audit_checkpoint(at=T0, short=True)
    assert mark is not None

    events[2] = events[2].model_copy(update={"payload": {"index": 99}})
    for index in range(2, 6):
        relinked = events[index].model_copy(update={"previous_hash": events[index - 1].hash})
        events[index] = relinked.model_copy(update={"hash": event_hash(relinked, rehash_key)})
        _sql(
            store_url,
            "UPDATE audit_events SET data = ?, hash = ? WHERE sequence = ?",
            events[index].to_json(),
            events[index].hash,
            events[index].sequence,
        )

    check = await store.verify_audit(checkpoints=[mark])
    # Without the key the first edited event gives it away; with the key only the checkpoint does.
    assert (check.kind, check.first_broken) == (kind, 3 if rehash_key is None else 6)


async def test_reordered_rows_are_named(open_keyed: OpenKeyed, store_url: str) -> None:
    store = await open_keyed(KEY)
    events = await _fill(store, 4)

    # Move event 3 out of the way, put event 4 in its place, then event 3 after it.
    _sql(store_url, "UPDATE audit_events SET sequence = 100 WHERE sequence = 3")
    _sql(
        store_url,
        "UPDATE audit_events SET sequence = 3, data = ?, hash = ? WHERE sequence = 4",
        events[3].to_json(),
        events[3].hash,
    )
    _sql(
        store_url,
        "UPDATE audit_events SET sequence = 4, data = ?, hash = ? WHERE sequence = 100",
        events[2].to_json(),
        events[2].hash,
    )

    check = await store.verify_audit()
    assert (check.kind, check.first_broken) == (Break.REORDERED, 4)


async def test_a_wrong_key_is_named(open_keyed: OpenKeyed) -> None:
    await _fill(await open_keyed(KEY), 2)

    check = await (await open_keyed(NEW_KEY)).verify_audit()

    assert (check.kind, check.problem) == (
        Break.UNVERIFIABLE,
        f"event 1 is keyed with key {KEY.key_id}, which was not given",
    )
