"""A replica killed at each named step leaves a state the survivor finishes exactly once.

Real processes (``remediation-bot serve``) on PostgreSQL, the sandbox tenant and the recording
Bot Connector. The first replica runs with ``REMEDIATION_FAULT_POINTS=<step>`` and sends itself
SIGKILL when it reaches the step (see :mod:`bot.faults`); a second replica, started after it died,
must finish the work: one card (or a second one that says it was posted again), one Graph write,
one result reply (or a second one marked as a re-send), no request left executing, an intact
audit chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from bot.domain.models import CaseStatus, RequestState
from bot.services import LATE_NOTE, REPOSTED_NOTE, RESENT_MARKER
from bot.store import open_store
from bot.store.base import Store
from devtools.sandbox import SandboxTenant
from tests.support.connector import ConnectorCall, RecordingConnector
from tests.support.harness import card_action, install_activity, invoke_activity
from tests.support.replica import Replica, free_port, replica_env

pytestmark = pytest.mark.postgres

REQUESTER = {"id": "aaaaaaaa-0000-4000-8000-000000000001", "name": "Alex Wilber"}
USERS = [
    {
        "id": f"7d000000-0000-4000-8000-{i:012d}",
        "userPrincipalName": f"crash{i}@contoso.com",
        "displayName": f"Crash User {i}",
    }
    for i in range(3)
]
LEASE_SECONDS = "2"
REPOSTED = REPOSTED_NOTE.split(":")[0]
RESENT = RESENT_MARKER.split(":")[0]
_logs = itertools.count()


def _scenario() -> dict[str, Any]:
    alerts = [
        {
            "user": u["userPrincipalName"],
            "serviceSource": "azureAdIdentityProtection",
            "title": f"Leaked credentials of {u['displayName']}",
            "severity": "high",
            "minutes_ago": 10 - n,
        }
        for n, u in enumerate(USERS)
    ]
    return {"users": USERS, "alerts": alerts}


async def _until(check: Callable[[], Any], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {limit:.0f} s")


def _frozen(replica: Replica) -> bool:
    """The process is stopped (SIGSTOP): state ``T`` in /proc."""
    stat = Path(f"/proc/{replica.process.pid}/stat").read_text()
    return stat.split(") ")[1].startswith("T")


def _case_id(call: ConnectorCall) -> str:
    """The case a posted card belongs to (every Action.Execute on it carries the case id)."""
    found = re.search(r'"caseId": "([^"]+)"', str(call.card).replace("'", '"'))
    assert found, "a case card names its case"
    return found.group(1)


class Crash:
    """A first replica armed to die at one step, a survivor started after it died, and what
    the channel, the tenant and the store show."""

    def __init__(self, tenant: SandboxTenant, connector: RecordingConnector, url: str, tmp: Path) -> None:
        self.tenant, self.connector, self.url, self.tmp = tenant, connector, url, tmp
        self.replicas: list[Replica] = []
        self.store: Store | None = None

    async def start(self, *, fault: str = "", healthy: bool = True, **env: str) -> Replica:
        policy = self.tmp / "policy.yaml"
        policy.write_text(
            yaml.safe_dump(
                {
                    "responders": {"users": [REQUESTER["id"]]},
                    "approvers": {"users": [REQUESTER["id"]]},
                    "approvals": {"disableAccount": 1},
                    "privileged_targets": {"roles": []},
                }
            )
        )
        extra = {"REMEDIATION_FAULT_POINTS": fault} if fault else {}
        env = replica_env(
            self.tenant,
            store_url=self.url,
            policy=policy,
            port=free_port(),
            **{
                "POLL_INTERVAL_SECONDS": "1",
                "JOB_POLL_SECONDS": "0.3",
                "JOB_LEASE_SECONDS": LEASE_SECONDS,
                "CARD_LEASE_SECONDS": LEASE_SECONDS,
                "CARD_UPDATE_COALESCE_SECONDS": "0.2",
                "GRAPH_IDENTITY_PROTECTION_INTERVAL": "0.05",
                **extra,
                **env,
            },
        )
        replica = Replica(env, self.tmp / f"replica-{next(_logs)}.log")
        self.replicas.append(replica)
        if healthy:
            await replica.wait_healthy()
        return replica

    async def died_at(self, replica: Replica, step: str) -> None:
        await _until(lambda: replica.process.poll() is not None, 60, f"the replica dying at {step}")
        assert replica.process.returncode == -signal.SIGKILL
        assert f"fault point {step}" in replica.log_path.read_text(errors="replace")

    async def click_disable(self, replica: Replica, post: ConnectorCall) -> None:
        data = dict(card_action(post.card or {}, "disableAccount")["data"], reason="crash test")
        activity = invoke_activity(
            self.connector.service_url,
            post.conversation_id,
            user_object_id=REQUESTER["id"],
            user_name=REQUESTER["name"],
            verb="disableAccount",
            data=data,
        )
        # The replica may die while answering: the click then gets no answer, as in Teams.
        with contextlib.suppress(aiohttp.ClientError):
            status, _ = await replica.post(activity)
            assert status == 200

    def replies(self, post: ConnectorCall) -> list[str]:
        return [c.text for c in self.connector.in_thread(post.activity_id) if "Disable account" in c.text]

    def patches(self, user_id: str) -> int:
        return sum(1 for r in self.tenant.requests if r.method == "PATCH" and r.path.endswith(user_id))

    async def open_store(self) -> Store:
        if self.store is None:
            self.store = await open_store(self.url)
        return self.store

    async def settled(self) -> None:
        """Nothing left half-done: no request approved or executing, the audit chain intact."""
        store = await self.open_store()
        deadline = asyncio.get_running_loop().time() + 60

        async def busy() -> bool:
            # Still running, or finished but its report not yet recorded as sent.
            if await store.list_requests_in([RequestState.APPROVED, RequestState.EXECUTING]):
                return True
            finished = await store.list_requests_in([RequestState.SUCCEEDED, RequestState.FAILED])
            return any(r.reported_attempt < r.attempt for r in finished)

        while await busy():
            assert asyncio.get_running_loop().time() < deadline, "a request was left unfinished or unreported"
            await asyncio.sleep(0.1)
        check = await store.verify_audit()
        assert check.ok, check.problem

    async def close(self) -> None:
        for replica in self.replicas:
            replica.stop()
        if self.store is not None:
            await self.store.close()


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
    assert tenant.violations == []


async def test_killed_after_posting_a_card_before_saving_where_it_landed(crash: Crash) -> None:
    first = await crash.start(fault="card.posted")
    await first.post(install_activity(crash.connector.service_url))
    await crash.died_at(first, "card.posted")
    (orphan,) = crash.connector.of_kind("create")
    await crash.start()
    # Its posting lease lapses; the survivor posts it again, saying so, and posts the others.
    await _until(lambda: len(crash.connector.of_kind("create")) >= len(USERS) + 1, 60, "the cards")
    await crash.settled()
    posts = crash.connector.of_kind("create")
    by_case: dict[str, list[ConnectorCall]] = {}
    for post in posts:
        by_case.setdefault(_case_id(post), []).append(post)
    assert len(by_case) == len(USERS)
    again = by_case.pop(_case_id(orphan))
    assert [REPOSTED in p.text for p in again] == [False, True], "posted again, and it says so"
    assert all(len(p) == 1 and REPOSTED not in p[0].text for p in by_case.values()), "others: once"
    store = await crash.open_store()
    case = await store.get_case(_case_id(orphan))
    assert case is not None and case.card is not None
    assert case.card.activity_id == again[1].activity_id, "the card kept up to date is the new one"


@pytest.mark.parametrize(
    ("step", "patches", "outcome"),
    [
        # Started, nothing sent: the survivor runs it (once).
        ("action.started", 1, "Disable account succeeded"),
        # Dispatched, maybe sent: the survivor reads back; not done, so it says so and never sends.
        ("action.dispatched", 0, "not sent again"),
        # Graph answered, result not stored: the survivor reads back, finds it done, reports it.
        ("graph.answered", 1, "it was not sent again"),
    ],
)
async def test_killed_while_executing_the_survivor_finishes_it_once(
    crash: Crash, step: str, patches: int, outcome: str
) -> None:
    first = await crash.start(fault=step)
    await first.post(install_activity(crash.connector.service_url))
    await _until(lambda: len(crash.connector.of_kind("create")) >= len(USERS), 60, "the cards")
    post = crash.connector.of_kind("create")[0]
    user = next(u for u in USERS if u["displayName"] in post.text)
    await crash.click_disable(first, post)
    await crash.died_at(first, step)
    assert crash.replies(post) == [], "the first replica said nothing"
    await crash.start()
    await _until(lambda: len(crash.replies(post)) >= 1, 60, "the survivor finishing the action")
    await crash.settled()
    (reply,) = crash.replies(post)
    assert outcome in reply and RESENT not in reply
    assert crash.patches(user["id"]) == patches, "never sent twice"
    store = await crash.open_store()
    (request,) = await store.list_requests(_case_id(post))
    assert request.state is (RequestState.SUCCEEDED if patches else RequestState.FAILED)
    assert request.reported_attempt == request.attempt


@pytest.mark.parametrize(
    ("step", "replies"),
    [
        # The report was claimed, nothing sent: the survivor sends it, marked as a re-send.
        ("report.claimed", [True]),
        # The reply went out, it was not recorded: the survivor sends it again, marked.
        ("report.sent", [False, True]),
    ],
)
async def test_killed_while_reporting_the_thread_hears_the_result(
    crash: Crash, step: str, replies: list[bool]
) -> None:
    first = await crash.start(fault=step)
    await first.post(install_activity(crash.connector.service_url))
    await _until(lambda: len(crash.connector.of_kind("create")) >= len(USERS), 60, "the cards")
    post = crash.connector.of_kind("create")[0]
    user = next(u for u in USERS if u["displayName"] in post.text)
    await crash.click_disable(first, post)
    await crash.died_at(first, step)
    await crash.start()
    await _until(lambda: len(crash.replies(post)) >= len(replies), 60, "the survivor reporting")
    await crash.settled()
    sent = crash.replies(post)
    assert [RESENT in text for text in sent] == replies, "a duplicate only with the re-send marker"
    assert all("Disable account succeeded" in text for text in sent)
    assert crash.patches(user["id"]) == 1, "reporting never runs the action again"
    store = await crash.open_store()
    (request,) = await store.list_requests(_case_id(post))
    assert request.state is RequestState.SUCCEEDED and request.reported_attempt == 1


async def test_a_replica_frozen_before_its_graph_call_corrects_the_record_when_it_sends(crash: Crash) -> None:
    """The window a lease cannot close: a replica paused (not killed) between marking the attempt
    dispatched and its Graph call, for longer than its lease. The survivor reads back, finds
    nothing done and says so; when the paused one wakes and sends, it corrects the thread."""
    first = await crash.start(fault="action.dispatched:stop")
    await first.post(install_activity(crash.connector.service_url))
    await _until(lambda: len(crash.connector.of_kind("create")) >= len(USERS), 60, "the cards")
    post = crash.connector.of_kind("create")[0]
    user = next(u for u in USERS if u["displayName"] in post.text)
    clicking = asyncio.create_task(crash.click_disable(first, post))

    def frozen() -> bool:
        stat = Path(f"/proc/{first.process.pid}/stat").read_text()
        return stat.split(") ")[1].startswith("T")

    await _until(frozen, 60, "the first replica freezing at action.dispatched")
    await crash.start()
    await _until(lambda: len(crash.replies(post)) >= 1, 60, "the survivor reading back")
    (failed,) = crash.replies(post)
    assert "not sent again" in failed and crash.patches(user["id"]) == 0
    os.kill(first.process.pid, signal.SIGCONT)
    await _until(lambda: len(crash.replies(post)) >= 2, 60, "the woken replica correcting the record")
    with contextlib.suppress(Exception):
        await asyncio.wait_for(clicking, 10)
    await crash.settled()
    assert crash.patches(user["id"]) == 1, "sent once, by the replica that marked it dispatched"
    failed, correction = crash.replies(post)
    assert correction.startswith(LATE_NOTE) and "Disable account succeeded" in correction
    store = await crash.open_store()
    case = await store.get_case(_case_id(post))
    assert case is not None and case.status is CaseStatus.CONTAINED, "the card shows the truth"
    kinds = [e.kind for e in await store.list_audit(case_id=case.id)]
    assert kinds.count("action.late_result") == 1


async def test_a_job_claimed_again_before_its_first_worker_started_it_is_still_run_once(crash: Crash) -> None:
    """Two workers read one request as approved. The first, stopped past its lease before writing
    Start, starts it after the second claimed the job, and dies before sending anything. The
    second wakes, finds it executing rather than approved, and, holding the job, must run it:
    never finish the job and leave the request executing with nobody to carry it on.

    The first replica's job poll is long, so the click's worker is its only claimer; the second
    replica has no clicks, so its job poll (one loop, frozen with the job) is its only one."""
    first = await crash.start(fault="action.claimed:stop,action.started", JOB_POLL_SECONDS="60")
    await first.post(install_activity(crash.connector.service_url))
    await _until(lambda: len(crash.connector.of_kind("create")) >= len(USERS), 60, "the cards")
    post = crash.connector.of_kind("create")[0]
    user = next(u for u in USERS if u["displayName"] in post.text)
    clicking = asyncio.create_task(crash.click_disable(first, post))
    await _until(lambda: _frozen(first), 60, "the first replica freezing before it starts the request")
    # Not waited on for /healthz: it may claim the job and freeze before it answers.
    second = await crash.start(fault="action.claimed:stop", healthy=False)
    await _until(lambda: _frozen(second), 60, "the second replica claiming the job and freezing there")
    os.kill(first.process.pid, signal.SIGCONT)
    await crash.died_at(first, "action.started")
    with contextlib.suppress(Exception):
        await asyncio.wait_for(clicking, 10)
    store = await crash.open_store()
    (request,) = await store.list_requests(_case_id(post))
    assert request.state is RequestState.EXECUTING and not request.dispatched, "started, nothing sent"
    os.kill(second.process.pid, signal.SIGCONT)
    await _until(lambda: len(crash.replies(post)) >= 1, 60, "the second replica finishing the action")
    await crash.settled()
    (reply,) = crash.replies(post)
    assert "Disable account succeeded" in reply and RESENT not in reply
    assert crash.patches(user["id"]) == 1, "sent once, by the worker holding the job"
    (request,) = await store.list_requests(_case_id(post))
    assert request.state is RequestState.SUCCEEDED and request.reported_attempt == 1
