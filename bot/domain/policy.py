"""Who may act, how much sign-off each action needs, and what is never touched. Pure data.

Group membership and directory roles need Microsoft Graph, so they are resolved outside the
domain (``bot.tenant.directory``) into :class:`ActorRoles` and :class:`TargetFacts`, which the pure
approval functions take as plain values.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from bot.domain.models import Frozen, IdentityRef, ResponseAction


class Principals(Frozen):
    """A set of people: Entra object ids and Entra group object ids (members count)."""

    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        """Nobody is named."""
        return not self.users and not self.groups

    def names_user(self, object_id: str) -> bool:
        """Whether ``object_id`` is listed directly (case-insensitive)."""
        return object_id.lower() in {u.lower() for u in self.users}


class StormRule(Frozen):
    """When a mass compromise becomes one campaign, and how bulk actions on it are signed off.

    More than ``threshold`` identities opening cases within ``window`` open a campaign: the
    identities that join it get no card of their own (one campaign card lists them). A bulk
    request always needs ``approvals`` distinct approvers (never fewer than two). The hourly
    blast-radius limit applies to bulk requests too; a bulk request of up to ``max_bulk``
    targets may go past it only where the policy sets ``max_bulk`` explicitly.
    """

    threshold: int = 20
    window: timedelta = timedelta(minutes=10)
    approvals: int = 2
    max_bulk: int | None = None

    @property
    def required_approvals(self) -> int:
        """Distinct sign-offs a bulk request needs: at least two, whatever the policy says."""
        return max(self.approvals, 2)


class Policy(Frozen):
    """The rules every click is checked against.

    ``approvals`` is the number of distinct approvers who must sign off on an action (a requester
    who is also an approver counts once). Privileged targets always need two. Empty ``responders``
    means nobody may act: the bot fails closed.
    """

    responders: Principals = Principals()
    approvers: Principals = Principals()
    approvals: dict[ResponseAction, int] = Field(default_factory=dict)
    privileged_role_templates: frozenset[str] = frozenset()
    privileged_groups: frozenset[str] = frozenset()
    protected_users: frozenset[str] = frozenset()  # Entra object ids or UPNs, compared lower-case
    expiry: timedelta = timedelta(minutes=30)
    reminder_after: timedelta | None = timedelta(minutes=10)
    blast_radius_per_hour: int = 20
    step_up: StepUp | None = None
    storm: StormRule = StormRule()
    destructive_actions: frozenset[ResponseAction] = frozenset(
        {
            ResponseAction.DISABLE_ACCOUNT,
            ResponseAction.FORCE_PASSWORD_CHANGE,
            ResponseAction.REVOKE_SESSIONS,
            ResponseAction.CONFIRM_COMPROMISED,
            # Their Defender for Identity counterparts on the Entra ID account.
            ResponseAction.REQUIRE_SIGN_IN_AGAIN,
            ResponseAction.MARK_COMPROMISED,
        }
    )

    def approvals_for(self, action: ResponseAction, *, privileged_target: bool = False) -> int:
        """Distinct sign-offs ``action`` needs (1 unless the policy says more; 2 on privileged targets)."""
        required = self.approvals.get(action, 1)
        return max(required, 2) if privileged_target else required

    def step_up_for(self, action: ResponseAction, *, privileged_target: bool) -> StepUp | None:
        """The step-up sign-in a decision on ``action`` needs, if the policy asks for one."""
        if self.step_up is not None and self.step_up.applies(action, privileged_target=privileged_target):
            return self.step_up
        return None

    def is_protected(self, identity: IdentityRef) -> bool:
        """Whether the identity is a protected account (break-glass, service account)."""
        protected = {p.lower() for p in self.protected_users}
        return any(v and v.lower() in protected for v in (identity.object_id, identity.upn))


class ActorRoles(Frozen):
    """What the policy makes of one person right now (group membership already resolved)."""

    object_id: str
    responder: bool = False
    approver: bool = False


class TargetFacts(Frozen):
    """What the policy makes of the target identity right now."""

    privileged: bool = False
    privileged_reason: str = ""
    protected: bool = False


class StepUp(Frozen):
    """A fresh, stronger sign-in some decisions need (``step_up`` in the policy file).

    ``context`` is a Conditional Access authentication context id (``c1``…``c99``): the approval
    page asks Entra ID for it through the ``claims`` parameter, and a decision counts only when
    the ID token's ``acrs`` holds it and the sign-in (``auth_time``) is at most ``max_age`` old.
    It applies to requests on privileged accounts when ``privileged_targets``, and to every
    request for one of ``actions``, and guards the sign-off that lets the action run: every
    approval and retry, and opening a request when the requester's own sign-off is enough. A
    click in Teams never satisfies it.
    """

    context: str
    max_age: timedelta = timedelta(minutes=10)
    privileged_targets: bool = False
    actions: frozenset[ResponseAction] = frozenset()

    def applies(self, action: ResponseAction, *, privileged_target: bool) -> bool:
        """Whether a request for ``action`` (on a privileged account or not) needs it."""
        return action in self.actions or (self.privileged_targets and privileged_target)


Policy.model_rebuild()
