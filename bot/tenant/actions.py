"""Executors: carry out a plan through Microsoft Graph, step by step, and verify each step by
reading the state back.

A step's success is what Graph answered; its verification is what reading back showed. Nothing
is reported verified without a read, and a step whose outcome is unknown (a timeout after the
request went out) is never sent again blindly: the state is read instead.
"""

from __future__ import annotations

import logging
import secrets
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot.domain.models import (
    ActionResult,
    Case,
    IdentityRef,
    Provider,
    ResponseAction,
    StepOutcome,
    Verification,
)
from bot.domain.plans import Operation, Step
from bot.errors import GraphError, GraphForbidden, GraphNotFound, GraphOutcomeUnknown
from bot.graph import GraphClient
from bot.graph.permissions import required_permission

log = logging.getLogger(__name__)

# How far Graph's timestamps may trail ours and still count as "after the action".
CLOCK_SKEW = timedelta(minutes=2)

# Each operation's Graph call (method, contract path, PATCH properties), to name its permission.
_OPERATION_CALLS: dict[Operation, tuple[str, str, tuple[str, ...]]] = {
    Operation.ENTRA_DISABLE: ("PATCH", "/users/{user-id}", ("accountEnabled",)),
    Operation.ENTRA_ENABLE: ("PATCH", "/users/{user-id}", ("accountEnabled",)),
    Operation.ENTRA_REVOKE_SESSIONS: ("POST", "/users/{user-id}/revokeSignInSessions", ()),
    Operation.ENTRA_RESET_PASSWORD: ("PATCH", "/users/{user-id}", ("passwordProfile",)),
    Operation.RISK_CONFIRM_COMPROMISED: ("POST", "/identityProtection/riskyUsers/confirmCompromised", ()),
    Operation.RISK_DISMISS: ("POST", "/identityProtection/riskyUsers/dismiss", ()),
    Operation.RISK_CONFIRM_SAFE: ("POST", "/identityProtection/riskyUsers/confirmSafe", ()),
    Operation.VERIFY_DISABLED: ("GET", "/users/{user-id}", ()),
    Operation.DEFENDER_ACTION: (
        "POST",
        "/security/identities/identityAccounts/{identityAccounts-id}/invokeAction",
        (),
    ),
}


def generate_password(length: int = 24) -> str:
    """A random password meeting Entra's complexity rules. It lives only long enough to be sent:
    never logged, stored, shown or replied; the user recovers through self-service reset or the
    help desk."""
    alphabet = string.ascii_letters + string.digits + "!@#$%^&*-_=+?"
    while True:
        candidate = "".join(secrets.choice(alphabet) for _ in range(length))
        if (
            any(c.islower() for c in candidate)
            and any(c.isupper() for c in candidate)
            and any(c.isdigit() for c in candidate)
            and any(not c.isalnum() for c in candidate)
        ):
            return candidate


