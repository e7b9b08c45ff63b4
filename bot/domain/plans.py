"""Which Graph calls carry out a response action for a given identity. Pure.

An action is routed to the system that really owns the account: a user synced from on-premises
Active Directory is disabled (and made to change password) on-premises through Defender for
Identity, because a cloud-side change is overwritten by the next directory sync; a cloud-only
user is handled in Entra ID. Accounts the identity has in Okta get the same treatment through
Defender for Identity where it supports the action.
"""

from __future__ import annotations

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
    DEFENDER_ACTION = "defender.invokeAction"


class Step(Frozen):
    """One call of a plan; ``defender_action`` and ``account`` are set for Defender for Identity."""

    operation: Operation
    provider: Provider
    defender_action: str = ""
    account: LinkedAccount | None = None

    @property
    def label(self) -> str:
        """How the thread names this step."""
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


def plan(action: ResponseAction, case: Case) -> tuple[Step, ...] | Refused:
    """The steps that carry out ``action`` on ``case``'s identity, or why it cannot be done."""
    if not case.resolved:
        return Refused(UNRESOLVED)
    return plan_for(action, case.facts, case.identity.label)


def plan_for(action: ResponseAction, facts: IdentityFacts, who: str) -> tuple[Step, ...] | Refused:
    """The steps for an identity known by its ``facts`` (``who`` names it in a refusal).

    The routing of :func:`plan` for a resolved identity; bulk execution plans each target with it.
    """
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
    if action is ResponseAction.CONFIRM_COMPROMISED:
        return (Step(operation=Operation.RISK_CONFIRM_COMPROMISED, provider=Provider.ENTRA),)
    return (Step(operation=Operation.RISK_DISMISS, provider=Provider.ENTRA),)


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
    if case.status is CaseStatus.CONTAINED:
        candidates = [
            ResponseAction.ENABLE_ACCOUNT,
            ResponseAction.REVOKE_SESSIONS,
            ResponseAction.FORCE_PASSWORD_CHANGE,
            ResponseAction.CONFIRM_COMPROMISED,
        ]
    else:
        candidates = [
            ResponseAction.DISABLE_ACCOUNT,
            ResponseAction.REVOKE_SESSIONS,
            ResponseAction.FORCE_PASSWORD_CHANGE,
            ResponseAction.CONFIRM_COMPROMISED,
            ResponseAction.DISMISS_RISK,
        ]
    risk = case.facts.risk_state
    if risk == "confirmedCompromised":
        candidates = [a for a in candidates if a is not ResponseAction.CONFIRM_COMPROMISED]
    if risk != "atRisk":
        candidates = [a for a in candidates if a is not ResponseAction.DISMISS_RISK]
    return [a for a in candidates if not isinstance(plan(a, case), Refused)]
