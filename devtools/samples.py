"""Sample cases and the case card of every state a responder can see, built in one place.

The contract tests (schema and Teams rules), the golden files under ``tests/contract/golden`` and
``remediation-bot cards dump`` all read :func:`catalogue`. Everything here is pure: fixed
timestamps around 2026-11-25 09:00 UTC, fixed ids, no I/O, so a card changes only when the
renderer or the domain does.

Adding a state is one line in ``_STATES``: a name and a zero-argument function returning the card,
usually ``render_case(<a sample case>, <a sample request>)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.domain.approval import ROLLBACK_WHY_TWO
from bot.domain.campaigns import BulkRequest, Campaign, ItemOutcome, open_bulk
from bot.domain.models import (
    AccountState,
    ActionRequest,
    ActionResult,
    Actor,
    Alert,
    AlertSource,
    Case,
    CaseStatus,
    IdentityFacts,
    IdentityRef,
    LinkedAccount,
    Provider,
    RequestState,
    ResponseAction,
    Severity,
)
from bot.domain.policy import ActorRoles, Policy, Principals, StormRule
from cards.campaign import render_campaign
from cards.case import render_case

Card = dict[str, Any]

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
"""When the responder clicks "Disable account" in every sample; other times are relative to it."""

TENANT_ID = "8f3a1c2e-5b7d-4e9f-a1c3-2d4e6f8a0b1c"
CASE_ID = "c3f9a2b7d104"
REQUEST_ID = "r7e21b0c9a4f"

ADELE = IdentityRef(
    object_id="6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a01",
    upn="adele.vance@contoso.com",
    display_name="Adele Vance",
    on_prem_sid="S-1-5-21-3623811015-3361044348-30300820-1104",
)
ALEX = Actor(object_id="aaaaaaaa-0000-4000-8000-000000000001", name="Alex Wilber")
MEGAN = Actor(object_id="aaaaaaaa-0000-4000-8000-000000000002", name="Megan Bowen")


def _at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def pass_the_ticket_alert() -> Alert:
    """A high-severity Defender for Identity alert with a portal link and a MITRE technique."""
    alert_id = "aaf3b1c2d4e5f60718293a4b5c6d7e8f90"
    return Alert(
        id=alert_id,
        source=AlertSource.DEFENDER_FOR_IDENTITY,
        title="Suspected identity theft (pass-the-ticket)",
        severity=Severity.HIGH,
        status="new",
        created_at=_at(-40),
        updated_at=_at(-19),
        first_activity_at=_at(-52),
        last_activity_at=_at(-41),
        web_url=f"https://security.microsoft.com/alerts/{alert_id}?tid={TENANT_ID}",
        detection_source="microsoftDefenderForIdentity",
        techniques=("T1550.003",),
        target=ADELE,
    )


def unfamiliar_sign_in_alert() -> Alert:
    """A medium-severity Entra ID Protection alert without a portal link (the card builds one)."""
    return Alert(
        id="ad2b9e4f7c1a3d5e6f708192a3b4c5d6e7",
        source=AlertSource.IDENTITY_PROTECTION,
        title="Unfamiliar sign-in properties",
        severity=Severity.MEDIUM,
        status="new",
        created_at=_at(-25),
        updated_at=_at(-8),
        first_activity_at=_at(-31),
        last_activity_at=_at(-31),
        detection_source="azureAdIdentityProtection",
        target=IdentityRef(object_id=ADELE.object_id, upn=ADELE.upn),
    )


def open_case() -> Case:
    """Adele Vance's open case: two alerts, one from each source; the account read back enabled."""
    return Case(
        id=CASE_ID,
        identity=ADELE,
        alerts=(pass_the_ticket_alert(), unfamiliar_sign_in_alert()),
        opened_at=_at(-39),
        account=AccountState(enabled=True, checked_at=_at(-1)),
        revision=3,
        published_revision=3,
    )


def contained_case() -> Case:
    """The same case after the account was disabled and read back disabled."""
    case = open_case()
    return case.revised(
        status=CaseStatus.CONTAINED,
        account=AccountState(enabled=False, checked_at=_at(1.2)),
    )


def many_alerts_case(count: int = 8) -> Case:
    """The open case with ``count`` alerts, more than the card lists (it links the rest)."""
    base = pass_the_ticket_alert()
    alerts = tuple(
        base.model_copy(
            update={
                "id": f"{base.id[:-2]}{i:02d}",
                "created_at": _at(-60 + 5 * i),
                "updated_at": _at(-58 + 5 * i),
            }
        )
        for i in range(count)
    )
    return open_case().model_copy(update={"alerts": alerts})


