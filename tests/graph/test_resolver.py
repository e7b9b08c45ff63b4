"""IdentityResolver against the sandbox through the real Graph client: UPN to object id, cached
case-insensitively, "no such user" and "Graph unavailable" cached only briefly."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.models import Alert, AlertSource, IdentityRef, Severity
from bot.graph import GraphClient
from bot.tenant.resolver import FOUND_TTL, NOT_FOUND_TTL, UNAVAILABLE_TTL, IdentityResolver, Outcome
from devtools.sandbox import SandboxTenant

LEE = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a03"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def user_lookups(tenant: SandboxTenant) -> list[str]:
    return [r.path for r in tenant.requests if r.method == "GET" and r.path.startswith("/v1.0/users/")]


def alert(alert_id: str, target: IdentityRef) -> Alert:
    return Alert(
        id=alert_id,
        source=AlertSource.PUSHED,
        title="Impossible travel",
        severity=Severity.HIGH,
        status="new",
        created_at=T0,
        updated_at=T0,
        target=target,
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def resolver(graph: GraphClient, clock: Clock) -> IdentityResolver:
    return IdentityResolver(graph, clock)


@pytest.mark.asyncio
async def test_a_upn_resolves_to_the_object_id_once_whatever_its_letter_case(
    tenant: SandboxTenant, resolver: IdentityResolver, clock: Clock
) -> None:
    first = await resolver.resolve(IdentityRef(upn="Lee.Gu@Contoso.com"))
    assert first.outcome is Outcome.FOUND and first.resolved
    assert first.identity.object_id == LEE
    assert first.identity.upn == "lee.gu@contoso.com", "Entra ID's spelling of the UPN"
    assert first.identity.display_name == "Lee Gu"
    again = await resolver.resolve(IdentityRef(upn="LEE.GU@CONTOSO.COM", display_name="Lee (from Sentinel)"))
    assert again.identity.object_id == LEE and again.identity.display_name == "Lee (from Sentinel)"
    assert len(user_lookups(tenant)) == 1, "the second spelling came from the cache"

    clock.now += FOUND_TTL + timedelta(seconds=1)
    await resolver.resolve(IdentityRef(upn="lee.gu@contoso.com"))
    assert len(user_lookups(tenant)) == 2, "after the time-to-live Entra ID is asked again"


@pytest.mark.asyncio
async def test_an_object_id_is_taken_as_given(tenant: SandboxTenant, resolver: IdentityResolver) -> None:
    given = IdentityRef(object_id="not-even-looked-up", upn="someone@contoso.com")
    resolution = await resolver.resolve(given)
    assert (resolution.outcome, resolution.identity) == (Outcome.GIVEN, given)
    assert user_lookups(tenant) == []


@pytest.mark.asyncio
async def test_an_unknown_user_is_not_resolved_and_that_is_remembered_briefly(
    tenant: SandboxTenant, resolver: IdentityResolver, clock: Clock
) -> None:
    for _ in range(3):
        missing = await resolver.resolve(IdentityRef(upn="New.Hire@contoso.com"))
        assert missing.outcome is Outcome.NOT_FOUND and not missing.resolved
        assert missing.identity == IdentityRef(upn="New.Hire@contoso.com")
    assert len(user_lookups(tenant)) == 1
    clock.now += NOT_FOUND_TTL + timedelta(seconds=1)
    await resolver.resolve(IdentityRef(upn="new.hire@contoso.com"))
    assert len(user_lookups(tenant)) == 2, "a new account is picked up soon"


@pytest.mark.asyncio
@pytest.mark.parametrize("name", ["../../me", "a/b?c#d@contoso.com", "x" * 300, "'; DROP TABLE users; --"])
async def test_a_name_that_is_no_upn_is_simply_not_found(resolver: IdentityResolver, name: str) -> None:
    resolution = await resolver.resolve(IdentityRef(upn=name))
    assert resolution.outcome is Outcome.NOT_FOUND and not resolution.resolved


@pytest.mark.asyncio
async def test_graph_unavailable_leaves_the_name_unresolved_for_a_short_while(
    tenant: SandboxTenant, resolver: IdentityResolver, clock: Clock
) -> None:
    tenant.inject_fault("GET", r"/users/lee\.gu", status=503, headers={"Retry-After": "0"}, times=4)
    down = await resolver.resolve(IdentityRef(upn="lee.gu@contoso.com"))
    assert down.outcome is Outcome.UNAVAILABLE and not down.resolved and down.detail
    assert (await resolver.resolve(IdentityRef(upn="lee.gu@contoso.com"))).outcome is Outcome.UNAVAILABLE
    assert len(user_lookups(tenant)) == 4, "one call, retried by the client; the second answer was cached"
    clock.now += UNAVAILABLE_TTL + timedelta(seconds=1)
    back = await resolver.resolve(IdentityRef(upn="lee.gu@contoso.com"))
    assert back.outcome is Outcome.FOUND and back.identity.object_id == LEE


@pytest.mark.asyncio
async def test_concurrent_look_ups_of_one_name_make_one_call(
    tenant: SandboxTenant, resolver: IdentityResolver
) -> None:
    spellings = ["lee.gu@contoso.com", "Lee.Gu@contoso.com", "LEE.GU@CONTOSO.COM"]
    found = await asyncio.gather(*(resolver.resolve(IdentityRef(upn=spellings[n % 3])) for n in range(30)))
    assert {r.identity.object_id for r in found} == {LEE}
    assert len(user_lookups(tenant)) == 1


@pytest.mark.asyncio
async def test_a_batch_of_alerts_is_resolved_with_one_look_up_per_name(
    tenant: SandboxTenant, resolver: IdentityResolver
) -> None:
    alerts = [
        alert("a1", IdentityRef(upn="Lee.Gu@contoso.com", display_name="Lee G.")),
        alert(
            "a2", IdentityRef(object_id="6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a01", upn="adele.vance@contoso.com")
        ),
        alert("a3", IdentityRef(upn="nobody@contoso.com")),
        alert("a4", IdentityRef(upn="LEE.GU@contoso.com", on_prem_sid="S-1-5-21-1")),
    ]
    resolved = await resolver.resolve_alerts(alerts)
    assert [a.id for a in resolved] == ["a1", "a2", "a3", "a4"]
    assert resolved[0].target == IdentityRef(object_id=LEE, upn="lee.gu@contoso.com", display_name="Lee G.")
    assert resolved[1] == alerts[1], "an alert carrying the object id is kept as it is"
    assert resolved[2] == alerts[2], "an unknown name stays unresolved"
    assert resolved[3].target.object_id == LEE and resolved[3].target.on_prem_sid == "S-1-5-21-1"
    assert sorted(path.lower() for path in user_lookups(tenant)) == [
        "/v1.0/users/lee.gu@contoso.com",
        "/v1.0/users/nobody@contoso.com",
    ], "each name once, whatever its letter case"
