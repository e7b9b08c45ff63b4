"""Replay claims: one caller wins a key across every replica; expired claims are pruned.

Part of the store contract (run on SQLite and PostgreSQL): the push endpoint claims each signed
request here before storing its alerts, so a copy sent to any replica is refused.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import psycopg

from bot.store.base import Store
from tests.store.conftest import OpenStore, OtherProcess

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
LIFE = timedelta(minutes=10)


async def test_a_key_is_claimed_once_until_it_expires(store: Store) -> None:
    assert await store.claim_replay("push:a", expires_at=T0 + LIFE, now=T0) is True
    assert await store.claim_replay("push:a", expires_at=T0 + LIFE, now=T0 + timedelta(minutes=9)) is False
    assert await store.claim_replay("push:b", expires_at=T0 + LIFE, now=T0) is True, "keys are independent"
    # Once expired it is pruned, and the key may be claimed again.
    assert await store.claim_replay("push:a", expires_at=T0 + 2 * LIFE, now=T0 + LIFE + timedelta(seconds=1))


async def test_a_released_claim_may_be_claimed_again(store: Store) -> None:
    assert await store.claim_replay("push:a", expires_at=T0 + LIFE, now=T0)
    await store.release_replay("push:a")
    assert await store.claim_replay("push:a", expires_at=T0 + LIFE, now=T0)
    await store.release_replay("push:never-claimed")  # nothing happens


async def test_a_claim_reads_as_held_until_it_expires_or_is_released(store: Store) -> None:
    # The approval page's sign-out ends a session by releasing its claim, on every replica.
    assert await store.replay_claimed("page:a", now=T0) is False
    assert await store.claim_replay("page:a", expires_at=T0 + LIFE, now=T0)
    assert await store.replay_claimed("page:a", now=T0 + LIFE) is True
    assert await store.replay_claimed("page:a", now=T0 + LIFE + timedelta(microseconds=1)) is False
    assert await store.replay_claimed("page:b", now=T0) is False, "keys are independent"
    await store.release_replay("page:a")
    assert await store.replay_claimed("page:a", now=T0) is False


async def test_fifty_concurrent_claims_from_two_stores_admit_exactly_one(open_stores: OpenStore) -> None:
    first, second = await open_stores(), await open_stores()
    results = await asyncio.gather(
        *(
            (first if i % 2 else second).claim_replay("push:race", expires_at=T0 + LIFE, now=T0)
            for i in range(50)
        )
    )
    assert results.count(True) == 1


async def test_a_claim_from_another_process_wins_over_this_one(
    store: Store, other_process: OtherProcess
) -> None:
    assert other_process.run(other_process.store.claim_replay("push:x", expires_at=T0 + LIFE, now=T0))
    assert await store.claim_replay("push:x", expires_at=T0 + LIFE, now=T0) is False
    await store.release_replay("push:x")
    assert other_process.run(other_process.store.claim_replay("push:x", expires_at=T0 + LIFE, now=T0))


async def test_expired_claims_are_pruned(store: Store, store_url: str) -> None:
    for i in range(20):
        assert await store.claim_replay(f"push:old-{i}", expires_at=T0, now=T0 - LIFE)
    assert await store.claim_replay("push:live", expires_at=T0 + LIFE, now=T0 - LIFE)
    assert await store.claim_replay("push:new", expires_at=T0 + 2 * LIFE, now=T0 + timedelta(seconds=1))
    assert _rows(store_url) == ["push:live", "push:new"]


def _rows(store_url: str) -> list[str]:
    """The keys stored, read past the store (only the store's own code touches SQL in the bot)."""
    query = "SELECT key FROM replay_claims ORDER BY key"
    if store_url.startswith("sqlite:///"):
        import sqlite3

        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as db:
            return [row[0] for row in db.execute(query)]
    with psycopg.connect(store_url) as db:
        return [row[0] for row in db.execute(query)]