_SUCCEEDED = ActionResult(
    succeeded=True,
    summary="The account is disabled in Entra ID; new sign-ins are blocked.",
    verified=True,
    verified_state="accountEnabled = false",
    verified_at=_at(1.2),
    graph_request_id="5d0c6a1e-3b7f-4c2a-9e81-0f4d2b6a7c39",
)
_FAILED = ActionResult(
    succeeded=False,
    summary="Insufficient privileges to complete the operation.",
    graph_request_id="9a4e2c7b-1d3f-4b6a-8c05-e7f1a2b3c4d5",
)

# What each state has that a fresh request lacks: who approved, when it ran or ended, the result.
_STATE_FIELDS: dict[RequestState, dict[str, Any]] = {
    RequestState.PENDING: {"approvals": (ALEX,), "required_approvals": 2},
    RequestState.APPROVED: {"approvals": (MEGAN,)},
    RequestState.EXECUTING: {"approvals": (MEGAN,), "started_at": _at(1)},
    RequestState.SUCCEEDED: {
        "approvals": (MEGAN,),
        "started_at": _at(1),
        "finished_at": _at(1.2),
        "result": _SUCCEEDED,
    },
    RequestState.FAILED: {
        "approvals": (MEGAN,),
        "started_at": _at(1),
        "finished_at": _at(1.1),
        "result": _FAILED,
    },
    RequestState.REJECTED: {
        "approvals": (ALEX,),
        "required_approvals": 2,
        "decided_by": MEGAN,
        "decision_note": "Known travel; the sign-in is hers",
        "finished_at": _at(4),
    },
    RequestState.EXPIRED: {"approvals": (ALEX,), "required_approvals": 2, "finished_at": _at(30)},
    RequestState.CANCELLED: {
        "approvals": (ALEX,),
        "required_approvals": 2,
        "decided_by": ALEX,
        "finished_at": _at(2),
    },
}


def request(state: RequestState, **changes: Any) -> ActionRequest:
    """Alex Wilber's request to disable Adele Vance's account, as it looks in ``state``.

    ``changes`` override any field (e.g. ``required_approvals=2``).
    """
    fields: dict[str, Any] = {
        "id": REQUEST_ID,
        "case_id": CASE_ID,
        "action": ResponseAction.DISABLE_ACCOUNT,
        "requester": ALEX,
        "reason": "Pass-the-ticket from an unknown host; containing until reviewed",
        "state": state,
        "created_at": T0,
        "expires_at": _at(30),
        "idempotency_key": f"{CASE_ID}:{ResponseAction.DISABLE_ACCOUNT.value}:{REQUEST_ID}",
        **_STATE_FIELDS.get(state, {}),
        **changes,
    }
    return ActionRequest(**fields)


def case_for(state: RequestState) -> Case:
    """The case as it is while its request is in ``state`` (contained once the action succeeded)."""
    return contained_case() if state is RequestState.SUCCEEDED else open_case()


def _with_request(state: RequestState) -> Callable[[], Card]:
    return lambda: render_case(case_for(state), request(state))


RITA = Actor(object_id="aaaaaaaa-0000-4000-8000-000000000003", name="Rita Requester")
PROTECTED_NOTE = (
    "Break Glass (breakglass@contoso.com) is a protected account (break-glass or service account): "
    "the bot never acts on it. Handle it by hand with your break-glass procedure."
)
BLAST_RADIUS_NOTE = (
    "The blast-radius limit is reached: at most 20 destructive actions may run per hour across the "
    "tenant, so this one was refused. If this is a real mass compromise, ask your security admin to "
    "raise the limit in the policy."
)


def protected_case() -> Case:
    """The break-glass account: alerts are shown, actions never offered."""
    breakglass = IdentityRef(
        object_id="6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a99",
        upn="breakglass@contoso.com",
        display_name="Break Glass",
    )
    alert = unfamiliar_sign_in_alert().model_copy(update={"target": breakglass, "severity": Severity.HIGH})
    return open_case().model_copy(
        update={"identity": breakglass, "alerts": (alert,), "protected": True, "target_checked": True}
    )


def privileged_case() -> Case:
    """Adele's case as if she held an admin role: every action needs two approvers."""
    return open_case().model_copy(
        update={"privileged_reason": "holds the Helpdesk Administrator role", "target_checked": True}
    )