@dataclass
class Executor:
    """Runs plans against Graph. ``clock`` stamps verifications; ``recheck_after`` is when a
    step that awaits eventual consistency is read again."""

    graph: GraphClient
    clock: Callable[[], datetime]
    recheck_after: timedelta = timedelta(minutes=2)
    new_password: Callable[[], str] = generate_password

    async def run(
        self,
        action: ResponseAction,
        case: Case,
        steps: Sequence[Step],
        *,
        key: str = "",
        done: Sequence[StepOutcome] = (),
    ) -> ActionResult:
        """Run every step (one failing does not stop the rest: each is containment on its own).

        ``key`` is the request attempt's idempotency key: each step's key is it and the step's
        own (:attr:`Step.key`). A step among ``done`` (by key: it took effect in an earlier
        attempt) is carried over and never sent again.
        """
        started = self.clock()
        earlier = {o.key: o for o in done if o.key}
        outcomes = []
        for step in steps:
            step_key = _step_key(key, step)
            carried = earlier.get(step_key)
            if carried is not None:
                outcomes.append(
                    carried.model_copy(
                        update={"note": "Done in an earlier attempt (same idempotency key); not sent again."}
                    )
                )
                continue
            outcome = await self._run_step(case.identity, step, started)
            outcomes.append(outcome.model_copy(update={"key": step_key}))
        # A synced user's cloud-side change holds only until the next directory sync unless the
        # on-premises account was changed too: then the Entra step is read again after the sync.
        on_prem_done = any(o.ok and o.provider is Provider.ACTIVE_DIRECTORY for o in outcomes)
        if case.facts.synced and not on_prem_done:
            outcomes = [await_sync(step, o) for step, o in zip(steps, outcomes, strict=True)]
        return self._result(action, outcomes)

    async def recheck(
        self, action: ResponseAction, case: Case, steps: Sequence[Step], result: ActionResult
    ) -> ActionResult:
        """Read back the steps still pending verification; the others keep their outcome."""
        started = result.verified_at or self.clock()
        outcomes = []
        for step, outcome in zip(steps, result.steps, strict=False):
            if outcome.verification is Verification.PENDING:
                outcome = await self._verify(case.identity, step, outcome, started, final=True)
            outcomes.append(outcome)
        return self._result(action, outcomes)

    async def resume(
        self, action: ResponseAction, case: Case, steps: Sequence[Step], started: datetime, *, key: str = ""
    ) -> ActionResult:
        """Finish an interrupted run by reading back every step; nothing is sent again."""
        outcomes = []
        for step in steps:
            base = StepOutcome(
                step=step.label, provider=step.provider, ok=True, message="", key=_step_key(key, step)
            )
            read = await self._verify(case.identity, step, base, started, final=True)
            if read.verification is Verification.VERIFIED:
                outcomes.append(
                    read.model_copy(
                        update={
                            "message": "Found done by reading back.",
                            "note": (
                                "The run was interrupted; reading back shows it took effect, "
                                "so it was not sent again."
                            ),
                        }
                    )
                )
            elif read.verification is Verification.UNVERIFIABLE:
                outcomes.append(
                    read.model_copy(
                        update={
                            "ok": False,
                            "message": (
                                "The run was interrupted and Graph shows no state to read back: it "
                                "was not sent again. Check the Action Center, then retry from the card."
                            ),
                        }
                    )
                )
            else:
                outcomes.append(
                    read.model_copy(
                        update={
                            "ok": False,
                            "message": "The run was interrupted before this took effect; it was not sent "
                            "again. Retry from the card.",
                        }
                    )
                )
        return self._result(action, outcomes)

    def _result(self, action: ResponseAction, outcomes: list[StepOutcome]) -> ActionResult:
        return summarize(action, outcomes, now=self.clock(), recheck_after=self.recheck_after)

    # -- one step -----------------------------------------------------------------------------

    async def _run_step(self, identity: IdentityRef, step: Step, started: datetime) -> StepOutcome:
        base = StepOutcome(step=step.label, provider=step.provider, ok=False, message="")
        if not step.sends:
            # A check only: nothing is sent, and what it reads is final.
            checked = base.model_copy(update={"ok": True, "message": "Checked by reading the state."})
            outcome = await self._verify(identity, step, checked, started, final=True)
            if outcome.verification is Verification.CONTRADICTED:
                return outcome.model_copy(update={"ok": False})
            return outcome
        try:
            request_id, correlation_id = await self._call(identity, step)
        except GraphOutcomeUnknown as exc:
            # The call may have reached Graph: read the state instead of sending it again.
            log.warning("%s: outcome unknown (%s); reading the state back", step.label, exc.message)
            outcome = await self._verify(
                identity, step, base.model_copy(update={"ok": True}), started, final=True
            )
            if outcome.verification is Verification.UNVERIFIABLE:
                # Nothing to read back (e.g. an on-premises password reset): it may be queued in
                # Defender already, so a retry could run it twice; the Action Center knows.
                return base.model_copy(
                    update={
                        "message": (
                            "Graph's answer was lost, and this action has no state to read back: it may "
                            "already be queued. Check the Defender Action Center before retrying."
                        )
                    }
                )
            if outcome.verification is Verification.VERIFIED:
                return outcome.model_copy(
                    update={
                        "message": "The call timed out, but reading back shows it took effect.",
                        "note": (
                            "The call timed out, but reading back shows it took effect; "
                            "it was not sent again."
                        ),
                    }
                )
            return base.model_copy(
                update={
                    "message": (
                        "The call timed out and reading back does not show the change; "
                        "it was not sent again. Retry from the card."
                    )
                }
            )
        except GraphError as exc:
            return base.model_copy(
                update={"message": self._explain(step, exc), "graph_request_id": exc.request_id}
            )
        done = base.model_copy(
            update={
                "ok": True,
                "message": "Graph accepted it.",
                "graph_request_id": request_id,
                "correlation_id": correlation_id,
            }
        )
        return await self._verify(identity, step, done, started, final=False)

    async def _call(self, identity: IdentityRef, step: Step) -> tuple[str, str]:
        """Send the step's one Graph call; return the request id and any correlation id."""
        user = _user_id(identity)
        op = step.operation
        if op in (Operation.ENTRA_DISABLE, Operation.ENTRA_ENABLE):
            response = await self.graph.update_user(user, {"accountEnabled": op is Operation.ENTRA_ENABLE})
            return response.request_id, ""
        if op is Operation.ENTRA_REVOKE_SESSIONS:
            response = await self.graph.revoke_sign_in_sessions(user)
            return response.request_id, ""
        if op is Operation.ENTRA_RESET_PASSWORD:
            profile = {"forceChangePasswordNextSignIn": True, "password": self.new_password()}
            response = await self.graph.update_user(user, {"passwordProfile": profile})
            del profile  # the password is gone from memory we control as soon as it is sent
            return response.request_id, ""
        if op is Operation.RISK_CONFIRM_COMPROMISED:
            response = await self.graph.confirm_compromised([user])
            return response.request_id, ""
        if op is Operation.RISK_DISMISS:
            response = await self.graph.dismiss_risky_users([user])
            return response.request_id, ""
        if op is Operation.RISK_CONFIRM_SAFE:
            response = await self.graph.confirm_safe([user])
            return response.request_id, ""
        assert step.account is not None, "a Defender for Identity step names its account"
        invoked = await self.graph.invoke_identity_action(
            step.account.identity_id,
            account_id=step.account.identifier,
            action=step.defender_action,
            identity_provider=step.provider.value,
        )
        return invoked.request_id, invoked.correlation_id

    async def _verify(
        self, identity: IdentityRef, step: Step, outcome: StepOutcome, started: datetime, *, final: bool
    ) -> StepOutcome:
        """Read the state back. ``final`` turns "not yet" into contradicted instead of pending."""
        try:
            verification, state = await self._read_back(identity, step, started)
        except GraphError as exc:
            return outcome.model_copy(
                update={
                    "verification": Verification.PENDING,
                    "verified_state": f"could not read back: {exc.message}",
                }
            )
        if verification is Verification.PENDING and final:
            verification = Verification.CONTRADICTED
        message = outcome.message
        if verification is Verification.CONTRADICTED:
            message = f"{step.label}: reading back shows {state}"
        return outcome.model_copy(
            update={
                "verification": verification,
                "verified_state": state,
                "verified_at": self.clock(),
                "message": message,
            }
        )

    async def _read_back(
        self, identity: IdentityRef, step: Step, started: datetime
    ) -> tuple[Verification, str]:
        user = _user_id(identity)
        source = read_back_of(step)
        read: Mapping[str, Any] = {}
        if source.startswith("user:"):
            read = await self.graph.get_user(user, select=["id", source.removeprefix("user:")])
        elif source == "riskyUser":
            read = await self.graph.get_risky_user(user)
        elif source == "identityAccount" and step.account is not None:
            read = await self.graph.get_identity_account(step.account.identity_id)
        return verdict(step, read, started)

    def _explain(self, step: Step, exc: GraphError) -> str:
        return explain(step, exc)


