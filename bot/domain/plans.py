"""Which Graph calls carry out a response action for a given identity. Pure.

An action is routed to the system that really owns the account: a user synced from on-premises
Active Directory is disabled (and made to change password) on-premises through Defender for
Identity, because a cloud-side change is overwritten by the next directory sync; a cloud-only
user is handled in Entra ID. Accounts the identity has in Okta get the same treatment through
Defender for Identity where it supports the action.

Defender for Identity links a person's accounts (Active Directory, Entra ID, Okta) into one
identity: one request acts on every account it applies to, or on those the responder picked
(``providers``), one step per account, each verified and reported on its own. A Defender for
Identity action is planned only on an account whose provider supports it (the ``security.account``
resource's table, :data:`~bot.domain.models.DEFENDER_PROVIDER_ACTIONS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from bot.domain.approval import Refused
from bot.domain.models import (
    Case,
    CaseStatus,
    Frozen,
    IdentityFacts,
    LinkedAccount,
    Provider,
    ResponseAction,
)


class Operation(StrEnum):
    """One kind of Graph call an action can be made of."""

    ENTRA_DISABLE = "entra.disable"
    ENTRA_ENABLE = "entra.enable"
    ENTRA_REVOKE_SESSIONS = "entra.revokeSessions"
    ENTRA_RESET_PASSWORD = "entra.resetPassword"
    RISK_CONFIRM_COMPROMISED = "risk.confirmCompromised"
    RISK_DISMISS = "risk.dismiss"
    RISK_CONFIRM_SAFE = "risk.confirmSafe"
    DEFENDER_ACTION = "defender.invokeAction"
    # Read-only: confirms an account is (still) disabled, for Keep contained. Sends nothing.
    VERIFY_DISABLED = "verify.disabled"


class Step(Frozen):
    """One call of a plan; ``defender_action`` and ``account`` are set for Defender for Identity."""

    operation: Operation
    provider: Provider
    defender_action: str = ""
    account: LinkedAccount | None = None

    @property
    def key(self) -> str:
        """What this step does to which account; with the request's key, the step's idempotency key."""
        account = self.account.identifier if self.account else ""
        return ":".join(
            p for p in (self.operation.value, self.provider.value, self.defender_action, account) if p
        )

    @property
    def sends(self) -> bool:
        """Whether the step changes anything in the tenant (a read-only check does not)."""
        return self.operation is not Operation.VERIFY_DISABLED

    @property
    def label(self) -> str:
        """How the thread names this step."""
        if self.operation is Operation.VERIFY_DISABLED:
            return f"Check the {self.provider.label} account is disabled"
        if self.operation is Operation.DEFENDER_ACTION:
            verb = _DEFENDER_LABELS.get(self.defender_action, self.defender_action)
            return f"{verb} in {self.provider.label} (Defender for Identity)"
        return _STEP_LABELS[self.operation]


_STEP_LABELS = {
    Operation.ENTRA_DISABLE: "Disable in Entra ID",
    Operation.ENTRA_ENABLE: "Enable in Entra ID",
    Operation.ENTRA_REVOKE_SESSIONS: "Revoke Entra ID sign-in sessions",
    Operation.ENTRA_RESET_PASSWORD: "Set a new random password in Entra ID (change required at next sign-in)",
    Operation.RISK_CONFIRM_COMPROMISED: "Confirm compromised in Entra ID Protection",
    Operation.RISK_DISMISS: "Dismiss risk in Entra ID Protection",
    Operation.RISK_CONFIRM_SAFE: "Confirm safe in Entra ID Protection",
}
_DEFENDER_LABELS = {
    "disable": "Disable",
    "enable": "Enable",
    "forcePasswordReset": "Force password reset",
    "revokeAllSessions": "Revoke all sessions",
    "requireUserToSignInAgain": "Require sign-in again",
    "markUserAsCompromised": "Mark as compromised",
}


def _defender(facts: IdentityFacts, provider: Provider, action: str) -> list[Step]:
    account = facts.linked_for(provider, action)
    if account is None:
        return []
    return [
        Step(operation=Operation.DEFENDER_ACTION, provider=provider, defender_action=action, account=account)
    ]


UNRESOLVED = (
    "This user is not matched to an Entra ID account yet, so no action can be taken from this card. "
    "The bot keeps looking them up and offers the actions once Entra ID knows them."
)


def blocked(case: Case) -> str:
    """Why no action can be asked for on ``case`` at all, in plain words ("" when one can).

    Acting needs the person's Entra object id: a name alone (a UPN Entra ID does not know, or
    could not be asked about) could be anyone's, and one person must never have two cases to
    act from. A case merged into the person's other case is acted on there.
    """
    if case.merged_into:
        return f"This case was merged into case {case.merged_into}, the person's one case: act on that card."
    if not case.resolved:
        return UNRESOLVED
    return ""


def plan(
    action: ResponseAction,
    case: Case,
    providers: Sequence[Provider] = (),
    extras: Sequence[ResponseAction] = (),
) -> tuple[Step, ...] | Refused:
    """The steps that carry out ``action`` on ``case``'s identity, or why it cannot be done.

    ``providers`` keeps only the steps on those providers' accounts (empty: every account);
    ``extras`` are the actions a Keep contained request adds after its checks.
    """
    if not case.resolved:
        return Refused(UNRESOLVED)
    unknown = [p for p in providers if p not in case.facts.providers]
    if unknown:
        return Refused(
            f"{case.identity.label} has no {unknown[0].label} account that Defender for Identity links; "
            "nothing was done."
        )
    steps = _plan(action, case.facts, case.identity.label, extras)
    if isinstance(steps, Refused) or not providers:
        return steps
    picked = tuple(s for s in steps if s.provider in providers)
    if not picked:
        names = ", ".join(p.label for p in providers)
        return Refused(f"{action.label} does not apply to the {names} account(s) picked; nothing was done.")
    return picked


def plan_for(action: ResponseAction, facts: IdentityFacts, who: str) -> tuple[Step, ...] | Refused:
    """The steps for an identity known by its ``facts`` (``who`` names it in a refusal), on every
    account: the routing of :func:`plan` for a resolved identity; bulk execution plans each target
    with it."""
    return _plan(action, facts, who, ())


def _plan(
    action: ResponseAction, facts: IdentityFacts, who: str, extras: Sequence[ResponseAction]
) -> tuple[Step, ...] | Refused:
    if action is ResponseAction.DISABLE_ACCOUNT:
        return _switch(facts, enable=False)
    if action is ResponseAction.ENABLE_ACCOUNT:
        return _switch(facts, enable=True)
    if action is ResponseAction.REVOKE_SESSIONS:
        return (
            Step(operation=Operation.ENTRA_REVOKE_SESSIONS, provider=Provider.ENTRA),
            *_defender(facts, Provider.OKTA, "revokeAllSessions"),
        )
    if action is ResponseAction.FORCE_PASSWORD_CHANGE:
        if facts.synced:
            on_prem = _defender(facts, Provider.ACTIVE_DIRECTORY, "forcePasswordReset")
            if not on_prem:
                return Refused(
                    f"{who}'s password is mastered in on-premises Active Directory, and "
                    "Defender for Identity has no account for it that supports a password reset. Reset it "
                    "on-premises (a cloud-side password would be overwritten by the next sync)."
                )
            return tuple(on_prem)
        return (
            Step(operation=Operation.ENTRA_RESET_PASSWORD, provider=Provider.ENTRA),
            Step(operation=Operation.ENTRA_REVOKE_SESSIONS, provider=Provider.ENTRA),
        )
    if action is ResponseAction.REQUIRE_SIGN_IN_AGAIN:
        return _only_through_defender(facts, who, Provider.ENTRA, "requireUserToSignInAgain")
    if action is ResponseAction.MARK_COMPROMISED:
        return _only_through_defender(facts, who, Provider.ENTRA, "markUserAsCompromised")
    if action is ResponseAction.CONFIRM_COMPROMISED:
        return (Step(operation=Operation.RISK_CONFIRM_COMPROMISED, provider=Provider.ENTRA),)
    if action is ResponseAction.CONFIRM_SAFE:
        return (Step(operation=Operation.RISK_CONFIRM_SAFE, provider=Provider.ENTRA),)
    if action is ResponseAction.KEEP_CONTAINED:
        return _keep_contained(facts, who, extras)
    return (Step(operation=Operation.RISK_DISMISS, provider=Provider.ENTRA),)


KEEP_CONTAINED_EXTRAS = (ResponseAction.REVOKE_SESSIONS, ResponseAction.FORCE_PASSWORD_CHANGE)


def _keep_contained(
    facts: IdentityFacts, who: str, extras: Sequence[ResponseAction]
) -> tuple[Step, ...] | Refused:
    """Ratify automatic containment: check each account that shows a state is disabled (nothing
    is sent for that), then run what the responder added."""
    steps = [Step(operation=Operation.VERIFY_DISABLED, provider=Provider.ENTRA)]
    if facts.synced and facts.linked_for(Provider.ACTIVE_DIRECTORY, "enable") is not None:
        account = facts.linked_for(Provider.ACTIVE_DIRECTORY, "enable")
        steps.insert(
            0, Step(operation=Operation.VERIFY_DISABLED, provider=Provider.ACTIVE_DIRECTORY, account=account)
        )
    for extra in extras:
        if extra not in KEEP_CONTAINED_EXTRAS:
            return Refused(f"Keep contained cannot add {extra.label}; nothing was done.")
        added = _plan(extra, facts, who, ())
        if isinstance(added, Refused):
            return added
        steps += [s for s in added if s not in steps]
    return tuple(steps)


def _only_through_defender(
    facts: IdentityFacts, who: str, provider: Provider, action: str
) -> tuple[Step, ...] | Refused:
    steps = _defender(facts, provider, action)
    if not steps:
        return Refused(
            f"Defender for Identity has no {provider.label} account of {who} that supports "
            f"{_DEFENDER_LABELS[action].lower()}; nothing was done."
        )
    return tuple(steps)


def _switch(facts: IdentityFacts, *, enable: bool) -> tuple[Step, ...]:
    verb = "enable" if enable else "disable"
    steps: list[Step] = []
    if facts.synced:
        # On-premises first: once AD says disabled, the next sync keeps Entra disabled too.
        steps += _defender(facts, Provider.ACTIVE_DIRECTORY, verb)
    steps.append(
        Step(operation=Operation.ENTRA_ENABLE if enable else Operation.ENTRA_DISABLE, provider=Provider.ENTRA)
    )
    steps += _defender(facts, Provider.OKTA, verb)
    return tuple(steps)


def offered_actions(case: Case) -> list[ResponseAction]:
    """The actions the card offers for this case: only those that make sense and can be routed."""
    if case.protected or blocked(case):
        return []
    if case.awaiting_ratification:
        # Contained automatically: a responder keeps it so, or rolls it back (two approvers).
        return [ResponseAction.KEEP_CONTAINED, ResponseAction.ENABLE_ACCOUNT]
    if case.status is CaseStatus.CONTAINED:
        candidates = [
            ResponseAction.ENABLE_ACCOUNT,
            ResponseAction.REVOKE_SESSIONS,
            ResponseAction.REQUIRE_SIGN_IN_AGAIN,
            ResponseAction.FORCE_PASSWORD_CHANGE,
            ResponseAction.CONFIRM_COMPROMISED,
            ResponseAction.MARK_COMPROMISED,
        ]
    else:
        candidates = [
            ResponseAction.DISABLE_ACCOUNT,
            ResponseAction.REVOKE_SESSIONS,
            ResponseAction.REQUIRE_SIGN_IN_AGAIN,
            ResponseAction.FORCE_PASSWORD_CHANGE,
            ResponseAction.CONFIRM_COMPROMISED,
            ResponseAction.MARK_COMPROMISED,
            ResponseAction.CONFIRM_SAFE,
            ResponseAction.DISMISS_RISK,
        ]
    risk = case.facts.risk_state
    if risk == "confirmedCompromised":
        candidates = [
            a
            for a in candidates
            if a not in (ResponseAction.CONFIRM_COMPROMISED, ResponseAction.MARK_COMPROMISED)
        ]
    if risk != "atRisk":
        candidates = [
            a for a in candidates if a not in (ResponseAction.DISMISS_RISK, ResponseAction.CONFIRM_SAFE)
        ]
    return [a for a in candidates if not isinstance(plan(a, case), Refused)]