CAMPAIGN_ID = "a5c0ffee0001"
SPRAY_IP = "203.0.113.77"
CAMPAIGN_POLICY = Policy(
    responders=Principals(users=frozenset({ALEX.object_id, MEGAN.object_id})),
    approvers=Principals(users=frozenset({ALEX.object_id, MEGAN.object_id})),
    protected_users=frozenset({"breakglass@contoso.com"}),
    blast_radius_per_hour=20,
    storm=StormRule(max_bulk=50),
)


def campaign_members(count: int = 25) -> list[Case]:
    """``count`` identities hit by one password spray (every fifth medium), plus the break-glass
    account and one Helpdesk Administrator."""
    members: list[Case] = []
    for i in range(count):
        upn = "breakglass@contoso.com" if i == 0 else f"spray{i:02d}@contoso.com"
        identity = IdentityRef(
            object_id=f"5f000000-0000-4000-8000-{i:012d}", upn=upn, display_name=f"Spray Victim {i:02d}"
        )
        alert = Alert(
            id=f"ip{i:030d}",
            source=AlertSource.IDENTITY_PROTECTION,
            title="Password spray",
            severity=Severity.MEDIUM if i % 5 == 4 else Severity.HIGH,
            status="new",
            created_at=_at(-12),
            updated_at=_at(-12),
            detection_source="azureAdIdentityProtection",
            techniques=("T1110.003",),
            source_ips=(SPRAY_IP,),
            target=identity,
        )
        members.append(
            Case(
                id=f"case{i:08d}",
                identity=identity,
                alerts=(alert,),
                opened_at=_at(-11),
                target_checked=True,
                protected=i == 0,
                privileged_reason="holds the Helpdesk Administrator role" if i == 1 else "",
                campaign_id=CAMPAIGN_ID,
                version=1,
            )
        )
    return members


def campaign() -> Campaign:
    """The campaign the spray opened, its card posted."""
    return Campaign(
        id=CAMPAIGN_ID,
        opened_at=_at(-11),
        last_joined_at=_at(-10),
        threshold=20,
        window_seconds=600,
        members=25,
        version=3,
    )


def bulk_request(state: RequestState, **changes: Any) -> BulkRequest:
    """Alex Wilber's bulk request to disable every identity the spray reached, in ``state``."""
    members = campaign_members()
    opened = open_bulk(
        campaign(),
        bulk_id="b1f2e3d4c5a6",
        scope="cluster:62a99b0668dab6d3",
        scope_label="Alert: Password spray",
        action=ResponseAction.DISABLE_ACCOUNT,
        actor=ALEX,
        roles=ActorRoles(object_id=ALEX.object_id, responder=True, approver=True),
        reason="One password spray from 203.0.113.77 reached every one of them",
        candidates=[(case, case.protected, case.privileged_reason) for case in members],
        policy=CAMPAIGN_POLICY,
        now=_at(-8),
        started_last_hour=2,
    )
    assert isinstance(opened, BulkRequest)
    approval = opened.approval.model_copy(
        update={"state": state, "approvals": (ALEX, MEGAN) if state is not RequestState.PENDING else (ALEX,)}
    )
    outcomes: dict[str, ItemOutcome] = {}
    if state in (RequestState.EXECUTING, RequestState.SUCCEEDED, RequestState.FAILED):
        done = opened.targets if state is not RequestState.EXECUTING else opened.targets[:10]
        for i, target in enumerate(done):
            failed = state is RequestState.FAILED and i in (3, 7)
            outcomes[target.case_id] = ItemOutcome(
                outcome="failed" if failed else "verified",
                detail="Disable in Entra ID: Graph refused it (403 Authorization_RequestDenied)."
                if failed
                else "Disable account done and verified by reading the state back.",
            )
        approval = approval.model_copy(update={"started_at": _at(-6)})
    return opened.model_copy(update={"approval": approval, "outcomes": outcomes, **changes})


def _campaign_card(*bulks: BulkRequest, page: int = 0, note: str | None = None) -> Callable[[], Card]:
    return lambda: render_campaign(
        campaign(), campaign_members(), list(bulks), CAMPAIGN_POLICY, page=page, note=note
    )


