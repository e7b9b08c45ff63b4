"""Two replicas of the real app on one store (SQLite file or PostgreSQL schema), racing.

Each replica is the app from :func:`bot.web.app.create_app` with its own store client, served over
HTTP, against the sandbox tenant and the recording Bot Connector. What one replica announces
or runs "once" must stay once when both do the same work at the same moment: two sweepers
expire a request with one audit event and one thread note; starts on both replicas never run
more destructive actions than the blast radius allows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.config.settings import Settings
from bot.domain.models import RequestState
from bot.web.app import STORE, utc_now
from devtools.sandbox import SandboxTenant
from tests.conftest import RESPONDER, SECOND_RESPONDER, Clock, write_policy
from tests.support.connector import RecordingConnector
from tests.support.harness import BotHarness, card_action, install_activity, invoke_activity
from tests.support.timing import until

PEOPLE = 8


def _scenario() -> dict[str, Any]:
    users = [
        {
            "id": f"7c000000-0000-4000-8000-{i:012d}",
            "userPrincipalName": f"person{i}@contoso.com",
            "displayName": f"Person {i}",
        }
        for i in range(PEOPLE)
    ]
    users.append(
        {"id": RESPONDER["id"], "userPrincipalName": "alex.wilber@contoso.com", "displayName": "Alex"}
    )
    alerts = [
        {
            "user": u["userPrincipalName"],
            "serviceSource": "azureAdIdentityProtection",
            "title": f"Leaked credentials of {u['displayName']}",
            "severity": "high",
            "minutes_ago": 5,
        }
        for u in users[:PEOPLE]
    ]
    return {"users": users, "alerts": alerts}


@pytest.fixture
async def tenant(tmp_path: Path, clock: Clock) -> AsyncIterator[SandboxTenant]:
    sandbox = SandboxTenant(_scenario(), cert_dir=tmp_path / "tenant", clock=clock)
    await sandbox.start()
    yield sandbox
    await sandbox.stop()
    assert sandbox.violations == [], "the bot broke the Graph contract"


@pytest.fixture
async def replicas(
    store_url: str, make_settings: Callable[..., Settings], clock: Clock, tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    started: list[BotHarness] = []

    async def start(**policy: Any) -> tuple[BotHarness, BotHarness]:
        path = write_policy(tmp_path / "replicas-policy.yaml", **policy)
        for _ in range(2):
            bot = BotHarness(make_settings(store_url=store_url, policy_file=str(path)), clock)
            await bot.start()
            started.append(bot)
        return started[0], started[1]

    yield start
    for bot in started:
        await bot.stop()


async def _open_cards(one: BotHarness, connector: RecordingConnector) -> list[Any]:
    await one.post(install_activity(connector.service_url))
    await one.poller.poll_once()
    await one.service.drain()
    posts = connector.of_kind("create")
    assert len(posts) == PEOPLE
    return posts


async def _click(
    bot: BotHarness, connector: RecordingConnector, post: Any, verb: str, person: dict[str, str] = RESPONDER
) -> None:
    """Click ``verb`` on the post's current card (its last update, else the post) as ``person``."""
    updates = [u for u in connector.of_kind("update") if u.activity_id == post.activity_id]
    card = (updates[-1] if updates else post).card or {}
    data = dict(card_action(card, verb)["data"], reason="leaked credentials")
    status, answer = await bot.post(
        invoke_activity(
            connector.service_url,
            post.conversation_id,
            user_object_id=person["id"],
            user_name=person["name"],
            verb=verb,
            data=data,
        )
    )
    assert status == 200, answer


