"""The store contract: one suite that SQLite and PostgreSQL must both pass (STYLE.md habit 10).

Concurrency is real: ``asyncio.gather`` over one store (PostgreSQL spreads it over pooled
sessions), over two stores on one database (two replicas), and writes from another thread's
event loop while a ``mutate`` callback runs (another replica winning a compare-and-swap race).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.domain.models import (
    ActionRequest,
    Actor,
    Alert,
    AlertSource,
    Case,
    CaseStatus,
    ChannelRef,
    IdentityRef,
    RequestState,
    ResponseAction,
    Severity,
)
from bot.errors import ConflictError, DuplicateError, StoreError
from bot.store.base import Store
from bot.store.postgres import MIGRATIONS as POSTGRES_MIGRATIONS
from bot.store.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from tests.store.conftest import OpenStore, OtherProcess

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
ADELE = IdentityRef(object_id="6B1D2F3A-0000-4000-8000-000000000001", upn="adele.vance@contoso.com")
LEE = IdentityRef(upn="Lee.Gu@contoso.com")
ALEX = Actor(object_id="alex-id", name="Alex Wilber")
_ids = itertools.count(1)


def alert(alert_id: str, target: IdentityRef = ADELE, *, minutes: int = 0, **changes: Any) -> Alert:
    """An alert about ``target``, last updated ``minutes`` after T0."""
    values: dict[str, Any] = {
        "id": alert_id,
        "source": AlertSource.DEFENDER_FOR_IDENTITY,
        "title": f"Suspected identity theft ({alert_id})",
        "severity": Severity.HIGH,
        "status": "new",
        "created_at": T0,
        "updated_at": T0 + timedelta(minutes=minutes),
        "target": target,
        **changes,
    }
    return Alert(**values)


def request(
    case_id: str, request_id: str | None = None, state: RequestState = RequestState.PENDING
) -> ActionRequest:
    """An action request on ``case_id``."""
    rid = request_id or f"req-{next(_ids)}"
    return ActionRequest(
        id=rid,
        case_id=case_id,
        action=ResponseAction.DISABLE_ACCOUNT,
        requester=ALEX,
        reason="impossible travel",
        state=state,
        created_at=T0,
        expires_at=T0 + timedelta(minutes=30),
        idempotency_key=f"key-{rid}",
    )


async def new_case(store: Store, target: IdentityRef = ADELE) -> Case:
    intake = await store.record_alert(
        alert(f"alert-{next(_ids)}", target), new_case_id=f"case-{next(_ids)}", now=T0
    )
    return intake.case


async def append(store: Store, index: int, **overrides: Any) -> Any:
    arguments: dict[str, Any] = {
        "at": T0 + timedelta(seconds=index),
        "actor_id": ALEX.object_id,
        "actor_name": ALEX.name,
        "kind": "request.opened",
        "case_id": "case-1",
        "request_id": f"req-{index}",
        "identity": "Adele.Vance@contoso.com",
        "payload": {"index": index, "reason": "impossible travel", "nested": {"ok": True, "n": [1, 2.5]}},
        **overrides,
    }
    return await store.append_audit(**arguments)


async def eventually(check: Callable[[], Any], *, within: float = 5.0) -> Any:
    """Poll ``check`` (an async callable) until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"not within {within} s")
        await asyncio.sleep(0.02)


# -- schema -------------------------------------------------------------------------------------


async def test_a_new_store_is_migrated_to_the_current_schema(open_stores: OpenStore) -> None:
    # Both backends keep the same numbered migrations: the current schema is the last of them.
    assert len(SQLITE_MIGRATIONS) == len(POSTGRES_MIGRATIONS)
    first = await open_stores()
    assert await first.schema_version() == len(SQLITE_MIGRATIONS)
    # A second replica opening the same database finds nothing left to migrate.
    second = await open_stores()
    assert await second.schema_version() == len(SQLITE_MIGRATIONS)


# -- watermarks and channel ---------------------------------------------------------------------


async def test_watermarks_are_kept_per_source_and_round_trip(store: Store) -> None:
    assert await store.get_watermark("alerts_v2") is None
    mark = datetime(2026, 3, 1, 9, 15, 30, 123456, tzinfo=UTC)
    await store.set_watermark("alerts_v2", mark)
    await store.set_watermark("riskyUsers", T0)
    assert await store.get_watermark("alerts_v2") == mark
    assert await store.get_watermark("riskyUsers") == T0
    later = mark + timedelta(hours=1)
    await store.set_watermark("alerts_v2", later)
    assert await store.get_watermark("alerts_v2") == later