def linked_accounts_case() -> Case:
    """Adele at risk, with the accounts Defender for Identity links: AD (synced), Entra ID, Okta."""
    identity_id = "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9"
    linked = (
        LinkedAccount(
            identity_id=identity_id,
            identifier="1f2e3d4c-5b6a-4798-8a7b-6c5d4e3f2a10",
            provider=Provider.ACTIVE_DIRECTORY,
            actions=frozenset({"disable", "enable", "forcePasswordReset"}),
            enabled=True,
        ),
        LinkedAccount(
            identity_id=identity_id,
            identifier=ADELE.object_id or "",
            provider=Provider.ENTRA,
            actions=frozenset({"disable", "enable", "revokeAllSessions", "requireUserToSignInAgain"}),
            enabled=True,
        ),
        LinkedAccount(
            identity_id=identity_id,
            identifier="00u1adeleOkta9",
            provider=Provider.OKTA,
            actions=frozenset({"disable", "enable", "revokeAllSessions"}),
        ),
    )
    facts = IdentityFacts(
        synced=True, on_prem_sid=ADELE.on_prem_sid, risk_state="atRisk", risk_level="high", linked=linked
    )
    return open_case().model_copy(update={"facts": facts, "target_checked": True})


def disrupted_case() -> Case:
    """Adele's account disabled by Defender XDR's automatic attack disruption before anyone acted."""
    alert = pass_the_ticket_alert().model_copy(update={"disrupted": True})
    case = linked_accounts_case()
    facts = case.facts.model_copy(
        update={
            "linked": tuple(
                a.model_copy(update={"enabled": False}) if a.enabled else a for a in case.facts.linked
            )
        }
    )
    return case.model_copy(
        update={
            "alerts": (alert, unfamiliar_sign_in_alert()),
            "account": AccountState(enabled=False, checked_at=_at(-1)),
            "facts": facts,
        }
    ).reconciled()


def roll_back_request() -> ActionRequest:
    """Alex asks to re-enable the disrupted account: always two approvers."""
    return request(
        RequestState.PENDING,
        action=ResponseAction.ENABLE_ACCOUNT,
        reason="The user confirmed the sign-ins; Defender's incident is a false positive",
        required_approvals=2,
        privileged_reason=ROLLBACK_WHY_TWO,
        idempotency_key=f"{CASE_ID}:{ResponseAction.ENABLE_ACCOUNT.value}:{REQUEST_ID}",
    )


# One line per state: its name (also the golden file's name) and how to render it.
_STATES: dict[str, Callable[[], Card]] = {
    "new-case": lambda: render_case(open_case()),
    "new-case-many-alerts": lambda: render_case(many_alerts_case()),
    "pending-one-sign-off": lambda: render_case(
        open_case(), request(RequestState.PENDING, requester=RITA, approvals=())
    ),
    "awaiting-second-approver": lambda: render_case(
        privileged_case(),
        request(RequestState.PENDING, privileged_reason="holds the Helpdesk Administrator role"),
    ),
    "approved": _with_request(RequestState.APPROVED),
    "executing": _with_request(RequestState.EXECUTING),
    "succeeded": _with_request(RequestState.SUCCEEDED),
    "failed": _with_request(RequestState.FAILED),
    "rejected": _with_request(RequestState.REJECTED),
    "expired": _with_request(RequestState.EXPIRED),
    "cancelled": _with_request(RequestState.CANCELLED),
    "refused-protected-account": lambda: render_case(protected_case(), note=PROTECTED_NOTE),
    "refused-blast-radius": lambda: render_case(open_case(), note=BLAST_RADIUS_NOTE),
    "campaign": _campaign_card(),
    "campaign-page-3": _campaign_card(page=2),
    "campaign-bulk-awaiting-second-approver": _campaign_card(bulk_request(RequestState.PENDING)),
    "campaign-bulk-running": _campaign_card(bulk_request(RequestState.EXECUTING)),
    "campaign-bulk-partly-failed": _campaign_card(bulk_request(RequestState.FAILED)),
    "linked-accounts": lambda: render_case(linked_accounts_case()),
    "contained-automatically": lambda: render_case(disrupted_case()),
    "roll-back-awaiting-second-approver": lambda: render_case(disrupted_case(), roll_back_request()),
}


def catalogue() -> dict[str, Card]:
    """Every sample state's name mapped to its rendered card (Adaptive Card JSON), in a fixed order."""
    return {name: render() for name, render in _STATES.items()}


def card_json(card: Card) -> str:
    """``card`` as the golden files and ``cards dump`` store it: indented, keys sorted, final newline."""
    return json.dumps(card, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
