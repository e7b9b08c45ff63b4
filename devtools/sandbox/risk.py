"""Entra ID Protection in the sandbox: what confirming or dismissing a user's risk changes.

Shared by ``POST /identityProtection/riskyUsers/confirmCompromised``, ``/dismiss`` and
``/confirmSafe`` and by Defender for Identity's ``markUserAsCompromised`` action, which ends in
the same state as confirmCompromised.
"""

from __future__ import annotations

from devtools.sandbox.state import JSONObject, TenantState
from devtools.sandbox.wire import iso


def confirm_compromised(state: TenantState, user_id: str) -> bool:
    """Confirm the user compromised (risk high); False when ``user_id`` is no user of the tenant.

    A directory user Identity Protection never flagged becomes a risky user: an admin may
    confirm any user compromised.
    """
    risky = _risky_user(state, user_id)
    if risky is None:
        user = state.find_user(user_id)
        if user is None:
            return False
        risky = state.risky_users[user["id"]] = {
            "id": user["id"],
            "isDeleted": False,
            "isProcessing": False,
            "userDisplayName": user["displayName"],
            "userPrincipalName": user["userPrincipalName"],
        }
    risky.update(
        riskLevel="high",
        riskState="confirmedCompromised",
        riskDetail="adminConfirmedUserCompromised",
        riskLastUpdatedDateTime=iso(state.clock()),
    )
    return True


def dismiss(state: TenantState, user_id: str) -> bool:
    """Dismiss the user's risk (risk none); False when the user is no risky user.

    "All risk for user": the user's detections still at risk are dismissed with it.
    """
    risky = _risky_user(state, user_id)
    if risky is None:
        return False
    now = iso(state.clock())
    risky.update(
        riskLevel="none",
        riskState="dismissed",
        riskDetail="adminDismissedAllRiskForUser",
        riskLastUpdatedDateTime=now,
    )
    for detection in state.risk_detections.values():
        if detection["userId"] == risky["id"] and detection["riskState"] == "atRisk":
            detection.update(
                riskState="dismissed", riskDetail="adminDismissedAllRiskForUser", lastUpdatedDateTime=now
            )
    return True


def confirm_safe(state: TenantState, user_id: str) -> bool:
    """Confirm the user safe (risk none, riskState confirmedSafe); False when no risky user.

    The docs say only that the risk level becomes none; the riskState and riskDetail members
    for it are those the contract's enums carry (confirmedSafe, adminConfirmedAccountSafe).
    Like dismiss, the user's detections still at risk go with it.
    """
    risky = _risky_user(state, user_id)
    if risky is None:
        return False
    now = iso(state.clock())
    risky.update(
        riskLevel="none",
        riskState="confirmedSafe",
        riskDetail="adminConfirmedAccountSafe",
        riskLastUpdatedDateTime=now,
    )
    for detection in state.risk_detections.values():
        if detection["userId"] == risky["id"] and detection["riskState"] == "atRisk":
            detection.update(
                riskState="confirmedSafe", riskDetail="adminConfirmedAccountSafe", lastUpdatedDateTime=now
            )
    return True


def _risky_user(state: TenantState, user_id: str) -> JSONObject | None:
    lowered = user_id.lower()
    for risky_id, risky in state.risky_users.items():
        if risky_id.lower() == lowered:
            return risky
    return None