async def test_the_channel_is_remembered_and_replaced(store: Store) -> None:
    assert await store.get_channel() is None
    channel = ChannelRef(channel_id="19:abc@thread.tacv2", service_url="https://smba.example/", tenant_id="t")
    await store.set_channel(channel)
    assert await store.get_channel() == channel
    moved = channel.model_copy(update={"channel_id": "19:def@thread.tacv2"})
    await store.set_channel(moved)
    assert await store.get_channel() == moved


# -- cases and alerts ---------------------------------------------------------------------------


async def test_record_alert_opens_a_case_then_joins_it_and_is_idempotent(store: Store) -> None:
    first = await store.record_alert(alert("a1"), new_case_id="case-1", now=T0)
    assert (first.case_created, first.alert_new, first.alert_changed) == (True, True, True)
    assert first.case.id == "case-1" and first.case.version == 1 and first.case.opened_at == T0

    again = await store.record_alert(alert("a1"), new_case_id="case-x", now=T0)
    assert (again.case_created, again.alert_new, again.alert_changed) == (False, False, False)
    assert again.case == first.case

    updated = await store.record_alert(
        alert("a1", minutes=5, status="inProgress"), new_case_id="case-x", now=T0
    )
    assert (updated.case_created, updated.alert_new, updated.alert_changed) == (False, False, True)
    assert updated.case.version == 2 and updated.case.alerts[0].status == "inProgress"

    # An older copy of the alert arriving late changes nothing.
    stale = await store.record_alert(alert("a1", minutes=1), new_case_id="case-x", now=T0)
    assert (stale.alert_new, stale.alert_changed) == (False, False)
    assert stale.case.version == 2

    joined = await store.record_alert(alert("a2"), new_case_id="case-y", now=T0)
    assert (joined.case_created, joined.alert_new) == (False, True)
    assert joined.case.id == "case-1" and [a.id for a in joined.case.alerts] == ["a1", "a2"]

    other = await store.record_alert(alert("b1", LEE), new_case_id="case-2", now=T0)
    assert other.case_created and other.case.id == "case-2"

    assert [c.id for c in await store.list_cases()] == ["case-1", "case-2"]
    assert await store.get_case("case-1") == joined.case
    assert await store.get_case("missing") is None


async def test_the_identity_key_ignores_case(store: Store) -> None:
    assert ADELE.object_id is not None
    shouting = IdentityRef(object_id=ADELE.object_id.upper())
    first = await store.record_alert(alert("a1"), new_case_id="case-1", now=T0)
    second = await store.record_alert(alert("a2", shouting), new_case_id="case-2", now=T0)
    assert second.case.id == first.case.id and not second.case_created


async def test_find_active_case(store: Store) -> None:
    await store.record_alert(alert("a1"), new_case_id="case-1", now=T0)
    found = await store.find_active_case(ADELE)
    assert found is not None and found.id == "case-1"
    assert await store.find_active_case(LEE) is None


async def test_fifty_concurrent_alerts_for_one_identity_make_one_case(open_stores: OpenStore) -> None:
    first, second = await open_stores(), await open_stores()
    stores = [first, second]
    intakes = await asyncio.gather(
        *(stores[n % 2].record_alert(alert(f"a{n}"), new_case_id=f"case-{n}", now=T0) for n in range(50))
    )
    assert sum(intake.case_created for intake in intakes) == 1
    assert all(intake.alert_new for intake in intakes)
    assert len({intake.case.id for intake in intakes}) == 1
    cases = await first.list_cases()
    assert len(cases) == 1
    assert sorted(a.id for a in cases[0].alerts) == sorted(f"a{n}" for n in range(50))
    assert cases[0].version == 50  # opened at 1, then one write per joining alert


async def test_fifty_concurrent_copies_of_one_alert_record_it_once(open_stores: OpenStore) -> None:
    first, second = await open_stores(), await open_stores()
    intakes = await asyncio.gather(
        *(
            (first, second)[n % 2].record_alert(alert("a1"), new_case_id=f"case-{n}", now=T0)
            for n in range(50)
        )
    )
    assert sum(intake.alert_new for intake in intakes) == 1
    assert sum(intake.case_created for intake in intakes) == 1
    assert not any(intake.alert_changed for intake in intakes if not intake.alert_new)
    [case] = await first.list_cases()
    assert [a.id for a in case.alerts] == ["a1"] and case.version == 1


