"""A replica killed in the middle of a bulk action: the survivor finishes it, once per identity.

Real processes (``remediation-bot serve``) on PostgreSQL, the sandbox tenant and the recording
Bot Connector. A storm of 25 identities opens a campaign; two approvers approve "disable all";
the first replica dies at a step of the first chunk (see :mod:`bot.faults`); a second replica,
started after it died, takes the job over once its lease lapses. No identity is ever sent twice:
those dispatched before the crash are read back (and recorded as found), the rest are run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from bot.domain.models import RequestState
from bot.store import open_store
from bot.store.base import Store
from devtools.sandbox import SandboxTenant
from tests.support.connector import ConnectorCall, RecordingConnector
from tests.support.harness import card_action, install_activity, invoke_activity
from tests.support.replica import Replica, free_port, replica_env

pytestmark = pytest.mark.postgres

ALEX = {"id": "aaaaaaaa-0000-4000-8000-000000000001", "name": "Alex Wilber"}
MEGAN = {"id": "aaaaaaaa-0000-4000-8000-000000000002", "name": "Megan Bowen"}
USERS = [
    {
        "id": f"7e000000-0000-4000-8000-{i:012d}",
        "userPrincipalName": f"storm{i:02d}@contoso.com",
        "displayName": f"Storm User {i:02d}",
    }
    for i in range(25)
]
_logs = itertools.count()


def _scenario() -> dict[str, Any]:
    alerts = [
        {
            "user": u["userPrincipalName"],
            "serviceSource": "azureAdIdentityProtection",
            "title": "Password spray",
            "severity": "high",
            "minutes_ago": 3,
        }
        for u in USERS
    ]
    return {"users": USERS, "alerts": alerts}


async def _until(check: Callable[[], Any], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {limit:.0f} s")


class StormCrash:
    def __init__(self, tenant: SandboxTenant, connector: RecordingConnector, url: str, tmp: Path) -> None:
        self.tenant, self.connector, self.url, self.tmp = tenant, connector, url, tmp
        self.replicas: list[Replica] = []
        self.store: Store | None = None

    async def start(self, *, fault: str = "", concurrency: int = 1) -> Replica:
        policy = self.tmp / "policy.yaml"
        people = [ALEX["id"], MEGAN["id"]]
        policy.write_text(
            yaml.safe_dump(
                {
                    "responders": {"users": people},
                    "approvers": {"users": people},
                    "privileged_targets": {"roles": []},
                    "blast_radius_per_hour": 100,
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
                "JOB_LEASE_SECONDS": "2",
                "CARD_LEASE_SECONDS": "2",
                "CARD_UPDATE_COALESCE_SECONDS": "0.2",
                "GRAPH_IDENTITY_PROTECTION_INTERVAL": "0.05",
                # One chunk at a time unless asked: the crash lands in the first chunk only.
                "GRAPH_BATCH_CONCURRENCY": str(concurrency),
                **extra,
            },
        )
        replica = Replica(env, self.tmp / f"replica-{next(_logs)}.log")
        self.replicas.append(replica)
        await replica.wait_healthy()
        return replica

    def campaign_post(self) -> ConnectorCall | None:
        posts = [p for p in self.connector.of_kind("create") if "STORM" in p.text]
        return posts[0] if posts else None

    def campaign_card(self) -> dict[str, Any]:
        post = self.campaign_post()
        assert post is not None
        updates = [u for u in self.connector.of_kind("update") if u.activity_id == post.activity_id]
        card = (updates[-1] if updates else post).card
        assert card is not None
        return card

    async def click(self, replica: Replica, person: dict[str, str], verb: str, data: dict[str, Any]) -> None:
        post = self.campaign_post()
        assert post is not None
        activity = invoke_activity(
            self.connector.service_url,
            post.conversation_id,
            user_object_id=person["id"],
            user_name=person["name"],
            verb=verb,
            data=data,
        )
        with contextlib.suppress(aiohttp.ClientError):  # it may die while answering
            await replica.post(activity)

    def patches(self, user_id: str | None = None) -> int:
        return sum(
            1
            for r in [*self.tenant.requests, *self.tenant.batched_requests]
            if r.method == "PATCH" and "/users/" in r.path and (user_id is None or r.path.endswith(user_id))
        )

    async def open_store(self) -> Store:
        if self.store is None:
            self.store = await open_store(self.url)
        return self.store

    async def close(self) -> None:
        for replica in self.replicas:
            replica.stop()
        if self.store is not None:
            await self.store.close()


@pytest.fixture
async def storm(postgres_url: str, tmp_path: Path) -> AsyncIterator[StormCrash]:
    tenant = SandboxTenant(_scenario(), cert_dir=tmp_path / "tenant")
    await tenant.start()
    connector = RecordingConnector()
    await connector.start()
    crash = StormCrash(tenant, connector, postgres_url, tmp_path)
    yield crash
    await crash.close()
    await connector.stop()
    await tenant.stop()
    assert tenant.violations == []


@pytest.mark.parametrize(
    ("step", "found_done"),
    [
        # The first chunk was claimed and marked dispatched, nothing sent: the survivor reads it
        # back, finds nothing done and records that (never sending it), then runs the rest.
        ("bulk.dispatched", False),
        # Graph answered the first chunk, nothing recorded: the survivor reads back and finds
        # every one of them done (recorded without sending again), then runs the rest.
        ("bulk.answered", True),
    ],
)
async def test_killed_mid_campaign_the_survivor_finishes_it_once_per_identity(
    storm: StormCrash, step: str, found_done: bool
) -> None:
    first = await storm.start(fault=step)
    await first.post(install_activity(storm.connector.service_url))
    await _until(lambda: storm.campaign_post() is not None, 60, "the campaign card")
    assert len(storm.connector.of_kind("create")) == 1, "one post for the storm"
    await _until(
        lambda: (
            "25 compromised identities" in storm.campaign_card().get("fallbackText", "")
            or "25 compromised" in str(storm.campaign_card())
        ),
        60,
        "every member",
    )
    card = storm.campaign_card()
    scope = next(
        c["value"]
        for node in card["body"]
        if node.get("type") == "Input.ChoiceSet" and node.get("id") == "bulkScope"
        for c in node["choices"]
        if c["title"].startswith("Alert: Password spray")
    )
    data = dict(card_action(card, "bulkRequest")["data"])
    data.update({"bulkScope": scope, "bulkAction": "disableAccount", "reason": "spray"})
    await storm.click(first, ALEX, "bulkRequest", data)
    store = await storm.open_store()
    [campaign] = await store.list_campaigns()
    [bulk] = await store.list_bulks(campaign.id)
    assert len(bulk.targets) == 25
    await storm.click(first, MEGAN, "bulkApprove", {"bulkId": bulk.id})
    await _until(lambda: first.process.poll() is not None, 60, f"the replica dying at {step}")
    assert first.process.returncode == -signal.SIGKILL
    sent_before = storm.patches()
    assert sent_before == (20 if found_done else 0)

    await storm.start()

    async def finished() -> bool:
        latest = await store.get_bulk(bulk.id)
        return latest is not None and latest.summary_sent

    deadline = time.monotonic() + 90
    while not await finished():
        assert time.monotonic() < deadline, "the survivor did not finish the bulk request"
        await asyncio.sleep(0.2)
    done = await store.get_bulk(bulk.id)
    assert done is not None
    # Never twice: every identity got at most one PATCH, and the 5 of the second chunk one each.
    assert all(storm.patches(u["id"]) <= 1 for u in USERS)
    assert storm.patches() == (25 if found_done else 5)
    verified, failed, pending = done.tally()
    assert (verified, failed, pending) == ((25, 0, 0) if found_done else (5, 20, 0))
    assert done.state is (RequestState.SUCCEEDED if found_done else RequestState.FAILED)
    # Every identity's own request ended, once; nothing left executing.
    assert await store.list_requests_in([RequestState.APPROVED, RequestState.EXECUTING]) == []
    events = await store.list_audit()
    per_identity = [e for e in events if e.kind.startswith("action.") and e.payload.get("bulk_id") == bulk.id]
    assert len({e.case_id for e in per_identity}) == 25 and len(per_identity) == 25
    assert sum(1 for e in events if e.kind == "action.resumed") == 20
    post = storm.campaign_post()
    assert post is not None
    summaries = [c.text for c in storm.connector.in_thread(post.activity_id) if "finished" in c.text]
    assert len(summaries) == 1
    check = await store.verify_audit()
    assert check.ok, check.problem


async def test_killed_with_chunks_in_flight_at_once_no_identity_is_sent_twice(storm: StormCrash) -> None:
    """Both chunks run at once (GRAPH_BATCH_CONCURRENCY 4): wherever the crash lands, every
    identity claimed before it is read back and never sent again, and the rest are run once."""
    first = await storm.start(fault="bulk.dispatched", concurrency=4)
    await first.post(install_activity(storm.connector.service_url))
    await _until(lambda: storm.campaign_post() is not None, 60, "the campaign card")
    await _until(lambda: "25 compromised" in str(storm.campaign_card()), 60, "every member")
    card = storm.campaign_card()
    scope = next(
        c["value"]
        for node in card["body"]
        if node.get("type") == "Input.ChoiceSet" and node.get("id") == "bulkScope"
        for c in node["choices"]
        if c["title"].startswith("Alert: Password spray")
    )
    data = dict(card_action(card, "bulkRequest")["data"])
    data.update({"bulkScope": scope, "bulkAction": "disableAccount", "reason": "spray"})
    await storm.click(first, ALEX, "bulkRequest", data)
    store = await storm.open_store()
    [campaign] = await store.list_campaigns()
    [bulk] = await store.list_bulks(campaign.id)
    await storm.click(first, MEGAN, "bulkApprove", {"bulkId": bulk.id})
    await _until(lambda: first.process.poll() is not None, 60, "the replica dying at bulk.dispatched")
    assert storm.patches() == 0
    await storm.start(concurrency=4)
    deadline = time.monotonic() + 90
    while True:
        done = await store.get_bulk(bulk.id)
        if done is not None and done.summary_sent:
            break
        assert time.monotonic() < deadline, "the survivor did not finish the bulk request"
        await asyncio.sleep(0.2)
    assert all(storm.patches(u["id"]) <= 1 for u in USERS)
    events = await store.list_audit()
    resumed = sum(1 for e in events if e.kind == "action.resumed")
    verified, failed, pending = done.tally()
    # Claimed before the crash: read back, found not done, recorded failed (never sent). The
    # rest: sent once by the survivor and verified.
    assert resumed >= 1 and failed == resumed and pending == 0
    assert verified == storm.patches() == 25 - resumed
    per_identity = [e for e in events if e.kind.startswith("action.") and e.payload.get("bulk_id") == bulk.id]
    assert len({e.case_id for e in per_identity}) == 25 and len(per_identity) == 25
    assert await store.list_requests_in([RequestState.APPROVED, RequestState.EXECUTING]) == []
    check = await store.verify_audit()
    assert check.ok, check.problem
