"""Bulk actions through Graph JSON batching, against the sandbox over HTTPS with msal and httpx.

Waits run on virtual time (tests/support/timing.py), and so does the sandbox's throttling
emulation where a test turns it on: honouring a Retry-After takes no real time.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio

from bot.domain.models import (
    Case,
    IdentityFacts,
    IdentityRef,
    LinkedAccount,
    Provider,
)
from bot.graph import GraphClient
from bot.tenant.batch import BatchRequest, GraphBatcher
from bot.tenant.bulk import BULK_ACTIONS, BulkActions, BulkTarget, floor_seconds, requests_floor
from devtools.sandbox import RecordedRequest, SandboxTenant
from tests.support.graph_fixtures import sandbox_http, sandbox_tokens
from tests.support.timing import VirtualTime

CLOUD = 30
SYNCED = 15
PASSWORD = "Bulk-Test-Password-1!"


def bulk_scenario(cloud: int = CLOUD, synced: int = SYNCED, risky: int = 0) -> dict[str, Any]:
    """``cloud`` cloud-only users and ``synced`` users synced from AD; the first ``risky`` at risk."""
    users: list[dict[str, Any]] = [
        {"userPrincipalName": f"cloud{i:03d}@contoso.com", "displayName": f"Cloud {i}"} for i in range(cloud)
    ]
    users += [
        {
            "userPrincipalName": f"synced{i:03d}@contoso.com",
            "displayName": f"Synced {i}",
            "onPremisesSecurityIdentifier": f"S-1-5-21-1004336348-1177238915-682003330-{3000 + i}",
        }
        for i in range(synced)
    ]
    risky_users = [{"user": users[i]["userPrincipalName"]} for i in range(risky)]
    return {"users": users, "riskyUsers": risky_users}


class Bench:
    """A started tenant, the production Graph client on virtual time, and bulk actions over it."""

    def __init__(self, tenant: SandboxTenant, graph: GraphClient, time: VirtualTime) -> None:
        self.tenant = tenant
        self.graph = graph
        self.time = time
        self.bulk = BulkActions(graph, clock=lambda: datetime.now(UTC), new_password=lambda: PASSWORD)

    def targets(
        self, prefix: str = "", *, key: str = "run-1", with_accounts: bool = False
    ) -> list[BulkTarget]:
        """A target per user whose UPN starts with ``prefix``, as a campaign would freeze them."""
        found = []
        for user in self.tenant_users():
            if not user["userPrincipalName"].startswith(prefix):
                continue
            identity = self.tenant.identity_account(user["id"])
            synced = bool(user.get("onPremisesSyncEnabled"))
            accounts: tuple[LinkedAccount, ...] = ()
            if with_accounts:
                accounts = tuple(
                    LinkedAccount(
                        identity_id=identity["id"],
                        identifier=a["identifier"],
                        provider=Provider(a["identityProvider"]),
                        actions=frozenset(a["actions"]),
                    )
                    for a in identity["accounts"]
                )
            found.append(
                BulkTarget(
                    key=f"case-{user['userPrincipalName']}",
                    user_id=user["id"],
                    upn=user["userPrincipalName"],
                    on_premises=synced,
                    defender_account_id=identity["id"] if synced else None,
                    idempotency_key=f"{key}:{user['id']}",
                    defender_accounts=accounts,
                )
            )
        return found

    def tenant_users(self) -> list[dict[str, Any]]:
        return [self.tenant.user(f"cloud{i:03d}@contoso.com") for i in range(self._count("cloud"))] + [
            self.tenant.user(f"synced{i:03d}@contoso.com") for i in range(self._count("synced"))
        ]

    def _count(self, prefix: str) -> int:
        n = 0
        while True:
            try:
                self.tenant.user(f"{prefix}{n:03d}@contoso.com")
            except KeyError:
                return n
            n += 1

    def batches(self) -> list[RecordedRequest]:
        """Every POST /$batch the tenant answered."""
        return [r for r in self.tenant.requests if r.path == "/v1.0/$batch"]

    def graph_calls(self) -> list[str]:
        """Every Graph HTTP request other than batches (``METHOD path``)."""
        return [
            f"{r.method} {r.path}"
            for r in self.tenant.requests
            if r.path.startswith("/v1.0/") and r.path != "/v1.0/$batch"
        ]

    def inside(self, method: str, fragment: str = "") -> list[RecordedRequest]:
        """The requests carried in batches with ``method`` whose path contains ``fragment``."""
        return [r for r in self.tenant.batched_requests if r.method == method and fragment in r.path]


Start = Callable[..., Awaitable[Bench]]


@pytest_asyncio.fixture
async def start() -> AsyncIterator[Start]:
    """Starts a bench on a scenario; every tenant must end without contract violations."""
    async with AsyncExitStack() as stack:
        tenants: list[SandboxTenant] = []

        async def starting(scenario: dict[str, Any] | None = None, *, throttling: bool = False) -> Bench:
            time = VirtualTime()
            tenant = SandboxTenant(
                scenario or bulk_scenario(), throttling=throttling, throttle_clock=time.monotonic
            )
            await tenant.start()
            stack.push_async_callback(tenant.stop)
            tenants.append(tenant)
            tokens = await stack.enter_async_context(sandbox_tokens(tenant))
            http = await stack.enter_async_context(sandbox_http(tenant))
            graph = GraphClient(
                http,
                tokens,
                tenant.graph_base_url,
                sleep=time.sleep,
                monotonic=time.monotonic,
                rng=random.Random(7),
            )
            return Bench(tenant, graph, time)

        yield starting
    for tenant in tenants:
        assert tenant.violations == [], tenant.violations


# -- the batching client ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_more_than_twenty_requests_go_in_batches_of_twenty_with_unique_relative_ids(
    start: Start,
) -> None:
    bench = await start()
    users = bench.tenant_users()
    requests = [
        BatchRequest("GET", f"/users/{u['id']}", params={"$select": "id,accountEnabled"}) for u in users
    ]

    answers = await GraphBatcher(bench.graph, concurrency=2).send(requests)

    assert [a.status for a in answers] == [200] * len(users)
    # Answers come back in the order asked, although the sandbox answers each batch reversed.
    assert [a.body["id"] for a in answers] == [u["id"] for u in users]
    sent = [b.json["requests"] for b in bench.batches()]
    assert sorted(len(batch) for batch in sent) == [5, 20, 20]
    for batch in sent:
        assert len({item["id"].lower() for item in batch}) == len(batch)
        assert all(
            item["url"].startswith("/users/") and "?$select=id,accountEnabled" in item["url"]
            for item in batch
        )
    assert bench.graph_calls() == []


@pytest.mark.asyncio
async def test_a_batch_answer_keeps_each_requests_own_status(start: Start) -> None:
    bench = await start()
    [first, *_] = bench.tenant_users()
    requests = [
        BatchRequest("GET", f"/users/{first['id']}", params={"$select": "id"}),
        BatchRequest("GET", f"/users/{uuid.uuid4()}", params={"$select": "id"}),
        BatchRequest("PATCH", f"/users/{first['id']}", body={"accountEnabled": False}),
    ]

    ok, missing, patched = await GraphBatcher(bench.graph).send(requests)

    assert ok.ok and ok.body["id"] == first["id"]
    assert not missing.ok and missing.status == 404 and missing.error is not None
    assert type(missing.error).__name__ == "GraphNotFound"
    assert missing.request_id  # from the error's innerError, for Microsoft support
    assert patched.ok and patched.status == 204
    [batch] = bench.batches()
    patch = next(item for item in batch.json["requests"] if item["method"] == "PATCH")
    assert patch["headers"]["Content-Type"] == "application/json"
    assert bench.tenant.user(first["id"])["accountEnabled"] is False


@pytest.mark.asyncio
async def test_only_the_throttled_request_is_sent_again_after_its_retry_after(start: Start) -> None:
    bench = await start()
    users = bench.tenant_users()[:5]
    throttled = users[2]["id"]
    bench.tenant.inject_fault("PATCH", f"/users/{throttled}$", status=429, headers={"Retry-After": "7"})
    requests = [BatchRequest("PATCH", f"/users/{u['id']}", body={"accountEnabled": False}) for u in users]

    answers = await GraphBatcher(bench.graph).send(requests)

    assert [a.status for a in answers] == [204] * 5
    assert [a.attempts for a in answers] == [1, 1, 2, 1, 1]
    assert [len(b.json["requests"]) for b in bench.batches()] == [5, 1]
    assert 7 in bench.time.slept
    assert bench.time.now >= 7


@pytest.mark.asyncio
async def test_identity_protection_requests_in_batches_keep_to_one_per_second(start: Start) -> None:
    bench = await start(bulk_scenario(cloud=6, synced=0, risky=6), throttling=True)
    users = bench.tenant_users()
    requests = [BatchRequest("GET", f"/identityProtection/riskyUsers/{u['id']}") for u in users]
    requests += [BatchRequest("GET", f"/users/{u['id']}", params={"$select": "id"}) for u in users]

    answers = await GraphBatcher(bench.graph).send(requests)

    assert all(a.ok for a in answers)
    assert bench.tenant.throttled == []
    # One Identity Protection request per batch, each in its own second.
    assert len(bench.batches()) == 6
    for batch in bench.batches():
        urls = [item["url"] for item in batch.json["requests"]]
        assert sum(url.startswith("/identityProtection/") for url in urls) == 1
    assert bench.time.now >= 5


@pytest.mark.asyncio
async def test_a_retry_after_past_the_deadline_ends_with_the_429(start: Start) -> None:
    bench = await start()
    [user, *_] = bench.tenant_users()
    bench.tenant.inject_fault("PATCH", f"/users/{user['id']}$", status=429, headers={"Retry-After": "30"})

    [answer] = await GraphBatcher(bench.graph).send(
        [BatchRequest("PATCH", f"/users/{user['id']}", body={"accountEnabled": False})],
        deadline=bench.time.monotonic() + 10,
    )

    assert answer.status == 429 and not answer.ok
    assert answer.error is not None and "deadline" in answer.error.message
    assert len(bench.batches()) == 1
    assert bench.time.now < 10
    assert bench.tenant.user(user["id"])["accountEnabled"] is True


@pytest.mark.asyncio
async def test_throttled_requests_give_up_after_the_attempts_allowed(start: Start) -> None:
    bench = await start()
    [user, *_] = bench.tenant_users()
    bench.tenant.inject_fault(
        "GET", f"/users/{user['id']}$", status=429, headers={"Retry-After": "1"}, times=10
    )

    [answer] = await GraphBatcher(bench.graph, max_attempts=3).send(
        [BatchRequest("GET", f"/users/{user['id']}")]
    )

    assert answer.status == 429 and answer.attempts == 3
    assert type(answer.error).__name__ == "GraphThrottled"
    assert len(bench.batches()) == 3


@pytest.mark.asyncio
async def test_a_whole_batch_503_is_sent_again_and_a_lost_answer_is_not_for_posts(start: Start) -> None:
    bench = await start()
    users = bench.tenant_users()[:3]
    bench.tenant.inject_fault("POST", r"/\$batch$", status=503, headers={"Retry-After": "2"})
    reads = [BatchRequest("GET", f"/users/{u['id']}", params={"$select": "id"}) for u in users]

    answers = await GraphBatcher(bench.graph).send(reads)

    assert all(a.ok for a in answers)
    assert [b.status for b in bench.batches()] == [503, 200]
    assert 2 in bench.time.slept

    # A whole batch throttled: sent again after the batch's own Retry-After.
    bench.tenant.inject_fault("POST", r"/\$batch$", status=429, headers={"Retry-After": "3"})
    answers = await GraphBatcher(bench.graph).send(reads)
    assert all(a.ok for a in answers)
    assert [b.status for b in bench.batches()][2:] == [429, 200]
    assert 3 in bench.time.slept

    # A gateway timeout on a batch holding a POST: the POST may have run, so it is not resent,
    # while the GET in the same batch is.
    bench.tenant.inject_fault("POST", r"/\$batch$", status=504)
    revoke = BatchRequest("POST", f"/users/{users[0]['id']}/revokeSignInSessions", body={}, idempotent=False)
    read = BatchRequest("GET", f"/users/{users[1]['id']}", params={"$select": "id"})

    lost, again = await GraphBatcher(bench.graph).send([revoke, read])

    assert type(lost.error).__name__ == "GraphOutcomeUnknown" and lost.attempts == 1
    assert again.ok and again.attempts == 2
    assert bench.inside("POST", "revokeSignInSessions") == []


@pytest.mark.asyncio
async def test_a_whole_batch_wait_past_the_deadline_is_not_waited_for(start: Start) -> None:
    bench = await start()
    [user, *_] = bench.tenant_users()
    bench.tenant.inject_fault("POST", r"/\$batch$", status=503, headers={"Retry-After": "25"})

    [answer] = await GraphBatcher(bench.graph).send(
        [BatchRequest("GET", f"/users/{user['id']}")], deadline=bench.time.monotonic() + 10
    )

    assert answer.status == 503 and type(answer.error).__name__ == "GraphUnavailable"
    assert answer.error is not None and "deadline" in answer.error.message
    assert len(bench.batches()) == 1
    assert bench.time.now < 10


@pytest.mark.asyncio
async def test_a_500_for_a_post_inside_a_batch_is_outcome_unknown_and_never_resent(start: Start) -> None:
    bench = await start()
    [user, *_] = bench.tenant_users()
    bench.tenant.inject_fault("POST", "/revokeSignInSessions$", status=500, times=5)

    [answer] = await GraphBatcher(bench.graph).send(
        [BatchRequest("POST", f"/users/{user['id']}/revokeSignInSessions", body={}, idempotent=False)]
    )

    assert type(answer.error).__name__ == "GraphOutcomeUnknown"
    assert len(bench.inside("POST", "revokeSignInSessions")) == 1


@pytest.mark.asyncio
async def test_batches_in_flight_are_bounded(start: Start) -> None:
    bench = await start(bulk_scenario(cloud=100, synced=0))
    users = bench.tenant_users()
    # Every request waits a little inside the sandbox, so batches overlap if the client lets them.
    bench.tenant.inject_fault("GET", "/users/", status=None, delay=0.02, times=len(users))
    requests = [BatchRequest("GET", f"/users/{u['id']}", params={"$select": "id"}) for u in users]

    answers = await GraphBatcher(bench.graph, concurrency=2).send(requests)

    assert all(a.ok for a in answers)
    spans = sorted((b.arrived, b.answered) for b in bench.batches())
    assert len(spans) == 5
    most = max(sum(1 for a, b in spans if a <= start < b) for start, _ in spans)
    assert most == 2


def test_a_batched_request_needs_a_relative_path_and_encodes_its_query() -> None:
    with pytest.raises(ValueError, match="relative"):
        BatchRequest("GET", "https://graph.microsoft.com/v1.0/users").url()
    assert BatchRequest("GET", "/users/a", params={"$select": "id,accountEnabled"}).url() == (
        "/users/a?$select=id,accountEnabled"
    )
    assert BatchRequest("GET", "/x", params={"$filter": "a eq 'b c'"}).url() == "/x?$filter=a%20eq%20'b%20c'"


@pytest.mark.asyncio
async def test_post_batch_refuses_more_than_twenty(start: Start) -> None:
    bench = await start()
    with pytest.raises(ValueError, match="at most 20"):
        await bench.graph.post_batch(
            [{"id": str(i), "method": "GET", "url": "/users/x"} for i in range(21)], idempotent=True
        )
    assert bench.batches() == []


# -- bulk actions -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_disable_all_routes_synced_users_through_defender_and_verifies_each(start: Start) -> None:
    bench = await start()
    targets = bench.targets()

    results = await bench.bulk.run("disableAccount", targets)

    assert [r.key for r in results] == [t.key for t in targets]
    assert Counter(r.outcome for r in results) == {"verified": CLOUD + SYNCED}
    for target, result in zip(targets, results, strict=True):
        assert bench.tenant.user(target.user_id)["accountEnabled"] is False
        assert result.result is not None and result.result.verified
        if target.on_premises:
            assert bench.tenant.provider_account(target.user_id, "activeDirectory").enabled is False
            assert result.correlation_id in {a["correlationId"] for a in bench.tenant.identity_actions()}
            assert result.graph_status == 200
        else:
            assert result.correlation_id is None
            assert result.graph_status == 204
    invoked = bench.inside("POST", "/invokeAction")
    assert len(invoked) == SYNCED
    assert {r.json["identityProvider"] for r in invoked} == {"activeDirectory"}
    assert {r.json["action"] for r in invoked} == {"disable"}
    assert len(bench.inside("PATCH", "/users/")) == CLOUD + SYNCED
    # Each synced user's on-premises disable goes out before its Entra ID disable, as for one
    # identity alone.
    patched = {r.path.rsplit("/", 1)[1]: r.arrived for r in bench.inside("PATCH", "/users/")}
    for target in (t for t in targets if t.on_premises):
        identity = bench.tenant.identity_account(target.user_id)["id"]
        [ad] = [r for r in invoked if identity in r.path]
        assert ad.answered <= patched[target.user_id]
    # 45 identities: AD account lookups (1 batch), AD disables (1), Entra disables (3), reads (3).
    assert len(bench.batches()) == 8
    assert bench.graph_calls() == []
    assert all(len(b.json["requests"]) <= 20 for b in bench.batches())


@pytest.mark.asyncio
async def test_a_synced_user_whose_defender_account_cannot_be_read_is_not_half_done(start: Start) -> None:
    bench = await start()
    targets = bench.targets("synced")[:2]
    broken = bench.tenant.identity_account(targets[0].user_id)["id"]
    bench.tenant.inject_fault("GET", f"/identityAccounts/{broken}$", status=403)

    failed, done = await bench.bulk.run("disableAccount", targets)

    assert failed.outcome == "failed" and "could not be read" in failed.detail
    assert "nothing was sent" in failed.detail
    assert bench.tenant.user(targets[0].user_id)["accountEnabled"] is True
    assert done.outcome == "verified"


@pytest.mark.asyncio
async def test_known_defender_accounts_need_no_lookup(start: Start) -> None:
    bench = await start()

    results = await bench.bulk.run("disableAccount", bench.targets("synced", with_accounts=True))

    assert {r.outcome for r in results} == {"verified"}
    # Only the read-backs of isEnabled; no lookup of the accounts the targets already name.
    reads = bench.inside("GET", "/identityAccounts/")
    assert len(reads) == SYNCED
    assert {r.query.get("$select") for r in reads} == {"id,isEnabled"}


@pytest.mark.asyncio
async def test_partial_failures_say_why_with_graphs_status(start: Start) -> None:
    bench = await start()
    targets = bench.targets("cloud")[:6]
    gone, refused = targets[1], targets[4]
    bench.tenant.inject_fault("PATCH", f"/users/{gone.user_id}$", status=404)
    bench.tenant.inject_fault("PATCH", f"/users/{refused.user_id}$", status=403)

    results = {r.key: r for r in await bench.bulk.run("disableAccount", targets)}

    assert results[gone.key].outcome == "failed"
    assert results[gone.key].graph_status == 404
    assert "no longer exists" in results[gone.key].detail
    assert results[refused.key].outcome == "failed"
    assert results[refused.key].graph_status == 403
    assert "User.EnableDisableAccount.All" in results[refused.key].detail
    others = [results[t.key] for t in targets if t not in (gone, refused)]
    assert {r.outcome for r in others} == {"verified"}
    # What Graph refused is not read back: nothing changed there.
    assert len(bench.inside("GET", "/users/")) == 4


@pytest.mark.asyncio
async def test_throttling_inside_batches_is_honoured_on_virtual_time(start: Start) -> None:
    bench = await start(throttling=True)
    throttle = bench.tenant.throttle
    assert throttle is not None
    # Spend the tenant's write quota (3,000 per 150 s) as a storm's other work would have.
    for _ in range(2990):
        assert throttle.admit("PATCH", "/users/someone", {}) is None
    targets = bench.targets("cloud")

    results = await bench.bulk.run("disableAccount", targets)

    assert {r.outcome for r in results} == {"verified"}
    refused = [t for t in bench.tenant.throttled if t.service == "identity and access"]
    assert refused and all(t.retry_after for t in refused)
    # Each throttled write went again only after the wait the sandbox asked for.
    patches = Counter(r.path for r in bench.inside("PATCH", "/users/"))
    assert sum(patches.values()) == len(targets) + len(refused)
    assert bench.time.now >= min(t.retry_after or 0 for t in refused)
    assert bench.tenant.violations == []


@pytest.mark.asyncio
async def test_a_spent_write_quota_slows_the_run_down_instead_of_failing_it(start: Start) -> None:
    bench = await start(bulk_scenario(cloud=200, synced=0), throttling=True)
    throttle = bench.tenant.throttle
    assert throttle is not None
    for _ in range(2990):  # ten writes left; the quota refills at 20 per second
        throttle.admit("PATCH", "/users/someone", {})
    targets = bench.targets()
    # One batch in flight: virtual time jumps while a worker sleeps, even with HTTP in flight,
    # so concurrent batches would land in a second the test cannot predict.
    bulk = BulkActions(
        bench.graph, clock=lambda: datetime.now(UTC), batcher=GraphBatcher(bench.graph, concurrency=1)
    )

    results = await bulk.run("disableAccount", targets)

    assert {r.outcome for r in results} == {"verified"}
    sends = Counter(r.path for r in bench.inside("PATCH"))
    assert max(sends.values()) <= 3
    # 190 writes beyond the quota at 20 per second: the limit's own pace, not a tight loop.
    assert floor_seconds("disableAccount", 200) == 0.0  # (the floor assumes a full quota)
    assert 190 / 20 <= bench.time.now <= 190 / 20 * 1.3
    # After a 429 one batch goes per Retry-After, and faster only after runs of clean answers
    # that grow with every 429: few requests are spent probing the quota.
    throttled = sum(sends.values()) - len(targets)
    assert throttled <= 60
    assert len(bench.batches()) <= requests_floor("disableAccount", 200) + 4


@pytest.mark.asyncio
async def test_a_deadline_leaves_throttled_targets_failed_with_429(start: Start) -> None:
    bench = await start()
    targets = bench.targets("cloud")[:3]
    bench.tenant.inject_fault(
        "PATCH", f"/users/{targets[0].user_id}$", status=429, headers={"Retry-After": "25"}
    )

    results = await bench.bulk.run("disableAccount", targets, deadline=bench.time.monotonic() + 20)

    assert results[0].outcome == "failed" and results[0].graph_status == 429
    assert "would pass the deadline" in results[0].detail
    assert [r.outcome for r in results[1:]] == ["verified", "verified"]
    assert bench.tenant.user(targets[0].user_id)["accountEnabled"] is True


@pytest.mark.asyncio
async def test_a_lost_defender_answer_is_read_back_not_resent(start: Start) -> None:
    bench = await start()
    targets = bench.targets("synced", with_accounts=True)[:3]
    bench.tenant.inject_fault("POST", "/invokeAction$", status=502)

    results = await bench.bulk.run("disableAccount", targets)

    failed = [r for r in results if r.outcome != "verified"]
    assert len(failed) == 1
    # Its Entra ID disable still ran (each step is containment on its own), but the AD one is
    # neither confirmed nor sent again: the next sync would undo the cloud change.
    assert "not sent again" in failed[0].detail
    assert len(bench.inside("POST", "/invokeAction")) == 3
    assert len(bench.tenant.identity_actions()) == 2


@pytest.mark.asyncio
async def test_a_retried_run_reads_back_and_sends_nothing_twice(start: Start) -> None:
    bench = await start()
    targets = bench.targets()
    first = await bench.bulk.run("disableAccount", targets)
    writes = len(bench.inside("PATCH")) + len(bench.inside("POST"))

    again = await bench.bulk.run("disableAccount", targets)

    assert len(bench.inside("PATCH")) + len(bench.inside("POST")) == writes
    assert {r.outcome for r in again} == {"verified"}
    assert all("Found done by reading back" in (r.result.steps[0].message if r.result else "") for r in again)
    assert {r.outcome for r in first} == {"verified"}
    # Every write carried a client-request-id derived from the target's idempotency key.
    ids = Counter(r.client_request_id for r in bench.inside("PATCH"))
    assert len(ids) == len(targets) and set(ids.values()) == {1}
    assert all(uuid.UUID(i) for i in ids)


@pytest.mark.asyncio
async def test_two_runs_at_once_with_the_same_keys_act_once(start: Start) -> None:
    bench = await start()
    targets = bench.targets("cloud")[:5]

    first, second = await asyncio.gather(
        bench.bulk.run("revokeSessions", targets), bench.bulk.run("revokeSessions", targets)
    )

    assert len(bench.inside("POST", "/revokeSignInSessions")) == 5
    outcomes = sorted([{r.outcome for r in first}, {r.outcome for r in second}], key=sorted)
    assert outcomes == [{"failed"}, {"verified"}]
    loser = first if {r.outcome for r in first} == {"failed"} else second
    assert all("not sent twice" in r.detail and r.graph_status is None for r in loser)


@pytest.mark.asyncio
async def test_another_replica_finishes_an_interrupted_run_by_reading_only(start: Start) -> None:
    bench = await start()
    targets = bench.targets("cloud")[:4]
    since = datetime.now(UTC)
    await bench.graph.update_user(targets[0].user_id, {"accountEnabled": False})
    await bench.graph.update_user(targets[1].user_id, {"accountEnabled": False})
    takeover = BulkActions(bench.graph, clock=lambda: datetime.now(UTC))

    results = await takeover.verify("disableAccount", targets, since=since)

    assert [r.outcome for r in results] == ["verified", "verified", "failed", "failed"]
    assert "not sent again" in results[2].detail
    assert bench.inside("PATCH") == []


@pytest.mark.asyncio
async def test_each_batch_is_recorded_as_dispatched_just_before_it_goes(start: Start) -> None:
    bench = await start()
    targets = bench.targets("cloud")
    dispatched: list[list[str]] = []

    async def record(keys: Sequence[str]) -> None:
        if len(dispatched) == 1:
            raise RuntimeError("the campaign was cancelled")  # e.g. a lost compare-and-swap
        dispatched.append(list(keys))

    results = await BulkActions(
        bench.graph, clock=lambda: datetime.now(UTC), batcher=GraphBatcher(bench.graph, concurrency=1)
    ).run("disableAccount", targets, on_dispatch=record)

    assert [len(keys) for keys in dispatched] == [20]
    sent = {r.key for r in results if r.outcome == "verified"}
    assert sent == set(dispatched[0])
    held = [r for r in results if r.key not in sent]
    assert len(held) == 10
    assert all(r.outcome == "failed" and "the campaign was cancelled" in r.detail for r in held)
    assert all(r.graph_status is None for r in held)
    assert len(bench.inside("PATCH")) == 20


@pytest.mark.asyncio
async def test_nothing_is_sent_once_the_deadline_has_passed(start: Start) -> None:
    bench = await start()
    targets = bench.targets("cloud")[:3]

    results = await bench.bulk.run("disableAccount", targets, deadline=bench.time.monotonic() - 1)

    assert {r.outcome for r in results} == {"failed"}
    assert all("deadline" in r.detail and "nothing was done" in r.detail for r in results)
    assert bench.batches() == []


@pytest.mark.asyncio
async def test_revoke_sessions_is_verified_by_the_sessions_timestamp(start: Start) -> None:
    bench = await start()
    targets = bench.targets()[:25]

    results = await bench.bulk.run("revokeSessions", targets)

    assert {r.outcome for r in results} == {"verified"}
    assert len(bench.inside("POST", "/revokeSignInSessions")) == 25
    assert all(r.json == {} for r in bench.inside("POST", "/revokeSignInSessions"))


@pytest.mark.asyncio
async def test_force_password_change_routes_each_user_and_never_leaks_the_password(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bench = await start()
    cloud, synced = bench.targets("cloud")[0], bench.targets("synced")[0]

    by_key = {r.key: r for r in await bench.bulk.run("forcePasswordChange", [cloud, synced])}

    assert by_key[cloud.key].outcome == "verified"
    assert bench.tenant.password_of(cloud.user_id) == PASSWORD
    # On-premises: Defender for Identity's forcePasswordReset, which Graph cannot read back.
    assert by_key[synced.key].outcome == "pending"
    assert by_key[synced.key].correlation_id
    assert bench.tenant.provider_account(synced.user_id, "activeDirectory").must_change_password
    assert bench.tenant.password_of(synced.user_id) is None
    recorded = repr(bench.tenant.requests) + repr(bench.tenant.batched_requests) + repr(by_key)
    assert PASSWORD not in recorded
    assert PASSWORD not in caplog.text


@pytest.mark.asyncio
async def test_confirm_compromised_takes_sixty_per_paced_call_and_lists_the_result(start: Start) -> None:
    bench = await start(bulk_scenario(cloud=70, synced=0, risky=10))
    targets = bench.targets()

    results = await bench.bulk.run("confirmCompromised", targets)

    assert {r.outcome for r in results} == {"verified"}
    calls = bench.graph_calls()
    assert calls.count("POST /v1.0/identityProtection/riskyUsers/confirmCompromised") == 2
    assert calls.count("GET /v1.0/identityProtection/riskyUsers") == 1
    assert bench.batches() == []
    # Identity Protection allows one request per second: the client paced them.
    assert bench.time.now >= 2


@pytest.mark.asyncio
async def test_a_synced_user_without_a_defender_account_waits_for_the_sync_or_is_refused(
    start: Start,
) -> None:
    bench = await start()
    [target] = bench.targets("synced000")
    bare = BulkTarget(
        key=target.key,
        user_id=target.user_id,
        upn=target.upn,
        on_premises=True,
        defender_account_id=None,
        idempotency_key="k1",
    )

    [disabled] = await bench.bulk.run("disableAccount", [bare])
    [reset] = await bench.bulk.run("forcePasswordChange", [bare])

    assert disabled.outcome == "pending"
    assert disabled.result is not None and disabled.result.recheck_at is not None
    assert reset.outcome == "failed" and "mastered in on-premises Active Directory" in reset.detail
    assert reset.graph_status is None


@pytest.mark.asyncio
async def test_a_recheck_after_the_sync_reports_what_the_sync_did(start: Start) -> None:
    bench = await start()
    [with_ad, without_ad] = bench.targets("synced")[:2]
    bare = BulkTarget(
        key=without_ad.key,
        user_id=without_ad.user_id,
        upn=without_ad.upn,
        on_premises=True,
        defender_account_id=None,
        idempotency_key="k2",
    )
    since = datetime.now(UTC)
    first = await bench.bulk.run("disableAccount", [with_ad, bare])
    assert [r.outcome for r in first] == ["verified", "pending"]

    bench.tenant.run_directory_sync()  # AD masters accountEnabled: only the AD-disabled one stays off
    writes = len(bench.inside("PATCH")) + len(bench.inside("POST"))
    again = await bench.bulk.verify("disableAccount", [with_ad, bare], since=since, interrupted=False)

    assert [r.outcome for r in again] == ["verified", "failed"]
    assert "accountEnabled = true" in again[1].detail
    assert len(bench.inside("PATCH")) + len(bench.inside("POST")) == writes


@pytest.mark.asyncio
async def test_unknown_verbs_and_repeated_targets_are_refused(start: Start) -> None:
    bench = await start()
    targets = bench.targets("cloud")[:2]
    for verb in ("dismissRisk", "enableAccount", "deleteUser", ""):
        with pytest.raises(ValueError, match="not a bulk action"):
            await bench.bulk.run(verb, targets)
    with pytest.raises(ValueError, match="listed twice"):
        await bench.bulk.run("disableAccount", [targets[0], targets[0]])
    # Only an Entra object id: a UPN or a path could name someone else, or something else.
    for user_id in ("cloud000@contoso.com", "../me", ""):
        forged = BulkTarget(
            key="x", user_id=user_id, upn="", on_premises=False, defender_account_id=None, idempotency_key="k"
        )
        with pytest.raises(ValueError, match="Entra object id"):
            await bench.bulk.run("disableAccount", [forged])
    assert bench.batches() == []
    assert [a.value for a in BULK_ACTIONS] == [
        "disableAccount",
        "revokeSessions",
        "forcePasswordChange",
        "confirmCompromised",
    ]


@dataclass(frozen=True)
class PortTarget:
    """A caller's own target type of the same shape (a service port's dataclass)."""

    key: str
    user_id: str
    upn: str
    on_premises: bool
    defender_account_id: str | None
    idempotency_key: str


@pytest.mark.asyncio
async def test_any_target_of_the_same_shape_will_do(start: Start) -> None:
    bench = await start()
    targets = [
        PortTarget(t.key, t.user_id, t.upn, t.on_premises, t.defender_account_id, t.idempotency_key)
        for t in bench.targets("synced")[:3]
    ]

    results = await bench.bulk.run("disableAccount", targets)

    assert {r.outcome for r in results} == {"verified"}
    assert len(bench.inside("POST", "/invokeAction")) == 3


def test_a_target_from_a_case_carries_its_accounts() -> None:
    account = LinkedAccount(identity_id="ia-1", identifier="ad-guid", provider=Provider.ACTIVE_DIRECTORY)
    case = Case(
        id="c1",
        identity=IdentityRef(object_id="OID-1", upn="a@contoso.com"),
        alerts=(),
        opened_at=datetime(2026, 1, 1, tzinfo=UTC),
        facts=IdentityFacts(synced=True, linked=(account,)),
    )

    target = BulkTarget.from_case(case, "key-1")

    assert (target.key, target.user_id, target.on_premises, target.defender_account_id) == (
        "oid-1",
        "OID-1",
        True,
        "ia-1",
    )
    assert target.defender_accounts == (account,)


def test_the_floor_follows_the_documented_limits() -> None:
    # 1,000 cloud users: within every quota from full buckets; only round trips count.
    assert floor_seconds("disableAccount", 1000) == 0.0
    assert floor_seconds("disableAccount", 1000, round_trip=0.1, concurrency=4) == pytest.approx(
        (13 + 13) * 0.1
    )
    # One batch at a time (the sandbox): 800 cloud and 200 synced users whose AD accounts are
    # looked up: 10 lookups, 50 + 10 writes, 60 reads.
    assert floor_seconds(
        "disableAccount", 1000, on_premises=200, round_trip=0.1, concurrency=1, accounts_known=False
    ) == pytest.approx(130 * 0.1)
    # 5,000 writes: 2,000 beyond the 3,000 quota refill at 20 per second.
    assert floor_seconds("revokeSessions", 5000) == pytest.approx(
        max((5000 - 3000) / 20, (10000 - 8000) / 800)
    )
    # Identity Protection: 17 calls of 60 and 2 pages of 500, one per second.
    assert floor_seconds("confirmCompromised", 1000) == pytest.approx(18.0)
    with pytest.raises(ValueError):
        floor_seconds("dismissRisk", 10)


@pytest.mark.asyncio
async def test_the_requests_floor_is_what_a_run_sends(start: Start) -> None:
    bench = await start()

    await bench.bulk.run("disableAccount", bench.targets())

    assert len(bench.batches()) == requests_floor(
        "disableAccount", CLOUD + SYNCED, on_premises=SYNCED, accounts_known=False
    )
    assert requests_floor("disableAccount", 1000, on_premises=200) / 1000 <= 0.15