async def test_alert_text_with_a_nul_character_round_trips(store: Store) -> None:
    odd = alert("a1", title="Suspicious\x00sign-in from Ünïcödé 🙂")
    intake = await store.record_alert(odd, new_case_id="case-1", now=T0)
    stored = await store.get_case(intake.case.id)
    assert stored is not None and stored.alerts[0].title == odd.title


# -- compare-and-swap ---------------------------------------------------------------------------


async def test_update_case_applies_mutate_and_bumps_the_version(store: Store) -> None:
    case = await new_case(store)
    updated = await store.update_case(case.id, lambda c: c.revised(status=CaseStatus.CONTAINED))
    assert updated.version == case.version + 1 and updated.status is CaseStatus.CONTAINED
    assert await store.get_case(case.id) == updated
    # mutate returning None leaves the row alone.
    untouched = await store.update_case(case.id, lambda c: None)
    assert untouched == updated
    with pytest.raises(StoreError):
        await store.update_case("missing", lambda c: c)


async def test_a_write_between_read_and_write_makes_mutate_run_again_on_the_new_value(
    store: Store, other_process: OtherProcess
) -> None:
    case = await new_case(store)
    seen: list[Case] = []

    def mutate(current: Case) -> Case:
        seen.append(current)
        if len(seen) == 1:  # another replica changes the case after we read it
            other_process.run(other_process.store.update_case(case.id, lambda c: c.revised(protected=True)))
        return current.revised(target_checked=True)

    result = await store.update_case(case.id, mutate)
    assert len(seen) == 2 and seen[1].protected and seen[1].version == case.version + 1
    assert result.protected and result.target_checked and result.version == case.version + 2
    assert await store.get_case(case.id) == result


async def test_a_row_that_never_stops_changing_raises_conflict(
    store: Store, other_process: OtherProcess
) -> None:
    case = await new_case(store)

    def mutate(current: Case) -> Case:
        other_process.run(other_process.store.update_case(case.id, lambda c: c.revised()))
        return current.revised(target_checked=True)

    with pytest.raises(ConflictError):
        await store.update_case(case.id, mutate)
    stored = await store.get_case(case.id)
    assert stored is not None and not stored.target_checked


async def test_two_concurrent_mutators_both_land(open_stores: OpenStore) -> None:
    first, second = await open_stores(), await open_stores()
    case = await new_case(first)
    await asyncio.gather(
        first.update_case(case.id, lambda c: c.revised(protected=True)),
        second.update_case(case.id, lambda c: c.revised(target_checked=True)),
    )
    stored = await first.get_case(case.id)
    assert stored is not None and stored.protected and stored.target_checked
    assert stored.version == case.version + 2


async def test_ten_concurrent_increments_all_land(open_stores: OpenStore) -> None:
    first, second = await open_stores(), await open_stores()
    case = await new_case(first)
    await asyncio.gather(
        *((first, second)[n % 2].update_case(case.id, lambda c: c.revised()) for n in range(10))
    )
    stored = await first.get_case(case.id)
    assert (
        stored is not None and stored.revision == case.revision + 10 and stored.version == case.version + 10
    )


# -- action requests ----------------------------------------------------------------------------


async def test_requests_are_stored_listed_and_updated(store: Store) -> None:
    case = await new_case(store)
    other = await new_case(store, LEE)
    first = await store.add_request(request(case.id, "r1"))
    assert first.version == 1
    assert await store.get_request("r1") == first
    assert await store.get_request("missing") is None
    approved = await store.update_request(
        "r1", lambda r: r.model_copy(update={"state": RequestState.APPROVED})
    )
    assert approved.version == 2 and approved.state is RequestState.APPROVED
    await store.add_request(request(other.id, "r2"))
    done = await store.update_request("r1", lambda r: r.model_copy(update={"state": RequestState.SUCCEEDED}))
    await store.add_request(request(case.id, "r3"))

    assert [r.id for r in await store.list_requests(case.id)] == ["r1", "r3"]
    assert [r.id for r in await store.list_requests_in([RequestState.PENDING])] == ["r2", "r3"]
    assert await store.list_requests_in([RequestState.SUCCEEDED, RequestState.FAILED]) == [done]
    assert await store.list_requests_in([]) == []
    with pytest.raises(StoreError):
        await store.update_request("missing", lambda r: r)