# Risk states in which a user no longer counts as at risk.
_RISK_CLEARED = frozenset({"confirmedSafe", "dismissed", "remediated", "none"})


def _step_key(key: str, step: Step) -> str:
    return f"{key}/{step.key}" if key else step.key


def summarize(
    action: ResponseAction, outcomes: Sequence[StepOutcome], *, now: datetime, recheck_after: timedelta
) -> ActionResult:
    """The action's result from its steps' outcomes: what the thread and the card report.

    Shared by single and bulk execution, so that one identity's result reads the same however
    the action was carried out.
    """
    succeeded = bool(outcomes) and all(o.ok for o in outcomes)
    verified = succeeded and all(o.verification is Verification.VERIFIED for o in outcomes)
    contradicted = [o for o in outcomes if o.verification is Verification.CONTRADICTED]
    pending = any(o.verification is Verification.PENDING for o in outcomes)
    if contradicted:
        summary = f"{action.label} did not take effect: " + "; ".join(o.message for o in contradicted)
        succeeded = False
    elif not succeeded:
        summary = f"{action.label} failed: " + "; ".join(o.message for o in outcomes if not o.ok)
    elif verified:
        summary = f"{action.label} done and verified by reading the state back."
    elif pending:
        summary = f"{action.label} submitted; pending verification (read again at the next check)."
    else:
        summary = (
            f"{action.label} submitted; the Defender Action Center has the record "
            "(Graph shows no state to read back)."
        )
    states = "; ".join(o.verified_state for o in outcomes if o.verified_state)
    times = [o.verified_at for o in outcomes if o.verified_at]
    return ActionResult(
        succeeded=succeeded,
        summary=summary,
        verified=verified,
        verified_state=states,
        verified_at=max(times) if times else None,
        graph_request_id=next((o.graph_request_id for o in outcomes if o.graph_request_id), ""),
        steps=tuple(outcomes),
        recheck_at=(now + recheck_after) if pending else None,
    )


