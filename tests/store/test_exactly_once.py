"""The store primitives that make "once" hold across replicas, on SQLite and PostgreSQL.

- ``swap_case`` / ``swap_request``: a compare-and-swap that tells the caller whether its change
  was the one written, decided on the stored value (not on a read made before);
- ``start_request``: the blast-radius count and the claim in one transaction, so a limit holds
  exactly under concurrent starters in several processes;
- ``renew_job``: a live worker keeps its job; one that lost it learns so.

Concurrency is real: several store clients on one database (each like another replica), and a
store driven from another thread's event loop while a ``decide`` callback runs.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from bot.domain.models import ActionRequest, Case, IdentityRef, RequestState, ResponseAction
from bot.store import open_store
from bot.store.base import Store
from bot.store.postgres import MIGRATIONS as POSTGRES_MIGRATIONS
from bot.store.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from tests.store.conftest import OpenStore, OtherProcess
from tests.store.test_contract import T0, new_case, request

DESTRUCTIVE = frozenset({ResponseAction.DISABLE_ACCOUNT, ResponseAction.FORCE_PASSWORD_CHANGE})
HOUR = timedelta(hours=1)
NOW = T0 + timedelta(minutes=5)
Start = Callable[[ActionRequest, int], ActionRequest | str]
_people = itertools.count(1)


def expire(current: ActionRequest) -> ActionRequest | str:
    """A transition only one caller can make: pending -> expired."""
    if current.state is not RequestState.PENDING:
        return f"already {current.state.value}"
    return current.model_copy(update={"state": RequestState.EXPIRED, "finished_at": NOW})


def start_within(limit: int) -> Start:
    """A start that refuses once ``limit`` counted actions started in the window."""

    def start(current: ActionRequest, started: int) -> ActionRequest | str:
        if current.state is not RequestState.APPROVED:
            return f"already {current.state.value}"
        if started >= limit:
            return "blast radius"
        return current.model_copy(update={"state": RequestState.EXECUTING, "started_at": NOW})

    return start


async def approved_requests(
    store: Store, count: int, action: ResponseAction = ResponseAction.DISABLE_ACCOUNT
) -> list[str]:
    """``count`` approved requests, each on a case (and identity) of its own."""
    ids = []
    for _ in range(count):
        case = await new_case(store, IdentityRef(upn=f"user{next(_people)}@contoso.com"))
        stored = await store.add_request(
            request(case.id, state=RequestState.APPROVED).model_copy(update={"action": action})
        )
        ids.append(stored.id)
    return ids


# -- swap: who won ------------------------------------------------------------------------------


async def test_of_many_racing_swaps_exactly_one_wins(open_stores: OpenStore) -> None:
    first, second = await open_stores(), await open_stores()
    case = await new_case(first)
    pending = await first.add_request(request(case.id))
    results = await asyncio.gather(
        *((first, second)[n % 2].swap_request(pending.id, expire) for n in range(12))
    )
    winners = [outcome for _, outcome in results if isinstance(outcome, ActionRequest)]
    assert len(winners) == 1, "exactly one caller made the transition"
    stored = await first.get_request(pending.id)
    assert stored is not None and stored == winners[0] and stored.state is RequestState.EXPIRED
    for value, outcome in results:
        if not isinstance(outcome, ActionRequest):
            assert outcome == "already expired", "a loser learns why from the stored value"
            assert value == stored


async def test_a_swap_that_another_process_wins_meanwhile_is_told_it_lost(
    store: Store, other_process: OtherProcess
) -> None:
    case = await new_case(store)
    pending = await store.add_request(request(case.id))
    seen: list[RequestState] = []

    def decide(current: ActionRequest) -> ActionRequest | str:
        seen.append(current.state)
        if len(seen) == 1:  # another replica expires it after we read it, before we write
            _, theirs = other_process.run(other_process.store.swap_request(pending.id, expire))
            assert isinstance(theirs, ActionRequest)
        return expire(current)

    stored, outcome = await store.swap_request(pending.id, decide)
    assert seen == [RequestState.PENDING, RequestState.EXPIRED], "decided again on the newer value"
    assert outcome == "already expired"
    assert stored.state is RequestState.EXPIRED and stored.version == pending.version + 1


async def test_swap_case_says_who_won(open_stores: OpenStore) -> None:
    first, second = await open_stores(), await open_stores()
    case = await new_case(first)

    def protect(current: Case) -> Case | None:
        return None if current.protected else current.revised(protected=True)

    results = await asyncio.gather(*((first, second)[n % 2].swap_case(case.id, protect) for n in range(8)))
    assert sum(1 for _, outcome in results if outcome is not None) == 1
    stored = await first.get_case(case.id)
    assert stored is not None and stored.protected and stored.version == case.version + 1


# -- start_request: the blast radius ------------------------------------------------------------


async def test_concurrent_starts_from_several_processes_admit_exactly_the_limit(
    open_stores: OpenStore, other_process: OtherProcess
) -> None:
    first, second = await open_stores(), await open_stores()
    ids = await approved_requests(first, 12)
    limit = 5
    start = start_within(limit)

    async def from_the_other_process(request_id: str) -> tuple[ActionRequest, ActionRequest | str]:
        work = other_process.store.start_request(request_id, start, counted=DESTRUCTIVE, since=NOW - HOUR)
        return await asyncio.to_thread(other_process.run, work)

    starts = []
    for n, request_id in enumerate(ids):
        if n % 3 == 2:
            starts.append(from_the_other_process(request_id))
        else:
            store = (first, second)[n % 3]
            starts.append(store.start_request(request_id, start, counted=DESTRUCTIVE, since=NOW - HOUR))
    results = await asyncio.gather(*starts)
    started = [outcome for _, outcome in results if isinstance(outcome, ActionRequest)]
    assert len(started) == limit, "the limit holds exactly, whoever starts"
    assert sum(outcome == "blast radius" for _, outcome in results) == len(ids) - limit
    executing = await first.list_requests_in([RequestState.EXECUTING])
    assert sorted(r.id for r in executing) == sorted(r.id for r in started)


async def test_the_count_is_of_other_recent_starts_of_the_counted_actions(store: Store) -> None:
    seen: list[int] = []

    def note(current: ActionRequest, started: int) -> ActionRequest | str:
        seen.append(started)
        return "looked"

    async def started_at(action: ResponseAction, when: datetime) -> str:
        (request_id,) = await approved_requests(store, 1, action)
        await store.update_request(
            request_id,
            lambda r: r.model_copy(update={"state": RequestState.SUCCEEDED, "started_at": when}),
        )
        return request_id

    await started_at(ResponseAction.DISABLE_ACCOUNT, NOW - timedelta(minutes=59))  # counted
    await started_at(ResponseAction.DISABLE_ACCOUNT, NOW - timedelta(minutes=61))  # too old
    await started_at(ResponseAction.REVOKE_SESSIONS, NOW)  # not a counted action
    own = await started_at(ResponseAction.DISABLE_ACCOUNT, NOW)  # the request itself
    (fresh,) = await approved_requests(store, 1)
    await store.start_request(fresh, note, counted=DESTRUCTIVE, since=NOW - HOUR)
    await store.start_request(own, note, counted=DESTRUCTIVE, since=NOW - HOUR)
    assert seen == [2, 1]
    stored = await store.get_request(fresh)
    assert stored is not None and stored.state is RequestState.APPROVED, "a refusal writes nothing"


async def test_requests_started_before_the_upgrade_are_counted(store_url: str, tmp_path: Path) -> None:
    """The migration that adds the count's columns fills them from the stored requests."""
    started = NOW - timedelta(minutes=10)
    old = request("case-old", "req-old", RequestState.SUCCEEDED).model_copy(
        update={"started_at": started, "reason": 'nul \x00 and "quotes" \\u0000 in the reason', "version": 1}
    )
    older_case = Case(
        id="case-old",
        identity=IdentityRef(object_id="6b1d2f3a-0000-4000-8000-0000000000aa"),
        alerts=[],
        opened_at=T0,
        version=1,
    )
    case_row = ("case-old", older_case.identity.key, older_case.model_dump_json())
    if store_url.startswith("sqlite"):
        path = Path(store_url.removeprefix("sqlite:///"))
        db = sqlite3.connect(path)
        for script in SQLITE_MIGRATIONS[:3]:
            db.executescript(script)
        db.execute("PRAGMA user_version = 3")
        db.execute("INSERT INTO cases (id, identity_key, data, version) VALUES (?, ?, ?, 1)", case_row)
        db.execute(
            "INSERT INTO action_requests (id, case_id, state, data, version) VALUES (?, ?, ?, ?, 1)",
            (old.id, old.case_id, old.state.value, old.model_dump_json()),
        )
        db.commit()
        db.close()
    else:
        with psycopg.connect(store_url, autocommit=True) as older:
            older.execute(
                "CREATE TABLE schema_migrations "
                "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for number, script in enumerate(POSTGRES_MIGRATIONS[:3], start=1):
                older.execute(script.encode())  # several statements: sent as one simple query
                older.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))
            older.execute(
                "INSERT INTO cases (id, identity_key, data, version) VALUES (%s, %s, %s, 1)", case_row
            )
            older.execute(
                "INSERT INTO action_requests (id, case_id, state, data, version) VALUES (%s, %s, %s, %s, 1)",
                (old.id, old.case_id, old.state.value, old.model_dump_json()),
            )
    upgraded = await open_store(store_url)
    try:
        seen: list[int] = []

        def note(current: ActionRequest, count: int) -> str:
            seen.append(count)
            return "looked"

        await upgraded.start_request("req-old", note, counted=DESTRUCTIVE, since=NOW - HOUR)
        await upgraded.start_request(
            "req-old", note, counted=frozenset({ResponseAction.DISABLE_ACCOUNT}), since=started
        )
        stored = await upgraded.get_request("req-old")
        assert stored is not None and stored.reason == old.reason
        (fresh,) = await approved_requests(upgraded, 1)
        await upgraded.start_request(fresh, note, counted=DESTRUCTIVE, since=NOW - HOUR)
        await upgraded.start_request(fresh, note, counted=DESTRUCTIVE, since=started + timedelta(seconds=1))
        assert seen == [0, 0, 1, 0], "the old start is counted, to the second, and never its own"
    finally:
        await upgraded.close()


# -- renew_job ----------------------------------------------------------------------------------


async def test_a_worker_renews_its_job_until_another_takes_it_over(store: Store) -> None:
    await store.enqueue_job("execute", "job-1", {})
    job = await store.claim_job("execute", "w1", timedelta(milliseconds=200))
    assert job is not None
    assert await store.renew_job("job-1", "w1", timedelta(seconds=30))
    assert await store.claim_job("execute", "w2", timedelta(seconds=30)) is None, "renewed: still held"
    assert not await store.renew_job("job-1", "w2", timedelta(seconds=30)), "only the holder renews"

    await store.renew_job("job-1", "w1", timedelta(milliseconds=50))
    await asyncio.sleep(0.2)
    taken = await store.claim_job("execute", "w2", timedelta(seconds=30))
    assert taken is not None and taken.attempts == 2
    assert not await store.renew_job("job-1", "w1", timedelta(seconds=30)), "the old holder learns it lost"
    await store.finish_job("job-1", "w2")
    assert not await store.renew_job("job-1", "w2", timedelta(seconds=30)), "a finished job is nobody's"
    with pytest.raises(ValueError, match="positive"):
        await store.renew_job("job-1", "w2", timedelta(0))