async def test_a_case_has_at_most_one_active_request(store: Store) -> None:
    case = await new_case(store)
    await store.add_request(request(case.id, "r1"))
    with pytest.raises(DuplicateError):
        await store.add_request(request(case.id, "r2"))
    assert [r.id for r in await store.list_requests(case.id)] == ["r1"]

    await store.update_request("r1", lambda r: r.model_copy(update={"state": RequestState.CANCELLED}))
    await store.add_request(request(case.id, "r2"))
    # Bringing the cancelled one back to life would make two active requests.
    with pytest.raises(DuplicateError):
        await store.update_request("r1", lambda r: r.model_copy(update={"state": RequestState.PENDING}))
    r1 = await store.get_request("r1")
    assert r1 is not None and r1.state is RequestState.CANCELLED and r1.version == 2


async def test_concurrent_requests_on_one_case_admit_exactly_one(open_stores: OpenStore) -> None:
    first, second = await open_stores(), await open_stores()
    case = await new_case(first)
    results = await asyncio.gather(
        *((first, second)[n % 2].add_request(request(case.id, f"r{n}")) for n in range(10)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, ActionRequest) for r in results) == 1
    assert all(isinstance(r, DuplicateError) for r in results if not isinstance(r, ActionRequest))


async def test_two_concurrent_request_mutators_both_land(open_stores: OpenStore) -> None:
    first, second = await open_stores(), await open_stores()
    case = await new_case(first)
    await first.add_request(request(case.id, "r1"))
    await asyncio.gather(
        first.update_request("r1", lambda r: r.model_copy(update={"approvals": (*r.approvals, ALEX)})),
        second.update_request("r1", lambda r: r.model_copy(update={"decision_note": "looks right"})),
    )
    stored = await first.get_request("r1")
    assert stored is not None and stored.approvals == (ALEX,) and stored.decision_note == "looks right"
    assert stored.version == 3


# -- audit trail --------------------------------------------------------------------------------


async def test_audit_events_chain_read_back_and_filter(store: Store) -> None:
    appended = [await append(store, n, case_id=f"case-{n % 2}") for n in range(6)]
    appended.append(await append(store, 6, identity="lee.gu@contoso.com", case_id=None))
    assert [e.sequence for e in appended] == list(range(1, 8))
    assert appended[0].identity == "adele.vance@contoso.com"
    assert await store.list_audit() == appended
    assert await store.list_audit(identity="ADELE.VANCE@contoso.com") == appended[:6]
    assert await store.list_audit(case_id="case-1") == appended[1:6:2]
    assert await store.list_audit(identity="adele.vance@contoso.com", case_id="case-0", limit=2) == [
        appended[2],
        appended[4],
    ]
    assert await store.list_audit(limit=0) == []
    with pytest.raises(ValueError):
        await store.list_audit(limit=-1)
    check = await store.verify_audit()
    assert check.ok and check.checked == 7


async def test_an_empty_trail_verifies(store: Store) -> None:
    check = await store.verify_audit()
    assert check.ok and check.checked == 0


async def test_a_payload_that_is_not_json_is_refused_and_nothing_is_stored(store: Store) -> None:
    with pytest.raises(ValueError, match="not JSON"):
        await append(store, 0, payload={"when": T0})
    assert await store.list_audit() == []
    assert (await append(store, 1)).sequence == 1


async def test_fifty_concurrent_appends_from_two_stores_make_one_linear_chain(open_stores: OpenStore) -> None:
    first, second = await open_stores(), await open_stores()
    events = await asyncio.gather(*((first, second)[n % 2].append_audit(**_audit_args(n)) for n in range(50)))
    assert sorted(e.sequence for e in events) == list(range(1, 51))
    stored = await first.list_audit()
    assert [e.sequence for e in stored] == list(range(1, 51))
    assert all(later.previous_hash == earlier.hash for earlier, later in itertools.pairwise(stored))
    assert await second.verify_audit() == await first.verify_audit()
    assert (await first.verify_audit()).ok


def _audit_args(n: int) -> dict[str, Any]:
    return {
        "at": T0,
        "actor_id": "remediation-bot",
        "actor_name": "bot",
        "kind": "alert.recorded",
        "payload": {"n": n},
    }


# -- jobs ---------------------------------------------------------------------------------------

LEASE = timedelta(seconds=30)


async def test_the_backlog_counts_unfinished_jobs_and_dates_the_oldest(store: Store) -> None:
    empty = await store.job_backlog()
    assert (empty.pending, empty.oldest_enqueued_at) == (0, None)
    before = datetime.now(UTC)
    await store.enqueue_job("execute", "req-1:1", {})
    await store.enqueue_job("report", "req-2:1", {})
    job = await store.claim_job("execute", "w1", LEASE)
    assert job is not None

    backlog = await store.job_backlog()
    assert backlog.pending == 2  # queued and running alike
    assert backlog.oldest_enqueued_at is not None
    assert before - timedelta(seconds=5) <= backlog.oldest_enqueued_at <= datetime.now(UTC)

    await store.finish_job("req-1:1", "w1")
    assert (await store.job_backlog()).pending == 1


