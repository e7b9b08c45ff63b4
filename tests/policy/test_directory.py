"""Directory against the sandbox tenant over HTTPS: roles from groups, privileged and protected targets."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from bot.config.policy_file import DEFAULT_PRIVILEGED_ROLE_TEMPLATES, load_policy
from bot.domain.models import Actor, IdentityRef
from bot.domain.policy import ActorRoles, Policy, Principals, TargetFacts
from bot.graph import GraphClient
from bot.tenant.directory import UNCHECKED_REASON, Directory
from devtools.sandbox import DEMO_POLICY, SandboxTenant
from tests.graph.helpers import graph_calls

from .conftest import Clock

MakeDirectory = Callable[[Policy], Directory]

# People and groups of the demo tenant (devtools/sandbox/scenarios/demo.yaml).
ALEX = "7e1f6c2a-3b4d-4e5f-8a9b-0c1d2e3f4a51"  # SOC Responders and SOC Approvers
MEGAN_ADMIN = "7e1f6c2a-3b4d-4e5f-8a9b-0c1d2e3f4a52"  # SOC Approvers
ISAIAH = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a06"  # SOC Tier 2, nested in SOC Responders
LEE = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a03"  # in no group, no role
PATRICK = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a04"  # Helpdesk Administrator
LYNNE = "7e1f6c2a-3b4d-4e5f-8a9b-0c1d2e3f4a55"  # Server Admins, nested in Tier 0 Operators
NESTOR = "7e1f6c2a-3b4d-4e5f-8a9b-0c1d2e3f4a56"  # Messaging Admins, which holds Exchange Administrator
BREAKGLASS = "3f0a9c1e-5b7d-4e2f-8a6c-9d1b2e3f4a99"  # breakglass@contoso.com, Global Administrator
SOC_APPROVERS = "5a0e8c3b-1d2f-4a6b-9c7d-2e3f4a5b6c02"
TIER0_OPERATORS = "5a0e8c3b-1d2f-4a6b-9c7d-2e3f4a5b6c04"
GLOBAL_ADMIN_ROLE = "9b2c4d6e-8f0a-4b1c-9d2e-3f4a5b6c7d01"
HELPDESK_ROLE = "9b2c4d6e-8f0a-4b1c-9d2e-3f4a5b6c7d02"

CHECK = "POST /v1.0/users/{}/checkMemberGroups 200"
ROLES = "GET /v1.0/users/{}/transitiveMemberOf/microsoft.graph.directoryRole 200"


@pytest.fixture
def demo_policy() -> Policy:
    return load_policy(DEMO_POLICY)


# -- who may act ----------------------------------------------------------------------------


async def test_group_members_get_their_roles(
    tenant: SandboxTenant, make_directory: MakeDirectory, demo_policy: Policy
) -> None:
    directory = make_directory(demo_policy)

    assert await directory.roles_of(ALEX) == ActorRoles(object_id=ALEX, responder=True, approver=True)
    assert await directory.roles_of(MEGAN_ADMIN) == ActorRoles(object_id=MEGAN_ADMIN, approver=True)
    # Isaiah is in SOC Tier 2 only; SOC Tier 2 is a member of SOC Responders.
    assert await directory.roles_of(ISAIAH) == ActorRoles(object_id=ISAIAH, responder=True)
    assert await directory.roles_of(LEE) == ActorRoles(object_id=LEE)
    assert tenant.violations == []


async def test_a_user_listed_directly_needs_no_graph_call(
    tenant: SandboxTenant, make_directory: MakeDirectory
) -> None:
    people = Principals(users=frozenset({LEE.upper()}))
    directory = make_directory(Policy(responders=people, approvers=people))

    assert await directory.roles_of(LEE) == ActorRoles(object_id=LEE, responder=True, approver=True)
    assert graph_calls(tenant) == []


async def test_an_unknown_clicker_is_a_member_of_nothing(
    tenant: SandboxTenant, make_directory: MakeDirectory, demo_policy: Policy
) -> None:
    outsider = "aaaaaaaa-0000-4000-8000-0000000000ff"  # another tenant's user: Graph answers 404

    assert await make_directory(demo_policy).roles_of(outsider) == ActorRoles(object_id=outsider)
    assert graph_calls(tenant) == [f"POST /v1.0/users/{outsider}/checkMemberGroups 404"]


async def test_roles_are_cached_per_user_for_the_ttl(
    tenant: SandboxTenant, make_directory: MakeDirectory, demo_policy: Policy, clock: Clock
) -> None:
    directory = make_directory(demo_policy)

    assert (await directory.roles_of(ISAIAH)).approver is False
    tenant.add_member(SOC_APPROVERS, "isaiah.langer@contoso.com")
    clock.advance(minutes=4, seconds=59)
    cached = await directory.roles_of(ISAIAH.upper())  # the same person, whatever the case
    clock.advance(seconds=1)
    fresh = await directory.roles_of(ISAIAH)

    assert cached.approver is False
    assert fresh.approver is True
    assert graph_calls(tenant) == [CHECK.format(ISAIAH)] * 2


async def test_one_request_checks_both_lists_and_batches_of_twenty(
    tenant: SandboxTenant, make_directory: MakeDirectory, graph: GraphClient
) -> None:
    others = [f"0000000{n:01x}-0000-4000-8000-{n:012d}" for n in range(12)]
    policy = Policy(
        responders=Principals(groups=frozenset([*others[:6], "5a0e8c3b-1d2f-4a6b-9c7d-2e3f4a5b6c01"])),
        approvers=Principals(groups=frozenset([*others[6:], SOC_APPROVERS.upper()])),
    )
    # 14 groups, one call; 25 groups, two calls of 20 and 5.
    assert await make_directory(policy).roles_of(ALEX) == ActorRoles(
        object_id=ALEX, responder=True, approver=True
    )
    assert graph_calls(tenant) == [CHECK.format(ALEX)]

    many = [f"1000{n:04x}-0000-4000-8000-000000000000" for n in range(25)]
    assert await graph.check_member_groups(ALEX, [*many, SOC_APPROVERS]) == {SOC_APPROVERS}
    sent = [r.json["groupIds"] for r in tenant.requests if r.path.endswith("/checkMemberGroups")][1:]
    assert [len(ids) for ids in sent] == [20, 6]


@pytest.mark.parametrize("status", [403, 503])
async def test_a_graph_failure_fails_closed(
    tenant: SandboxTenant,
    make_directory: MakeDirectory,
    demo_policy: Policy,
    status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    directory = make_directory(demo_policy)
    tenant.inject_fault("POST", r"/checkMemberGroups$", status=status, times=8)

    with caplog.at_level(logging.INFO, logger="bot.tenant.directory"):
        first = await directory.roles_of(ALEX)
        second = await directory.roles_of(MEGAN_ADMIN)
        tenant.clear_faults()
        recovered = await directory.roles_of(ALEX)

    assert first == ActorRoles(object_id=ALEX)
    assert second == ActorRoles(object_id=MEGAN_ADMIN)
    assert recovered == ActorRoles(object_id=ALEX, responder=True, approver=True)  # failures are not cached
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "could not be checked" in m]) == 1  # once per outage
    assert any("can be checked again" in m for m in messages)


async def test_a_graph_failure_keeps_direct_listings(
    tenant: SandboxTenant, make_directory: MakeDirectory, demo_policy: Policy
) -> None:
    policy = demo_policy.model_copy(update={"responders": Principals(users=frozenset({LEE}))})
    tenant.inject_fault("POST", r"/checkMemberGroups$", status=403)

    # Lee is listed by object id, which needs no Graph; approving would need SOC Approvers.
    assert await make_directory(policy).roles_of(LEE) == ActorRoles(object_id=LEE, responder=True)


async def test_named_approvers_carry_display_names(
    tenant: SandboxTenant, make_directory: MakeDirectory
) -> None:
    policy = Policy(approvers=Principals(users=frozenset({MEGAN_ADMIN, ALEX})))

    assert await make_directory(policy).named_approvers() == [
        Actor(object_id=ALEX, name="Alex Wilber"),
        Actor(object_id=MEGAN_ADMIN, name="Megan Bowen (admin)"),
    ]


# -- what the target is ---------------------------------------------------------------------


async def test_a_role_holder_is_privileged(
    tenant: SandboxTenant, make_directory: MakeDirectory, demo_policy: Policy
) -> None:
    facts = await make_directory(demo_policy).target_facts(
        IdentityRef(object_id=PATRICK, upn="patrick.o'brien@contoso.com")
    )

    assert facts == TargetFacts(privileged=True, privileged_reason="holds the Helpdesk Administrator role")
    assert graph_calls(tenant) == [ROLES.format(PATRICK)]
    roles_call = next(r for r in tenant.requests if "transitiveMemberOf" in r.path)
    assert roles_call.query == {"$select": "id,displayName,roleTemplateId", "$count": "true"}
    assert tenant.violations == []


async def test_a_role_through_a_role_assignable_group_counts(
    tenant: SandboxTenant, make_directory: MakeDirectory, demo_policy: Policy
) -> None:
    facts = await make_directory(demo_policy).target_facts(IdentityRef(object_id=NESTOR))

    assert facts.privileged_reason == "holds the Exchange Administrator role"


async def test_roles_outside_the_policy_do_not_count(
    tenant: SandboxTenant, make_directory: MakeDirectory, demo_policy: Policy
) -> None:
    directory = make_directory(demo_policy)

    # Alex holds Security Reader, which is not among the privileged templates.
    assert await directory.target_facts(IdentityRef(object_id=ALEX)) == TargetFacts()
    assert await directory.target_facts(IdentityRef(upn="lee.gu@contoso.com")) == TargetFacts()


async def test_every_held_privileged_role_is_named(
    tenant: SandboxTenant, make_directory: MakeDirectory, demo_policy: Policy, graph: GraphClient
) -> None:
    tenant.add_member(GLOBAL_ADMIN_ROLE, PATRICK)

    facts = await make_directory(demo_policy).target_facts(IdentityRef(object_id=PATRICK))

    assert facts.privileged_reason == "holds the Global Administrator and Helpdesk Administrator roles"


async def test_role_listing_follows_every_page_with_the_advanced_query_header(
    tenant: SandboxTenant, graph: GraphClient
) -> None:
    tenant.add_member(GLOBAL_ADMIN_ROLE, ALEX)
    tenant.add_member(HELPDESK_ROLE, ALEX)

    roles = await graph.list_directory_roles_of(ALEX, page_size=2)

    assert sorted(r["displayName"] for r in roles) == [
        "Global Administrator",
        "Helpdesk Administrator",
        "Security Reader",
    ]
    assert all(set(r) == {"id", "displayName", "roleTemplateId"} for r in roles)
    calls = [r for r in tenant.requests if "transitiveMemberOf" in r.path]
    assert [c.status for c in calls] == [200, 200]
    assert calls[1].query["$count"] == "true" and "$skiptoken" in calls[1].query
    assert tenant.violations == []  # ConsistencyLevel is required by the contract, on every page


async def test_a_member_of_a_privileged_group_is_privileged(
    tenant: SandboxTenant, make_directory: MakeDirectory, demo_policy: Policy
) -> None:
    policy = demo_policy.model_copy(update={"privileged_groups": frozenset({TIER0_OPERATORS})})
    directory = make_directory(policy)

    # Lynne is in Server Admins, which is a member of Tier 0 Operators.
    lynne = await directory.target_facts(IdentityRef(object_id=LYNNE))
    lee = await directory.target_facts(IdentityRef(object_id=LEE))

    assert lynne == TargetFacts(
        privileged=True, privileged_reason=f"is a member of the privileged group {TIER0_OPERATORS}"
    )
    assert lee == TargetFacts()


@pytest.mark.parametrize(
    "identity",
    [
        IdentityRef(upn="BreakGlass@Contoso.COM"),
        IdentityRef(object_id=BREAKGLASS, upn="breakglass@contoso.com"),
        # The alert names the account by object id only; the policy lists its UPN.
        IdentityRef(object_id=BREAKGLASS.upper()),
    ],
    ids=["upn-other-case", "both", "object-id-only"],
)
async def test_the_break_glass_account_is_protected(
    tenant: SandboxTenant, make_directory: MakeDirectory, demo_policy: Policy, identity: IdentityRef
) -> None:
    facts = await make_directory(demo_policy).target_facts(identity)

    assert facts == TargetFacts(
        privileged=True, privileged_reason="holds the Global Administrator role", protected=True
    )


async def test_protected_by_object_id_too(
    tenant: SandboxTenant, make_directory: MakeDirectory, demo_policy: Policy
) -> None:
    policy = demo_policy.model_copy(update={"protected_users": frozenset({LEE})})

    facts = await make_directory(policy).target_facts(IdentityRef(upn="Lee.Gu@contoso.com"))

    assert facts == TargetFacts(protected=True)


@pytest.mark.parametrize("status", [403, 503])
async def test_a_graph_failure_fails_safe(
    tenant: SandboxTenant, make_directory: MakeDirectory, demo_policy: Policy, status: int
) -> None:
    directory = make_directory(demo_policy)
    tenant.inject_fault("GET", r"/transitiveMemberOf/", status=status, times=8)

    facts = await directory.target_facts(IdentityRef(object_id=LEE, upn="lee.gu@contoso.com"))
    protected = await directory.target_facts(IdentityRef(upn="breakglass@contoso.com"))

    assert facts == TargetFacts(privileged=True, privileged_reason=UNCHECKED_REASON)
    assert protected.protected is True and protected.privileged_reason == UNCHECKED_REASON
    tenant.clear_faults()
    # Not cached: the next look asks again and gets the real answer.
    assert await directory.target_facts(IdentityRef(object_id=LEE)) == TargetFacts()


async def test_roles_without_template_ids_fail_safe(
    tenant: SandboxTenant, make_directory: MakeDirectory, demo_policy: Policy
) -> None:
    # What Graph returns to an app without RoleManagement.Read.Directory: ids only.
    tenant.inject_fault(
        "GET",
        r"/transitiveMemberOf/",
        status=200,
        body={"@odata.count": 1, "value": [{"@odata.type": "#microsoft.graph.directoryRole", "id": "x"}]},
    )

    directory = make_directory(demo_policy)
    facts = await directory.target_facts(IdentityRef(object_id=LEE))
    tenant.inject_fault("GET", r"/transitiveMemberOf/", status=200, body={"value": [{"id": "x"}]})
    # The UPN the policy protects was looked up first, so protection still holds.
    breakglass = await directory.target_facts(IdentityRef(object_id=BREAKGLASS))

    assert facts == TargetFacts(privileged=True, privileged_reason=UNCHECKED_REASON)
    assert breakglass == TargetFacts(privileged=True, privileged_reason=UNCHECKED_REASON, protected=True)


async def test_an_identity_without_id_or_upn_fails_safe(
    tenant: SandboxTenant, make_directory: MakeDirectory, demo_policy: Policy
) -> None:
    facts = await make_directory(demo_policy).target_facts(IdentityRef(on_prem_sid="S-1-5-21-1-2-3-4"))

    # The demo policy protects accounts; an identity with no name to check against the list
    # could be one of them, so it counts as protected.
    assert facts == TargetFacts(privileged=True, privileged_reason=UNCHECKED_REASON, protected=True)
    assert graph_calls(tenant) == []


async def test_a_failed_lookup_of_the_other_name_fails_closed(
    tenant: SandboxTenant, make_directory: MakeDirectory, demo_policy: Policy
) -> None:
    # Break-glass is listed by UPN; the alert names it by object id, and Graph cannot say its UPN.
    tenant.inject_fault("GET", rf"/users/{BREAKGLASS}$", status=503, times=8)
    facts = await make_directory(demo_policy).target_facts(IdentityRef(object_id=BREAKGLASS))
    assert facts.protected is True
    assert facts.privileged is True


async def test_a_policy_without_privileged_targets_asks_nothing(
    tenant: SandboxTenant, make_directory: MakeDirectory
) -> None:
    facts = await make_directory(Policy()).target_facts(IdentityRef(object_id=PATRICK))

    assert facts == TargetFacts()
    assert graph_calls(tenant) == []


async def test_target_facts_are_cached_for_the_ttl(
    tenant: SandboxTenant, make_directory: MakeDirectory, demo_policy: Policy, clock: Clock
) -> None:
    directory = make_directory(demo_policy)
    identity = IdentityRef(object_id=PATRICK, upn="patrick.o'brien@contoso.com")

    await directory.target_facts(identity)
    await directory.target_facts(identity)
    clock.advance(minutes=5)
    await directory.target_facts(identity)

    assert graph_calls(tenant) == [ROLES.format(PATRICK)] * 2


def test_default_templates_cover_the_demo_roles() -> None:
    assert "729827e3-9c14-49f7-bb1b-9608f156bbb8" in DEFAULT_PRIVILEGED_ROLE_TEMPLATES
