"""How the person behind a decision proved who they are, and what they were shown. Pure data.

A click in Teams proves a Teams session; a sign-in on the approval page proves an Entra ID
sign-in with its authentication contexts (``acrs``), methods (``amr``) and time (``auth_time``).
Every decision's audit event records one of these, and a hash of the facts on the screen.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any, Literal

from bot.domain.models import ActionRequest, Case, Frozen
from bot.domain.policy import StepUp


class Authentication(Frozen):
    """``teams``: a card click (Teams vouches for the person); ``signin``: the approval page."""

    method: Literal["teams", "signin"]
    acrs: tuple[str, ...] = ()
    amr: tuple[str, ...] = ()
    auth_time: datetime | None = None

    def satisfies(self, step_up: StepUp, now: datetime) -> bool:
        """Whether this sign-in holds ``step_up``'s context and is fresh enough at ``now``."""
        if self.method != "signin" or self.auth_time is None:
            return False
        age = now - self.auth_time
        return step_up.context in self.acrs and -CLOCK_SKEW <= age <= step_up.max_age

    def audit(self) -> dict[str, Any]:
        """The audit trail's record of it."""
        if self.method == "teams":
            return {"method": "teams-click"}
        return {
            "method": "sign-in",
            "acrs": list(self.acrs),
            "amr": list(self.amr),
            "auth_time": self.auth_time.isoformat() if self.auth_time else None,
        }


CLOCK_SKEW = timedelta(minutes=5)
"""How far ahead of our clock a sign-in time may be (clocks drift)."""

TEAMS_CLICK = Authentication(method="teams")


def shown_facts(case: Case, request: ActionRequest | None) -> dict[str, Any]:
    """What the card and the page show of ``case`` at its revision, as plain data."""
    facts: dict[str, Any] = {
        "case": case.id,
        "revision": case.revision,
        "identity": case.identity.model_dump(mode="json"),
        "status": case.status.value,
        "account": case.account.model_dump(mode="json"),
        "protected": case.protected,
        "privileged": case.privileged_reason,
        "alerts": [[a.id, a.title, a.severity.value, a.updated_at.isoformat()] for a in case.alerts],
        "risk": [case.facts.risk_state, case.facts.risk_level],
    }
    if request is not None:
        facts["request"] = {
            "id": request.id,
            "action": request.action.value,
            "state": request.state.value,
            "requester": request.requester.object_id,
            "reason": request.reason,
            "approvals": [a.object_id for a in request.approvals],
            "required": request.required_approvals,
            "expires": request.expires_at.isoformat(),
        }
    return facts


def facts_digest(case: Case, request: ActionRequest | None) -> str:
    """SHA-256 (hex) of :func:`shown_facts`, recorded with every decision."""
    canonical = json.dumps(
        shown_facts(case, request), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
