"""Several bot processes on one PostgreSQL database behave as one bot.

Real processes (``remediation-bot serve``), the sandbox tenant and the recording Bot Connector:
a burst of alerts and racing approvals across two replicas, a killed polling leader, and a
replica killed between its Graph call and recording the result.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.sandbox import SandboxTenant
from tests.support.connector import RecordingConnector
from tests.support.harness import card_action, install_activity, invoke_activity
from tests.support.replica import Replica, free_port, replica_env

pytestmark = pytest.mark.postgres

REQUESTER = {"id": "aaaaaaaa-0000-4000-8000-000000000001", "name": "Alex Wilber"}
APPROVERS = [{"id": f"bbbbbbbb-0000-4000-8000-{i:012d}", "name": f"Approver {i}"} for i in range(5)]
IDENTITIES = 10
_ports = itertools.count()


def _scenario() -> dict[str, Any]:
    users = [
        {
            "id": f"7b000000-0000-4000-8000-{i:012d}",
            "userPrincipalName": f"user{i}@contoso.com",
            "displayName": f"Replica User {i}",
        }
        for i in range(IDENTITIES)
    ]
    alerts = [
        {
            "user": u["userPrincipalName"],
            "serviceSource": ("microsoftDefenderForIdentity", "azureAdIdentityProtection")[n % 2],
            "title": f"Burst {n} on {u['displayName']}",
            "severity": "high",
            "minutes_ago": 20 - n,
        }
        for u in users
        for n in range(5)
    ]
    return {"users": users, "alerts": alerts}


def _succeeded(connector: RecordingConnector) -> list[Any]:
    """The thread replies that report a successful disable."""
    return [c for c in connector.of_kind("send") if "Disable account succeeded" in c.text]


async def _until(check: Callable[[], bool], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {limit:.0f} s")


def _polls(tenant: SandboxTenant) -> int:
    return sum(1 for r in tenant.requests if r.method == "GET" and "alerts_v2" in r.path)


async def _after_more_polls(tenant: SandboxTenant, more: int = 2) -> None:
    """Let the replicas run on: wait until the leader has polled ``more`` times again (a poll
    comes once per POLL_INTERVAL_SECONDS; the job and publishing loops run at least as often),
    so anything that would happen twice has had its chance — timed by the bot, not the machine."""
    target = _polls(tenant) + more
    await _until(lambda: _polls(tenant) >= target, 60, f"{more} more polls")


@pytest.fixture
async def cluster(
    postgres_url: str, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[tuple[SandboxTenant, RecordingConnector, list[Replica]]]]]:
    started: list[Replica] = []
    tenant = SandboxTenant(_scenario(), cert_dir=tmp_path / "tenant")
    await tenant.start()
    connector = RecordingConnector()
    await connector.start()
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "responders": {"users": [REQUESTER["id"]]},
                "approvers": {"users": [REQUESTER["id"], *(a["id"] for a in APPROVERS)]},
                "approvals": {"disableAccount": 2},
                "privileged_targets": {"roles": []},
            }
        )
    )

    async def start(count: int = 2, **extra: str) -> tuple[SandboxTenant, RecordingConnector, list[Replica]]:
        for _ in range(count):
            env = replica_env(
                tenant,
                store_url=postgres_url,
                policy=policy,
                port=free_port(),
                POLL_INTERVAL_SECONDS="1",
                JOB_POLL_SECONDS="0.5",
                GRAPH_IDENTITY_PROTECTION_INTERVAL="0.05",
                CARD_UPDATE_COALESCE_SECONDS="0.5",
                **extra,
            )
            replica = Replica(env, tmp_path / f"replica-{next(_ports)}.log")
            started.append(replica)
            await replica.wait_healthy()
        return tenant, connector, started

    yield start
    for replica in started:
        replica.stop()
    await connector.stop()
    await tenant.stop()
    assert tenant.violations == []


async def test_two_replicas_post_once_and_run_each_action_once(
    cluster: Callable[..., Awaitable[tuple[SandboxTenant, RecordingConnector, list[Replica]]]],
) -> None:
    tenant, connector, (one, two) = await cluster(2)
    await one.post(install_activity(connector.service_url))
    await _until(lambda: len(connector.of_kind("create")) >= IDENTITIES, 60, "one card per identity")
    await _after_more_polls(tenant)  # several more polls by whichever replica leads
    posts = connector.of_kind("create")
    assert len(posts) == IDENTITIES, "no card is posted twice"

    # Each identity: the requester asks on one replica; five approvers race on both.
    async def click(
        replica: Replica, post: Any, person: dict[str, str], verb: str, data: dict[str, Any]
    ) -> None:
        status, _ = await replica.post(
            invoke_activity(
                connector.service_url,
                post.conversation_id,
                user_object_id=person["id"],
                user_name=person["name"],
                verb=verb,
                data=data,
            )
        )
        assert status == 200

    for i, post in enumerate(posts):
        data = dict(card_action(post.card or {}, "disableAccount")["data"], reason="burst")
        await click((one, two)[i % 2], post, REQUESTER, "disableAccount", data)
    await _until(
        lambda: (
            sum("awaiting second approver" in c.text for c in connector.calls if c.kind == "send")
            >= IDENTITIES
        ),
        30,
        "every request noted in its thread",
    )
    approvals = []
    for post in posts:
        updates = [u for u in connector.of_kind("update") if u.activity_id == post.activity_id]
        data = dict(card_action(updates[-1].card or {}, "approve")["data"])
        approvals += [click((one, two)[n % 2], post, a, "approve", data) for n, a in enumerate(APPROVERS)]
    await asyncio.gather(*approvals)

    def results() -> list[Any]:
        return _succeeded(connector)

    await _until(lambda: len(results()) >= IDENTITIES, 60, "every action reported")
    await _after_more_polls(tenant)
    patches = [r for r in tenant.requests if r.method == "PATCH"]
    assert len(patches) == IDENTITIES, "each approved action ran exactly once"
    assert len({r.path for r in patches}) == IDENTITIES
    assert len(results()) == IDENTITIES, "one thread reply per action"


async def test_a_killed_leader_is_replaced_and_no_alert_is_lost(
    cluster: Callable[..., Awaitable[tuple[SandboxTenant, RecordingConnector, list[Replica]]]],
) -> None:
    tenant, connector, (leader,) = await cluster(1)
    await leader.post(install_activity(connector.service_url))
    await _until(lambda: len(connector.of_kind("create")) >= IDENTITIES, 60, "the first cards")
    _, _, (_, survivor) = await cluster(1)
    leader.kill()
    killed_at = time.monotonic()
    tenant.add_alert(
        {
            "user": "user3@contoso.com",
            "serviceSource": "azureAdIdentityProtection",
            "title": "After the crash",
            "severity": "high",
        }
    )
    await _until(
        lambda: any("After the crash" in c.text for c in connector.calls), 30, "the survivor polling"
    )
    assert time.monotonic() - killed_at < 30
    assert len(connector.of_kind("create")) == IDENTITIES, "the survivor updated the card, it did not repost"
    assert survivor.process.poll() is None


async def test_a_replica_killed_mid_action_is_finished_by_another(
    cluster: Callable[..., Awaitable[tuple[SandboxTenant, RecordingConnector, list[Replica]]]],
) -> None:
    tenant, connector, (first, second) = await cluster(2, JOB_LEASE_SECONDS="3", GRAPH_TIMEOUT_SECONDS="60")
    await first.post(install_activity(connector.service_url))
    await _until(lambda: len(connector.of_kind("create")) >= IDENTITIES, 60, "the cards")
    post = connector.of_kind("create")[0]
    user_id = next(u["id"] for u in _scenario()["users"] if u["displayName"] in post.text)
    data = dict(card_action(post.card or {}, "disableAccount")["data"], reason="crash test")
    await first.post(
        invoke_activity(
            connector.service_url,
            post.conversation_id,
            user_object_id=REQUESTER["id"],
            user_name=REQUESTER["name"],
            verb="disableAccount",
            data=data,
        )
    )
    await _until(
        lambda: any("awaiting second approver" in c.text for c in connector.calls), 30, "the request"
    )
    updates = [u for u in connector.of_kind("update") if u.activity_id == post.activity_id]
    approve = dict(card_action(updates[-1].card or {}, "approve")["data"])
    # Graph applies the disable at once but answers late; the replica running it dies meanwhile.
    tenant.inject_fault("PATCH", f"/users/{user_id}$", status=None, delay=30.0)
    click = asyncio.create_task(
        first.post(
            invoke_activity(
                connector.service_url,
                post.conversation_id,
                user_object_id=APPROVERS[0]["id"],
                user_name=APPROVERS[0]["name"],
                verb="approve",
                data=approve,
            )
        )
    )
    await _until(lambda: tenant.user(user_id)["accountEnabled"] is False, 20, "the PATCH reaching Graph")
    first.kill()
    click.cancel()

    def done() -> list[Any]:
        return _succeeded(connector)

    await _until(lambda: len(done()) >= 1, 30, "the survivor finishing the action")
    await _after_more_polls(tenant)
    assert len([r for r in tenant.requests if r.method == "PATCH"]) <= 1, "never sent again"
    assert len(done()) == 1, "one thread reply"
    assert "it was not sent again" in done()[0].text
    assert second.process.poll() is None
