"""SIGTERM: a replica stops taking work and exits promptly, handing its in-flight job back.

Real processes (``remediation-bot serve``) on PostgreSQL, the sandbox tenant and the recording
Bot Connector. The job lease is long (60 s), so the second replica finishing the action soon
after the first exited proves the first released its claim rather than letting it lapse.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.domain.models import RequestState
from devtools.sandbox import SandboxTenant
from tests.store.test_crash_windows import USERS, Crash, _case_id, _scenario, _until
from tests.support.connector import RecordingConnector
from tests.support.harness import card_action, install_activity, invoke_activity

pytestmark = pytest.mark.postgres


@pytest.fixture
async def crash(postgres_url: str, tmp_path: Path) -> AsyncIterator[Crash]:
    tenant = SandboxTenant(_scenario(), cert_dir=tmp_path / "tenant")
    await tenant.start()
    connector = RecordingConnector()
    await connector.start()
    crash = Crash(tenant, connector, postgres_url, tmp_path)
    yield crash
    await crash.close()
    await connector.stop()
    await tenant.stop()


async def test_sigterm_with_an_action_in_flight_exits_and_releases_its_job(
    crash: Crash, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tests.store.test_crash_windows.LEASE_SECONDS", "60")
    first = await crash.start()
    await first.post(install_activity(crash.connector.service_url))
    await _until(lambda: len(crash.connector.of_kind("create")) >= len(USERS), 60, "the cards")
    post = crash.connector.of_kind("create")[0]
    user = next(u for u in USERS if u["displayName"] in post.text)
    # The Graph write hangs: the action is in flight when the replica is told to stop.
    crash.tenant.inject_fault("PATCH", f"/users/{user['id']}$", status=None, delay=30)
    await crash.click_disable(first, post)
    store = await crash.open_store()

    async def in_flight() -> bool:
        requests = await store.list_requests(_case_id(post))
        return any(r.state is RequestState.EXECUTING and r.dispatched for r in requests)

    deadline = time.monotonic() + 30
    while not await in_flight():
        assert time.monotonic() < deadline, "the action never started"
        await asyncio.sleep(0.1)

    first.process.terminate()
    # A generous bound on the process's own exit (the target is 5 s; the hanging call takes 30).
    await _until(lambda: first.process.poll() is not None, 10, "the replica exiting after SIGTERM")
    assert first.process.returncode == 0
    assert "released unfinished" in first.log_path.read_text(errors="replace")

    # Another replica takes the released job at once (its lease had 60 s left) and settles it.
    await crash.start()
    await _until(lambda: len(crash.replies(post)) >= 1, 30, "the second replica finishing the action")
    await crash.settled()
    # The first replica's write was cut off mid-call (the sandbox records a request once answered);
    # the second read the account back and never sent it again.
    assert crash.patches(user["id"]) <= 1, "never sent twice"
    (reply,) = crash.replies(post)
    assert "not sent again" in reply


OUTSIDER = {"id": "aaaaaaaa-0000-4000-8000-0000000000ff", "name": "Someone Else"}
# More Bot Connector calls in flight than the event loop's default executor has threads (botbuilder
# sends each request from one of them and blocks it until Teams answers).
CROWD = min(32, (os.cpu_count() or 1) + 4) + 4


@pytest.fixture(params=["postgres", "sqlite"])
async def crowd(
    request: pytest.FixtureRequest, postgres_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Crash, list[dict[str, str]]]]:
    users = [
        {
            "id": f"7f000000-0000-4000-8000-{i:012d}",
            "userPrincipalName": f"crowd{i}@contoso.com",
            "displayName": f"Crowd User {i}",
        }
        for i in range(CROWD)
    ]
    alerts = [
        {
            "user": u["userPrincipalName"],
            "serviceSource": "azureAdIdentityProtection",
            "title": f"Leaked credentials of {u['displayName']}",
            "severity": "high",
            "minutes_ago": 10,
        }
        for u in users
    ]
    tenant = SandboxTenant({"users": users, "alerts": alerts}, cert_dir=tmp_path / "tenant")
    await tenant.start()
    connector = RecordingConnector()
    await connector.start()
    url = postgres_url if request.param == "postgres" else f"sqlite:///{tmp_path / 'bot.db'}"
    crash = Crash(tenant, connector, url, tmp_path)
    yield crash, users
    await crash.close()
    await connector.stop()
    await tenant.stop()


async def test_sigterm_with_many_requests_and_calls_in_flight_exits_and_releases_every_job(
    crowd: tuple[Crash, list[dict[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    crash, users = crowd
    monkeypatch.setattr("tests.store.test_crash_windows.LEASE_SECONDS", "60")
    first = await crash.start()
    await first.post(install_activity(crash.connector.service_url))
    await _until(lambda: len(crash.connector.of_kind("create")) >= len(users), 120, "the cards")
    posts = crash.connector.of_kind("create")
    # From now on the Bot Connector takes a minute to answer anything: every action is carried
    # out, and its card update (one per thread, each holding a thread of the default executor)
    # is in flight, its job not finished, when the replica is told to stop.
    crash.connector.hold = 60
    await asyncio.gather(*(crash.click_disable(first, post) for post in posts))
    store = await crash.open_store()

    async def all_carried_out() -> bool:
        for post in posts:
            requests = await store.list_requests(_case_id(post))
            if not any(r.state is RequestState.SUCCEEDED for r in requests):
                return False
        return True

    deadline = time.monotonic() + 60
    while not await all_carried_out():
        assert time.monotonic() < deadline, "the actions were not carried out"
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # their card updates are on their way to the Bot Connector

    async def click(n: int) -> None:
        post = posts[n % len(posts)]
        data = dict(card_action(post.card or {}, "disableAccount")["data"], reason="in flight")
        activity = invoke_activity(
            crash.connector.service_url,
            post.conversation_id,
            user_object_id=OUTSIDER["id"],
            user_name=OUTSIDER["name"],
            verb="disableAccount",
            data=data,
        )
        # Cut off by the shutdown or answered: either is fine, a hang is not.
        with contextlib.suppress(aiohttp.ClientError):
            await first.post(activity)

    clicks = [asyncio.create_task(click(n)) for n in range(100)]
    await asyncio.sleep(0.2)  # the clicks are arriving and being answered
    first.process.terminate()
    # A generous bound on the process's own exit (the target is 5 s; the calls in flight take 60).
    await _until(lambda: first.process.poll() is not None, 10, "the replica exiting after SIGTERM")
    assert first.process.returncode == 0
    await asyncio.wait_for(asyncio.gather(*clicks), 30)
    log = first.log_path.read_text(errors="replace")
    assert log.count("released unfinished") == len(users), log[-3000:]

    # Another replica takes every released job at once (their leases had 60 s left) and reports.
    crash.connector.hold = 0
    await crash.start()
    await _until(lambda: all(crash.replies(post) for post in posts), 90, "the second replica's replies")
    await crash.settled()
    for user in users:
        assert crash.patches(user["id"]) == 1, "carried out once, never sent again"
