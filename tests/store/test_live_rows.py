"""Hot paths cost what is live, not what is history (contract on both backends).

Cards to publish, open requests, results awaiting a re-check and the blast-radius count are
indexed queries kept up to date by every write; SQLite reads do not wait behind a write; both
stores refuse a schema newer than the code.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from bot.domain.models import (
    ActionRequest,
    ActionResult,
    CardRef,
    Case,
    IdentityRef,
    RequestState,
    ResponseAction,
)
from bot.errors import StoreError
from bot.store import open_store
from bot.store.base import Store
from bot.store.postgres import MIGRATIONS as POSTGRES_MIGRATIONS
from bot.store.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from tests.store.conftest import OpenStore
from tests.store.test_contract import ADELE, LEE, T0, alert, new_case, request


def published(case: Case) -> Case:
    """The case as it is once its card shows its current revision."""
    return case.model_copy(
        update={
            "card": CardRef(conversation_id="conv", activity_id=f"act-{case.id}"),
            "published_revision": case.revision,
        }
    )


async def test_cases_needing_publishing_follow_every_case_write(store: Store) -> None:
    first = await new_case(store)
    second = await new_case(store, LEE)
    assert [c.id for c in await store.list_cases_needing_publishing()] == [first.id, second.id]

    await store.update_case(first.id, published)
    assert [c.id for c in await store.list_cases_needing_publishing()] == [second.id]

    # A new alert revises the case: its card is behind again.
    await store.record_alert(alert("late", ADELE, minutes=5), new_case_id="unused", now=T0)
    assert [c.id for c in await store.list_cases_needing_publishing()] == [first.id, second.id]
    for case in await store.list_cases_needing_publishing():
        assert case.needs_publishing
    await store.update_case(first.id, published)
    await store.update_case(second.id, published)
    assert await store.list_cases_needing_publishing() == []
    assert len(await store.list_cases()) == 2


async def test_a_merged_case_is_not_published_unless_it_had_a_card(store: Store) -> None:
    person = await new_case(store)
    unresolved = await new_case(store, IdentityRef(upn="Adele.Vance@contoso.com"))
    await store.update_case(person.id, published)
    settlement = await store.rekey_case(unresolved.id, ADELE, now=T0)
    assert settlement is not None and settlement.closed is not None
    # The survivor changed (alerts moved): its card is behind; the closed case never had one.
    assert [c.id for c in await store.list_cases_needing_publishing()] == [person.id]


async def test_unresolved_cases_are_the_active_ones_keyed_on_a_upn(store: Store) -> None:
    resolved = await new_case(store, ADELE)
    waiting = await new_case(store, LEE)
    stray = await new_case(store, IdentityRef(upn="Adele.Vance@contoso.com"))
    assert [c.id for c in await store.list_unresolved_cases()] == [waiting.id, stray.id]

    # Settled on its object id: keyed on it from then on.
    lee = IdentityRef(object_id="6B1D2F3A-0000-4000-8000-000000000002", upn="lee.gu@contoso.com")
    rekeyed = await store.rekey_case(waiting.id, lee, now=T0)
    assert rekeyed is not None and rekeyed.closed is None
    # Settled by merging into the person's case: closed.
    merged = await store.rekey_case(stray.id, ADELE, now=T0)
    assert merged is not None and merged.closed is not None and merged.case.id == resolved.id
    assert await store.list_unresolved_cases() == []
    assert len(await store.list_cases()) == 3


async def test_results_due_for_a_recheck_are_found_by_time(store: Store) -> None:
    first = await new_case(store, ADELE)
    second = await new_case(store, LEE)
    third = await new_case(store, IdentityRef(upn="megan.bowen@contoso.com"))
    for case, rid in ((first, "due"), (second, "later"), (third, "none")):
        await store.add_request(request(case.id, rid))

    def finished(
        at: timedelta | None, state: RequestState = RequestState.SUCCEEDED
    ) -> Callable[[ActionRequest], ActionRequest]:
        result = ActionResult(succeeded=True, summary="done", recheck_at=None if at is None else T0 + at)
        return lambda r: r.model_copy(update={"state": state, "result": result, "finished_at": T0})

    await store.update_request("due", finished(timedelta(minutes=2)))
    await store.update_request("later", finished(timedelta(minutes=10), RequestState.FAILED))
    await store.update_request("none", finished(None))

    assert await store.list_requests_due_recheck(T0) == []
    assert [r.id for r in await store.list_requests_due_recheck(T0 + timedelta(minutes=2))] == ["due"]
    assert [r.id for r in await store.list_requests_due_recheck(T0 + timedelta(hours=1))] == ["due", "later"]

    # Once re-checked (recheck_at cleared) it is no longer due.
    def rechecked(r: ActionRequest) -> ActionRequest:
        assert r.result is not None
        return r.model_copy(update={"result": r.result.model_copy(update={"recheck_at": None})})

    await store.update_request("due", rechecked)
    assert [r.id for r in await store.list_requests_due_recheck(T0 + timedelta(hours=1))] == ["later"]


async def test_starts_are_counted_in_a_time_window(store: Store) -> None:
    cases = [await new_case(store, ADELE), await new_case(store, LEE)]
    for case, rid in zip(cases, ("old", "new"), strict=True):
        await store.add_request(request(case.id, rid))
    for rid, at in (("old", T0 - timedelta(hours=2)), ("new", T0)):
        await store.update_request(
            rid,
            lambda r, at=at: r.model_copy(update={"state": RequestState.EXECUTING, "started_at": at}),  # type: ignore[misc]
        )
    destructive = {ResponseAction.DISABLE_ACCOUNT}
    since = T0 - timedelta(hours=1)
    assert await store.count_started_since(destructive, since) == 1
    assert await store.count_started_since(destructive, T0 - timedelta(hours=3)) == 2
    assert await store.count_started_since(destructive, since, exclude="new") == 0
    assert await store.count_started_since({ResponseAction.REVOKE_SESSIONS}, since) == 0
    assert await store.count_started_since(set(), since) == 0


async def test_a_sqlite_read_does_not_wait_behind_a_write(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    store = await open_store(f"sqlite:///{path}")
    try:
        case = await new_case(store)
        writer = sqlite3.connect(path, isolation_level=None, timeout=0)
        try:
            # Another writer holds the write lock, mid-transaction, for as long as this test runs.
            writer.execute("BEGIN IMMEDIATE")
            writer.execute("UPDATE cases SET data = data WHERE id = ?", (case.id,))
            assert await store.get_case(case.id) == case
            assert [c.id for c in await store.list_cases_needing_publishing()] == [case.id]
            assert await store.list_requests_in([RequestState.PENDING]) == []
            writer.execute("ROLLBACK")
        finally:
            writer.close()
    finally:
        await store.close()


async def test_sqlite_refuses_a_schema_newer_than_the_code(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    store = await open_store(f"sqlite:///{path}")
    await store.close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(SQLITE_MIGRATIONS) + 1}")
    with pytest.raises(StoreError, match="newer than this bot knows"):
        await open_store(f"sqlite:///{path}")


@pytest.mark.postgres
async def test_postgres_refuses_a_schema_newer_than_the_code(postgres_url: str) -> None:
    store = await open_store(postgres_url)
    await store.close()
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (len(POSTGRES_MIGRATIONS) + 1,))
    with pytest.raises(StoreError, match="newer than this bot knows"):
        await open_store(postgres_url)


async def test_both_stores_know_the_same_number_of_migrations(open_stores: OpenStore) -> None:
    store = await open_stores()
    assert len(SQLITE_MIGRATIONS) == len(POSTGRES_MIGRATIONS) == await store.schema_version()
