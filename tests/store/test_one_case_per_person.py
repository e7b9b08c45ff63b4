"""The store's share of "one case per person": alert batches in one transaction, the uniqueness
of the active identity key under concurrent writers, settling unresolved cases on the object id,
and the migration that merges the duplicate open cases of older versions. SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from bot.domain.models import Case, IdentityRef, RequestState
from bot.errors import StoreError
from bot.store import open_store
from bot.store import postgres as postgres_store
from bot.store import sqlite as sqlite_store
from bot.store.base import Store
from tests.store.conftest import OpenStore
from tests.store.test_contract import T0, alert, request

OID = "6b1d2f3a-0000-4000-8000-00000000000a"
UPN = "Lee.Gu@contoso.com"
LEE_RESOLVED = IdentityRef(object_id=OID, upn=UPN, display_name="Lee Gu")
LEE_BY_NAME = IdentityRef(upn="LEE.GU@Contoso.com")
ADELE = IdentityRef(object_id="6b1d2f3a-0000-4000-8000-00000000000b", upn="adele.vance@contoso.com")
_ids = itertools.count(1)


def case_ids(prefix: str = "case") -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"{prefix}-{next(counter)}"


async def open_cases(store: Store) -> list[Case]:
    return [case for case in await store.list_cases() if not case.merged_into]


# -- batches ------------------------------------------------------------------------------------


async def test_a_batch_is_recorded_in_order_in_one_call(store: Store) -> None:
    batch = [
        alert("a1", LEE_RESOLVED),
        alert("a2", ADELE),
        alert("a3", LEE_RESOLVED),
        alert("a1", LEE_RESOLVED),
    ]
    intakes = await store.record_alerts(batch, new_case_id=case_ids(), now=T0)
    assert [(i.case_created, i.alert_new) for i in intakes] == [
        (True, True),
        (True, True),
        (False, True),
        (False, False),
    ]
    assert intakes[0].case.id == intakes[2].case.id != intakes[1].case.id
    assert [a.id for a in intakes[2].case.alerts] == ["a1", "a3"]
    assert len(await store.list_cases()) == 2
    assert await store.record_alerts([], new_case_id=case_ids(), now=T0) == []


async def test_a_batch_with_an_item_that_cannot_be_stored_stores_none_of_it(store: Store) -> None:
    existing = (await store.record_alert(alert("a0", ADELE), new_case_id="case-0", now=T0)).case
    # The lone surrogate cannot be encoded: the third item fails after two were written.
    unstorable = alert("a3", ADELE, title="bad \ud800 text")
    batch = [alert("a1", LEE_RESOLVED), alert("a2", ADELE), unstorable]
    with pytest.raises(ValueError):
        await store.record_alerts(batch, new_case_id=case_ids(), now=T0)
    assert await store.list_cases() == [existing], "no case opened, no alert added"
    # Nothing of it was half-recorded: the same good alerts are new when sent again.
    intakes = await store.record_alerts(batch[:2], new_case_id=case_ids(), now=T0)
    assert all(i.alert_new for i in intakes)


class OutOfIds(Exception):
    pass


async def test_a_failure_on_a_later_item_rolls_back_a_case_opened_by_an_earlier_one(store: Store) -> None:
    handed = ["case-1"]

    def one_id_only() -> str:
        if not handed:
            raise OutOfIds("a second case needs a second id")
        return handed.pop()

    with pytest.raises(OutOfIds):
        await store.record_alerts(
            [alert("a1", LEE_RESOLVED), alert("a2", ADELE)], new_case_id=one_id_only, now=T0
        )
    assert await store.list_cases() == []
    assert await store.find_active_case(LEE_RESOLVED) is None


async def test_concurrent_batches_naming_people_in_different_orders_make_one_case_each(
    open_stores: OpenStore,
) -> None:
    first, second = await open_stores(), await open_stores()
    people = [LEE_RESOLVED, ADELE, IdentityRef(upn="megan.bowen@contoso.com")]

    def batch(n: int) -> list[Any]:
        order = people if n % 2 else list(reversed(people))
        return [alert(f"b{n}-{k}", person) for k, person in enumerate(order)]

    results = await asyncio.gather(
        *(
            (first, second)[n % 2].record_alerts(batch(n), new_case_id=case_ids(f"c{n}"), now=T0)
            for n in range(12)
        )
    )
    assert sum(i.case_created for intakes in results for i in intakes) == 3
    cases = await first.list_cases()
    assert len(cases) == 3
    assert sorted(len(c.alerts) for c in cases) == [12, 12, 12]


# -- the key: one active case per person ---------------------------------------------------------


async def test_upn_keys_ignore_letter_case(store: Store) -> None:
    first = await store.record_alert(alert("a1", IdentityRef(upn=UPN)), new_case_id="case-1", now=T0)
    second = await store.record_alert(alert("a2", LEE_BY_NAME), new_case_id="case-2", now=T0)
    assert second.case.id == first.case.id and not second.case_created
    found = await store.find_active_case(IdentityRef(upn="lee.gu@CONTOSO.COM"))
    assert found is not None and found.id == "case-1"


async def test_concurrent_writers_naming_one_person_in_many_letter_cases_make_one_case(
    open_stores: OpenStore,
) -> None:
    first, second = await open_stores(), await open_stores()
    spellings = [UPN, UPN.upper(), UPN.lower(), "lEe.Gu@Contoso.COM"]
    intakes = await asyncio.gather(
        *(
            (first, second)[n % 2].record_alert(
                alert(f"a{n}", IdentityRef(upn=spellings[n % 4])), new_case_id=f"case-{n}", now=T0
            )
            for n in range(24)
        )
    )
    assert sum(i.case_created for i in intakes) == 1
    assert len({i.case.id for i in intakes}) == 1
    assert len(await first.list_cases()) == 1


async def test_update_case_cannot_change_whom_a_case_is_about(store: Store) -> None:
    case = (await store.record_alert(alert("a1", LEE_BY_NAME), new_case_id="case-1", now=T0)).case
    with pytest.raises(StoreError, match="re-keying"):
        await store.update_case(case.id, lambda c: c.revised(identity=LEE_RESOLVED))
    stored = await store.get_case(case.id)
    assert stored is not None and stored.identity.object_id is None


# -- settling unresolved cases -------------------------------------------------------------------


async def test_rekey_case_keys_an_unresolved_case_on_the_object_id(store: Store) -> None:
    case = (await store.record_alert(alert("a1", LEE_BY_NAME), new_case_id="case-1", now=T0)).case
    assert not case.resolved
    settled = await store.rekey_case(case.id, LEE_RESOLVED, now=T0)
    assert settled is not None and settled.closed is None
    assert settled.case.id == case.id and settled.case.identity.object_id == OID
    assert settled.case.revision > case.revision and not settled.case.target_checked
    assert await store.find_active_case(LEE_BY_NAME) is None
    assert await store.get_case(case.id) == settled.case
    joined = await store.record_alert(
        alert("a2", IdentityRef(object_id=OID.upper())), new_case_id="x", now=T0
    )
    assert joined.case.id == case.id and not joined.case_created
    assert await store.rekey_case(case.id, LEE_RESOLVED, now=T0) is None, "nothing left to settle"
    with pytest.raises(ValueError):
        await store.rekey_case(case.id, LEE_BY_NAME, now=T0)


async def test_rekey_case_merges_into_the_persons_case_and_closes_it_with_the_reason(store: Store) -> None:
    person = (await store.record_alert(alert("a1", LEE_RESOLVED), new_case_id="case-1", now=T0)).case
    stray = (await store.record_alert(alert("a2", LEE_BY_NAME), new_case_id="case-2", now=T0)).case
    waiting = await store.add_request(request(stray.id, "r-stray"))
    settled = await store.rekey_case(stray.id, LEE_RESOLVED, now=T0)
    assert settled is not None and settled.case.id == person.id
    assert [a.id for a in settled.case.alerts] == ["a1", "a2"]
    closed = settled.closed
    assert closed is not None and closed.id == stray.id and closed.merged_into == person.id
    assert OID in closed.closed_reason and "one person has one case" in closed.closed_reason
    assert await store.get_case(stray.id) == closed
    assert [c.id for c in await open_cases(store)] == [person.id]
    cancelled = await store.get_request(waiting.id)
    assert cancelled is not None and cancelled.state is RequestState.CANCELLED
    assert person.id in cancelled.decision_note
    # The moved alert's later updates land in the person's case.
    updated = await store.record_alert(
        alert("a2", LEE_BY_NAME, minutes=5, status="resolved"), new_case_id="x", now=T0
    )
    assert updated.case.id == person.id and updated.alert_changed
    assert await store.rekey_case(stray.id, LEE_RESOLVED, now=T0) is None, "a closed case is left alone"


async def test_an_alert_naming_object_id_and_upn_settles_the_upns_case_first(store: Store) -> None:
    stray = (await store.record_alert(alert("a1", LEE_BY_NAME), new_case_id="case-1", now=T0)).case
    intake = await store.record_alert(alert("a2", LEE_RESOLVED), new_case_id="case-2", now=T0)
    assert intake.settled is not None and intake.settled.closed is None
    assert intake.case.id == stray.id and not intake.case_created
    assert [a.id for a in intake.case.alerts] == ["a1", "a2"]
    assert [c.id for c in await open_cases(store)] == [stray.id]


async def test_settling_racing_alerts_of_the_person_leaves_one_open_case(open_stores: OpenStore) -> None:
    first, second = await open_stores(), await open_stores()
    for round_ in range(6):
        by_name = IdentityRef(upn=f"person{round_}@contoso.com")
        resolved = IdentityRef(object_id=f"0000000{round_}-0000-4000-8000-000000000000", upn=by_name.upn)
        stray = (
            await first.record_alert(alert(f"s{round_}", by_name), new_case_id=f"s-{round_}", now=T0)
        ).case
        object_only = IdentityRef(object_id=resolved.object_id)
        await asyncio.gather(
            first.rekey_case(stray.id, resolved, now=T0),
            second.record_alert(alert(f"o{round_}", object_only), new_case_id=f"o-{round_}", now=T0),
            second.record_alert(alert(f"p{round_}", resolved), new_case_id=f"p-{round_}", now=T0),
        )
        # Whichever wins (the object-id-only alert opening the person's case, the re-key, or
        # the alert naming both settling the stray), one open case holds every alert.
        named = [
            c
            for c in await open_cases(first)
            if (c.identity.upn or "") == by_name.upn or c.identity.object_id == resolved.object_id
        ]
        assert len(named) == 1, f"round {round_}: {[c.id for c in named]}"
        assert {a.id for a in named[0].alerts} == {f"s{round_}", f"o{round_}", f"p{round_}"}


# -- the migration -------------------------------------------------------------------------------

OLD_VERSION = 3  # the schema before cases were settled on object ids


def _old_cases() -> dict[str, tuple[Case, str]]:
    """Open cases as older versions could leave them: (case, the identity key it was stored under)."""

    def case(case_id: str, identity: IdentityRef, minutes: int, *alert_ids: str) -> Case:
        alerts = tuple(alert(a, identity, minutes=minutes) for a in alert_ids)
        return Case(id=case_id, identity=identity, alerts=alerts, opened_at=T0, version=1)

    adele_oid = IdentityRef(object_id="AAAA0000-0000-4000-8000-00000000000A", upn="adele.vance@contoso.com")
    lee_oid = IdentityRef(object_id=OID, upn=UPN)
    megan_oid = IdentityRef(object_id="cccc0000-0000-4000-8000-00000000000c", upn="megan.bowen@contoso.com")
    old_owner = IdentityRef(object_id="dddd0000-0000-4000-8000-00000000000d", upn="shared@contoso.com")
    new_owner = IdentityRef(object_id="eeee0000-0000-4000-8000-00000000000e", upn="shared@contoso.com")
    cases = [
        # Adele: polled by object id, then pushed by UPN alone (never enriched: no object id).
        (case("adele-oid", adele_oid, 0, "a1"), adele_oid.key),
        (
            case("adele-upn", IdentityRef(upn="Adele.Vance@Contoso.com"), 5, "a2", "a3"),
            "adele.vance@contoso.com",
        ),
        # Lee: the UPN case came first and learnt the object id when its card was enriched;
        # it has a pending request. The object-id case is kept all the same.
        (case("lee-upn", lee_oid, 0, "l1"), UPN.lower()),
        (case("lee-oid", lee_oid, 10, "l2"), OID),
        # Nick: one UPN in two letter cases, under keys from before keys were lower-cased.
        (case("nick-1", IdentityRef(upn="Nick@contoso.com"), 0, "n1"), "Nick@contoso.com"),
        (case("nick-2", IdentityRef(upn="nick@CONTOSO.com"), 1, "n2"), "nick@CONTOSO.com"),
        # Megan: one case under her UPN that learnt her object id: re-keyed, nothing merged.
        (case("megan-upn", megan_oid, 0, "m1"), "megan.bowen@contoso.com"),
        # Two people who held one UPN in turn: two object ids, never merged.
        (case("old-owner", old_owner, 0, "o1"), old_owner.key),
        (case("new-owner", new_owner, 0, "o2"), new_owner.key),
    ]
    return {c.id: (c, key) for c, key in cases}


def _sqlite_old_database(path: str, cases: dict[str, tuple[Case, str]]) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        for script in sqlite_store.MIGRATIONS[:OLD_VERSION]:
            assert isinstance(script, str)
            for statement in script.split(";"):
                if statement.strip():
                    db.execute(statement)
        db.execute(f"PRAGMA user_version = {OLD_VERSION}")
        for case, key in cases.values():
            db.execute(
                "INSERT INTO cases (id, identity_key, active, data, version) VALUES (?, ?, 1, ?, 1)",
                (case.id, key, case.model_dump_json()),
            )
            db.executemany(
                "INSERT INTO alerts (id, case_id) VALUES (?, ?)", [(a.id, case.id) for a in case.alerts]
            )
        pending = request("lee-upn", "r-lee")
        db.execute(
            "INSERT INTO action_requests (id, case_id, state, data, version) VALUES (?, ?, ?, ?, 1)",
            (
                pending.id,
                pending.case_id,
                pending.state.value,
                pending.model_copy(update={"version": 1}).model_dump_json(),
            ),
        )
    finally:
        db.close()


def _postgres_old_database(url: str, cases: dict[str, tuple[Case, str]]) -> None:
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(
            "CREATE TABLE schema_migrations ("
            "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for number, script in enumerate(postgres_store.MIGRATIONS[:OLD_VERSION], start=1):
            assert isinstance(script, str)
            db.execute(script)  # the project's own migration text
            db.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))
        for case, key in cases.values():
            db.execute(
                "INSERT INTO cases (id, identity_key, data, version) VALUES (%s, %s, %s, 1)",
                (case.id, key, case.model_dump_json()),
            )
            for a in case.alerts:
                db.execute("INSERT INTO alerts (id, case_id) VALUES (%s, %s)", (a.id, case.id))
        pending = request("lee-upn", "r-lee")
        db.execute(
            "INSERT INTO action_requests (id, case_id, state, data, version) VALUES (%s, %s, %s, %s, 1)",
            (
                pending.id,
                pending.case_id,
                pending.state.value,
                pending.model_copy(update={"version": 1}).model_dump_json(),
            ),
        )


async def test_the_migration_merges_the_duplicate_open_cases_of_older_versions(store_url: str) -> None:
    cases = _old_cases()
    if store_url.startswith("sqlite"):
        _sqlite_old_database(store_url.removeprefix("sqlite:///"), cases)
    else:
        _postgres_old_database(store_url, cases)

    store = await open_store(store_url)
    try:
        assert await store.schema_version() == len(sqlite_store.MIGRATIONS)
        by_id = {c.id: c for c in await store.list_cases()}
        open_now = {c.id for c in by_id.values() if not c.merged_into}
        assert open_now == {"adele-oid", "lee-oid", "nick-1", "megan-upn", "old-owner", "new-owner"}

        # Adele: the object-id case kept, with the UPN case's alerts; the UPN case closed, with why.
        adele = by_id["adele-oid"]
        assert [a.id for a in adele.alerts] == ["a1", "a2", "a3"]
        assert adele.revision > 1, "its card is brought up to date"
        closed = by_id["adele-upn"]
        assert closed.merged_into == "adele-oid" and "one person has one case" in closed.closed_reason
        # Lee: the object-id case kept although the UPN case is older; its pending request cancelled.
        assert [a.id for a in by_id["lee-oid"].alerts] == ["l1", "l2"]
        assert by_id["lee-upn"].merged_into == "lee-oid"
        lee_request = await store.get_request("r-lee")
        assert lee_request is not None and lee_request.state is RequestState.CANCELLED
        assert "lee-oid" in lee_request.decision_note
        # Nick: the older spelling kept, now under the lower-cased key.
        assert [a.id for a in by_id["nick-1"].alerts] == ["n1", "n2"] and by_id[
            "nick-2"
        ].merged_into == "nick-1"
        found = await store.find_active_case(IdentityRef(upn="NICK@contoso.com"))
        assert found is not None and found.id == "nick-1"
        # Megan: re-keyed on her object id; a later alert naming only it joins her case.
        joined = await store.record_alert(
            alert("m2", IdentityRef(object_id="CCCC0000-0000-4000-8000-00000000000C")),
            new_case_id="new",
            now=T0,
        )
        assert joined.case.id == "megan-upn" and not joined.case_created
        # Two object ids are two people, even under one UPN.
        assert not by_id["old-owner"].merged_into and not by_id["new-owner"].merged_into
        # Moved alerts belong to the kept case: their updates land there.
        moved = await store.record_alert(
            alert("a2", IdentityRef(upn="adele.vance@contoso.com"), minutes=30, status="resolved"),
            new_case_id="new",
            now=T0,
        )
        assert moved.case.id == "adele-oid" and moved.alert_changed
    finally:
        await store.close()

    # Opening the database again finds nothing left to do.
    again = await open_store(store_url)
    try:
        assert len([c for c in await again.list_cases() if not c.merged_into]) == 6
    finally:
        await again.close()