# What each user-changing operation is verified by: the user property read back.
_USER_READS: dict[Operation, str] = {
    Operation.ENTRA_DISABLE: "accountEnabled",
    Operation.ENTRA_ENABLE: "accountEnabled",
    Operation.ENTRA_REVOKE_SESSIONS: "signInSessionsValidFromDateTime",
    Operation.ENTRA_RESET_PASSWORD: "lastPasswordChangeDateTime",
}


def _user_property(step: Step) -> str | None:
    """The user property that shows ``step`` done, if a user property does."""
    if step.operation in _USER_READS:
        return _USER_READS[step.operation]
    if step.operation is Operation.VERIFY_DISABLED and step.provider is Provider.ENTRA:
        return "accountEnabled"
    if step.defender_action == "requireUserToSignInAgain":
        # Requiring a new sign-in invalidates the user's refresh tokens and session cookies.
        return "signInSessionsValidFromDateTime"
    return None


def _reads_risk(step: Step) -> bool:
    return step.operation in _RISK_OPERATIONS or step.defender_action == "markUserAsCompromised"


def _reads_account(step: Step) -> bool:
    # isEnabled is the identity's flag, which Defender for Identity takes from Active Directory
    # for a synced identity; an Okta account's state is not in Graph.
    return (
        step.account is not None
        and step.provider is Provider.ACTIVE_DIRECTORY
        and (step.operation is Operation.VERIFY_DISABLED or step.defender_action in ("disable", "enable"))
    )


_RISK_OPERATIONS = (Operation.RISK_CONFIRM_COMPROMISED, Operation.RISK_DISMISS, Operation.RISK_CONFIRM_SAFE)


def read_back_of(step: Step) -> str:
    """What verifies ``step``: ``user:<property>``, ``riskyUser``, ``identityAccount`` or ``""``
    (nothing Graph shows, e.g. an on-premises password reset or an Okta account's state)."""
    prop = _user_property(step)
    if prop is not None:
        return f"user:{prop}"
    if _reads_risk(step):
        return "riskyUser"
    if _reads_account(step):
        return "identityAccount"
    return ""


