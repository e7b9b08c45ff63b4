"""Storm mode in the store, on SQLite and PostgreSQL: replicas racing through one storm open
exactly one campaign; a campaign stops accepting after its window; campaigns and bulk requests
are compare-and-swap rows."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from bot.domain.campaigns import BulkRequest, Campaign
from bot.domain.models import Alert, IdentityRef, RequestState
from bot.domain.policy import StormRule
from bot.store.base import Store
from devtools.samples import bulk_request
from tests.store.conftest import OpenStore
from tests.store.test_contract import T0, alert

RULE = StormRule(threshold=20, window=timedelta(minutes=10))


def seen(alert_id: str, who: IdentityRef, at: timedelta) -> Alert:
    """An alert first created ``at`` after T0."""
    return alert(alert_id, who, created_at=T0 + at, updated_at=T0 + at)


def person(i: int) -> IdentityRef:
    return IdentityRef(object_id=f"5f000000-0000-4000-8000-{i:012d}", upn=f"spray{i}@contoso.com")


async def test_replicas_racing_through_one_storm_open_exactly_one_campaign(open_stores: OpenStore) -> None:
    replicas = [await open_stores() for _ in range(4)]

    async def record(i: int) -> None:
        store = replicas[i % len(replicas)]
        await store.record_alerts(
            [seen(f"spray-{i}", person(i), timedelta(seconds=i % 7))],
            new_case_id=lambda: f"case-{uuid.uuid4().hex[:12]}",
            now=T0 + timedelta(minutes=1),
            storm=RULE,
            new_campaign_id=lambda: f"camp-{uuid.uuid4().hex[:8]}",
        )

    await asyncio.gather(*(record(i) for i in range(40)))
    store = replicas[0]
    campaigns = await store.list_campaigns()
    assert len(campaigns) == 1
    [campaign] = campaigns
    cases = await store.list_cases()
    assert len(cases) == 40
    # Every case joined it: the first twenty when it opened, the rest as they came.
    assert {case.campaign_id for case in cases} == {campaign.id}
    assert len(await store.list_campaign_cases(campaign.id)) == 40
    assert campaign.members == 40
    # Members whose card was never posted are left to the campaign card.
    assert await store.list_cases_needing_publishing() == []


async def test_below_the_threshold_no_campaign_opens(store: Store) -> None:
    for i in range(20):
        await store.record_alert(alert(f"a{i}", person(i)), new_case_id=f"case-{i}", now=T0, storm=RULE)
    assert await store.list_campaigns() == []
    assert len(await store.list_cases_needing_publishing()) == 20


async def test_cases_first_seen_outside_the_window_do_not_count(store: Store) -> None:
    later = T0 + timedelta(hours=1)
    for i in range(15):
        await store.record_alert(
            seen(f"old{i}", person(i), timedelta(0)), new_case_id=f"old-{i}", now=later, storm=RULE
        )
    # Stored at the same moment, but first seen 11 minutes apart: a backlog, not one storm.
    for i in range(15, 30):
        await store.record_alert(
            seen(f"new{i}", person(i), timedelta(minutes=11)), new_case_id=f"new-{i}", now=later, storm=RULE
        )
    assert await store.list_campaigns() == []


async def test_a_campaign_stops_accepting_after_its_window_and_a_new_storm_opens_another(
    store: Store,
) -> None:
    now = T0 + timedelta(days=1)
    for i in range(21):
        await store.record_alert(
            seen(f"a{i}", person(i), timedelta(0)), new_case_id=f"a-{i}", now=now, storm=RULE
        )
    [first] = await store.list_campaigns()
    assert first.accepting and first.members == 21
    # Nine minutes later a straggler still joins (within the window of the latest member).
    straggler = await store.record_alert(
        seen("s", person(99), timedelta(minutes=9)), new_case_id="s-1", now=now, storm=RULE
    )
    assert straggler.case.campaign_id == first.id
    # Long after, a lone case does not join the old campaign; the old one stops accepting.
    lone = await store.record_alert(
        seen("l", person(200), timedelta(hours=2)), new_case_id="l-1", now=now, storm=RULE
    )
    assert lone.case.campaign_id == "" and lone.case.needs_publishing
    reread = await store.get_campaign(first.id)
    assert reread is not None and not reread.accepting
    for i in range(300, 321):
        await store.record_alert(
            seen(f"b{i}", person(i), timedelta(hours=2)), new_case_id=f"b-{i}", now=now, storm=RULE
        )
    campaigns = await store.list_campaigns()
    assert len(campaigns) == 2 and campaigns[1].accepting and campaigns[1].members == 22


async def test_campaign_and_bulk_rows_are_compare_and_swap(store: Store) -> None:
    for i in range(21):
        await store.record_alert(alert(f"a{i}", person(i)), new_case_id=f"a-{i}", now=T0, storm=RULE)
    [campaign] = await store.list_campaigns()
    assert [c.id for c in await store.list_campaigns_needing_publishing()] == [campaign.id]

    def posted(current: Campaign) -> Campaign:
        return current.model_copy(update={"published_revision": current.revision, "publishing_by": "me"})

    stored, outcome = await store.swap_campaign(campaign.id, posted)
    assert outcome == stored and stored.version == campaign.version + 1
    _, refused = await store.swap_campaign(campaign.id, lambda current: "no")
    assert refused == "no"

    bulk = bulk_request(RequestState.PENDING).model_copy(update={"campaign_id": campaign.id})
    added = await store.add_bulk(bulk)
    assert added.version == 1
    assert [b.id for b in await store.list_bulks(campaign.id)] == [bulk.id]
    assert [b.id for b in await store.list_bulks_in((RequestState.PENDING,))] == [bulk.id]

    async def approve(n: int) -> object:
        def mutate(current: BulkRequest) -> BulkRequest | str:
            if current.state is not RequestState.PENDING:
                return "already"
            approval = current.approval.model_copy(update={"state": RequestState.APPROVED})
            return current.model_copy(update={"approval": approval})

        return (await store.swap_bulk(bulk.id, mutate))[1]

    outcomes = await asyncio.gather(*(approve(n) for n in range(8)))
    assert sum(1 for o in outcomes if o != "already") == 1  # one writer won the change
    assert await store.list_bulks_in((RequestState.PENDING,)) == []