async def test_two_sweeping_replicas_remind_and_expire_once(
    replicas: Callable[..., Any], connector: RecordingConnector, clock: Clock
) -> None:
    one, two = await replicas(approvals={"disableAccount": 2})
    posts = await _open_cards(one, connector)
    for n, post in enumerate(posts):
        await _click((one, two)[n % 2], connector, post, "disableAccount")
    for bot in (one, two):
        await bot.service.drain()
    store = one.app[STORE]
    assert len(await store.list_requests_in([RequestState.PENDING])) == PEOPLE

    def notes(post: Any, words: str) -> list[str]:
        return [c.text for c in connector.in_thread(post.activity_id) if words in c.text]

    async def sweep_on_both() -> None:
        await asyncio.gather(*(bot.service.sweep() for bot in (one, two, one, two)))
        for bot in (one, two):
            await bot.service.drain()

    clock.now += timedelta(minutes=11)
    await sweep_on_both()
    kinds = [event.kind for event in await store.list_audit()]
    assert kinds.count("request.reminded") == PEOPLE, "one reminder event per request"
    assert [len(notes(post, "Reminder")) for post in posts] == [1] * PEOPLE, "one reminder note each"

    clock.now += timedelta(minutes=20)
    await sweep_on_both()
    kinds = [event.kind for event in await store.list_audit()]
    assert kinds.count("request.expired") == PEOPLE, "one expiry event per request"
    assert [len(notes(post, "expired")) for post in posts] == [1] * PEOPLE, "one expiry note each"
    assert len(await store.list_requests_in([RequestState.EXPIRED])) == PEOPLE


async def test_concurrent_starts_on_two_replicas_run_exactly_the_blast_radius(
    replicas: Callable[..., Any], connector: RecordingConnector, tenant: SandboxTenant
) -> None:
    limit = 3
    one, two = await replicas(approvals={"disableAccount": 2}, blast_radius_per_hour=limit)
    posts = await _open_cards(one, connector)
    for n, post in enumerate(posts):
        await _click((one, two)[n % 2], connector, post, "disableAccount")
    for bot in (one, two):
        await bot.service.drain()
    # Every request is approved at the same moment on both replicas and queued; both replicas'
    # workers claim the jobs and start them at the same time.
    await asyncio.gather(
        *(
            _click((two, one)[n % 2], connector, post, "approve", SECOND_RESPONDER)
            for n, post in enumerate(posts)
        )
    )
    for _ in range(2):
        await asyncio.gather(one.service.run_jobs(), two.service.run_jobs())
        for bot in (one, two):
            await bot.service.drain()
    store = one.app[STORE]
    succeeded = await store.list_requests_in([RequestState.SUCCEEDED])
    failed = await store.list_requests_in([RequestState.FAILED])
    assert len(succeeded) == limit, "exactly the limit ran"
    assert len(failed) == PEOPLE - limit
    assert all(r.result is not None and "blast-radius limit" in r.result.summary for r in failed)
    patches = [r for r in tenant.requests if r.method == "PATCH"]
    assert len(patches) == limit, "one Graph write per action that ran, and no more"
    outcomes = [
        c for c in connector.of_kind("send") if "Disable account succeeded" in c.text or "limit" in c.text
    ]
    assert len(outcomes) == PEOPLE, "every request's outcome is said once in its thread"


async def test_a_card_whose_post_outlasts_the_lease_is_posted_once(
    store_url: str,
    make_settings: Callable[..., Settings],
    connector: RecordingConnector,
    tmp_path: Path,
) -> None:
    """Teams' retries can outlast any fixed lease: the sender renews it, so the other replica,
    trying the same card meanwhile, waits instead of posting a second one."""
    path = write_policy(tmp_path / "replicas-policy.yaml")
    settings = make_settings(store_url=store_url, policy_file=str(path), card_lease_seconds=1)
    one, two = BotHarness(settings, utc_now), BotHarness(settings, utc_now)
    await one.start()
    await two.start()
    try:
        await one.post(install_activity(connector.service_url))
        # Two 429s of 1.5 s each: the first card takes three leases to land.
        connector.fail_next("create", 429, times=2, retry_after="1.5")
        # Records every alert, then sends the cards one by one.
        polling = asyncio.create_task(one.poller.poll_once())
        # The first post meets its second 429 after waiting out the first (1.5 s): by then its
        # one-second lease would have lapsed had the sender not renewed it.
        await until(
            lambda: (
                sum(1 for kind, _, status in connector.answered if kind == "create" and status == 429) >= 2
            ),
            "the first post's second 429",
        )
        await two.service.publish_cards()
        await polling
        for bot in (one, two):
            await bot.service.drain()
        await asyncio.gather(one.service.publish_cards(), two.service.publish_cards())
        for bot in (one, two):
            await bot.service.drain()
    finally:
        await one.stop()
        await two.stop()
    posts = connector.of_kind("create")
    assert len(posts) == PEOPLE, "one card per case, however long a post took"
    assert len({p.text for p in posts}) == PEOPLE