def verdict(step: Step, read: Mapping[str, Any], started: datetime) -> tuple[Verification, str]:
    """Whether ``read`` (the object :func:`read_back_of` names) shows ``step`` done after ``started``.

    Pure: single and bulk execution read the state their own way and judge it here.
    """
    op = step.operation
    if op in (Operation.ENTRA_DISABLE, Operation.ENTRA_ENABLE) or (
        op is Operation.VERIFY_DISABLED and step.provider is Provider.ENTRA
    ):
        want = op is Operation.ENTRA_ENABLE
        state = f"accountEnabled = {str(read.get('accountEnabled')).lower()}"
        return (Verification.VERIFIED if read.get("accountEnabled") is want else Verification.PENDING), state
    if op is Operation.ENTRA_REVOKE_SESSIONS or step.defender_action == "requireUserToSignInAgain":
        value = _time(read.get("signInSessionsValidFromDateTime"))
        state = f"signInSessionsValidFromDateTime = {read.get('signInSessionsValidFromDateTime')}"
        return (
            Verification.VERIFIED if value and value >= started - CLOCK_SKEW else Verification.PENDING
        ), state
    if op is Operation.ENTRA_RESET_PASSWORD:
        value = _time(read.get("lastPasswordChangeDateTime"))
        state = f"lastPasswordChangeDateTime = {read.get('lastPasswordChangeDateTime')}"
        return (
            Verification.VERIFIED if value and value >= started - CLOCK_SKEW else Verification.PENDING
        ), state
    if op is Operation.RISK_CONFIRM_SAFE:
        # Documented effect: the user's risk level becomes none (riskState confirmedSafe).
        state = (
            f"riskState = {read.get('riskState')}, riskLevel = {read.get('riskLevel')}, "
            f"riskDetail = {read.get('riskDetail')}"
        )
        cleared = read.get("riskLevel") == "none" and read.get("riskState") in _RISK_CLEARED
        return (Verification.VERIFIED if cleared else Verification.PENDING), state
    if _reads_risk(step):
        wanted = "dismissed" if op is Operation.RISK_DISMISS else "confirmedCompromised"
        state = f"riskState = {read.get('riskState')}, riskDetail = {read.get('riskDetail')}"
        return (Verification.VERIFIED if read.get("riskState") == wanted else Verification.PENDING), state
    if _reads_account(step):
        want = step.defender_action == "enable"
        state = f"Defender for Identity isEnabled = {str(read.get('isEnabled')).lower()}"
        return (Verification.VERIFIED if read.get("isEnabled") is want else Verification.PENDING), state
    return Verification.UNVERIFIABLE, "no state to read back through Graph; see the Action Center"


def explain(step: Step, exc: GraphError) -> str:
    """A failure of ``step`` a person can act on (a 403 names the permission to grant)."""
    if isinstance(exc, GraphForbidden):
        method, template, properties = _OPERATION_CALLS[step.operation]
        needed = required_permission(method, template, properties=properties)
        return (
            f"{step.label}: Graph refused it ({exc.status} {exc.code}). The app registration needs the "
            f"application permission {needed} with admin consent."
        )
    if isinstance(exc, GraphNotFound):
        return f"{step.label}: the account no longer exists (404)."
    return f"{step.label}: {exc.message}"


def await_sync(step: Step, outcome: StepOutcome) -> StepOutcome:
    """A synced user's verified Entra-side switch, pending until the next directory sync."""
    if step.operation not in (Operation.ENTRA_DISABLE, Operation.ENTRA_ENABLE):
        return outcome
    if outcome.verification is not Verification.VERIFIED:
        return outcome
    return outcome.model_copy(
        update={
            "verification": Verification.PENDING,
            "verified_state": (
                f"{outcome.verified_state} (synced from on-premises: read again after the next sync)"
            ),
        }
    )


def _user_id(identity: IdentityRef) -> str:
    user = identity.object_id or identity.upn
    if not user:
        raise GraphNotFound("The case names no Entra object id or UPN to act on.", status=404)
    return user


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