async def test_a_job_is_claimed_once_and_finished(store: Store) -> None:
    await store.enqueue_job("execute", "req-1:1", {"request_id": "req-1", "attempt": 1})
    # Enqueueing the same key again keeps the first job and its payload.
    await store.enqueue_job("execute", "req-1:1", {"request_id": "other"})
    assert await store.claim_job("recheck", "w1", LEASE) is None

    job = await store.claim_job("execute", "w1", LEASE)
    assert job is not None
    assert (job.key, job.kind, job.payload, job.worker, job.attempts) == (
        "req-1:1",
        "execute",
        {"request_id": "req-1", "attempt": 1},
        "w1",
        1,
    )
    assert job.lease_until > datetime.now(UTC) + timedelta(seconds=20)
    assert await store.claim_job("execute", "w2", LEASE) is None  # held

    await store.finish_job("req-1:1", "w1")
    await store.finish_job("req-1:1", "w1")  # idempotent
    assert await store.claim_job("execute", "w2", LEASE) is None
    # A finished key stays finished: enqueueing it again does not run it twice.
    await store.enqueue_job("execute", "req-1:1", {"request_id": "req-1"})
    assert await store.claim_job("execute", "w2", LEASE) is None
    with pytest.raises(StoreError, match="no job"):
        await store.finish_job("missing", "w1")


async def test_jobs_are_claimed_oldest_first(store: Store) -> None:
    for n in (3, 1, 2):
        await store.enqueue_job("execute", f"job-{n}", {"n": n})
    claimed = [await store.claim_job("execute", "w", LEASE) for _ in range(3)]
    assert [job.key for job in claimed if job] == ["job-3", "job-1", "job-2"]


async def test_a_job_whose_lease_ran_out_is_claimed_again(store: Store) -> None:
    await store.enqueue_job("execute", "job-1", {})
    first = await store.claim_job("execute", "dead-worker", timedelta(milliseconds=100))
    assert first is not None and first.attempts == 1
    assert await store.claim_job("execute", "w2", LEASE) is None  # lease still running

    second = await eventually(lambda: store.claim_job("execute", "w2", LEASE))
    assert second.key == "job-1" and second.worker == "w2" and second.attempts == 2
    # The worker that overran its lease learns so; the job stays with the new holder.
    with pytest.raises(ConflictError, match="w2"):
        await store.finish_job("job-1", "dead-worker")
    await store.finish_job("job-1", "w2")
    assert await store.claim_job("execute", "w3", timedelta(milliseconds=1)) is None


async def test_concurrent_claimers_never_share_a_job(open_stores: OpenStore) -> None:
    first, second = await open_stores(), await open_stores()
    for n in range(5):
        await first.enqueue_job("execute", f"job-{n}", {"n": n})
    claims = await asyncio.gather(
        *((first, second)[n % 2].claim_job("execute", f"w{n}", LEASE) for n in range(20))
    )
    keys = [job.key for job in claims if job is not None]
    assert sorted(keys) == [f"job-{n}" for n in range(5)]


async def test_job_arguments_are_checked(store: Store) -> None:
    with pytest.raises(ValueError, match="plain JSON"):
        await store.enqueue_job("execute", "job-1", {"at": T0})
    with pytest.raises(ValueError, match="positive"):
        await store.claim_job("execute", "w", timedelta(0))


# -- leadership ---------------------------------------------------------------------------------


async def test_one_store_leads_until_it_releases(open_stores: OpenStore) -> None:
    first, second = await open_stores(), await open_stores()
    assert await first.try_lead("poller")
    assert await first.try_lead("poller")  # still leading: asking again is harmless
    assert not await second.try_lead("poller")
    assert await second.try_lead("recheck")  # another name is another election
    await second.release_lead("poller")  # not held: nothing happens

    await first.release_lead("poller")
    assert await second.try_lead("poller")
    assert not await first.try_lead("poller")


async def test_closing_the_leader_lets_another_lead(open_stores: OpenStore) -> None:
    first, second = await open_stores(), await open_stores()
    assert await first.try_lead("poller")
    assert not await second.try_lead("poller")
    await first.close()
    assert await second.try_lead("poller")
