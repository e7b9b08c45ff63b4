"""Executors: run one response action through Microsoft Graph and verify it by reading back."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from bot.domain.models import ActionResult, IdentityRef
from bot.errors import GraphError
from bot.graph import GraphClient


async def disable_account(
    graph: GraphClient, identity: IdentityRef, *, now: Callable[[], datetime]
) -> ActionResult:
    """Disable the Entra account (``accountEnabled = false``), then read it back.

    The result is a success only when the read-back shows the account disabled: a 204 alone
    proves Graph accepted the write, not that sign-ins are blocked.
    """
    user_id = identity.object_id or identity.upn
    if not user_id:
        return ActionResult(succeeded=False, summary="The case has no Entra object id or UPN to act on.")
    try:
        written = await graph.update_user(user_id, {"accountEnabled": False})
        user = await graph.get_user(user_id, select=["id", "userPrincipalName", "accountEnabled"])
    except GraphError as exc:
        return ActionResult(
            succeeded=False,
            summary=exc.message,
            graph_request_id=exc.request_id,
        )
    enabled = user.get("accountEnabled")
    verified = enabled is False
    return ActionResult(
        succeeded=verified,
        summary=(
            "The account is disabled in Entra ID; new sign-ins are blocked."
            if verified
            else "Graph accepted the change, but reading the account back shows it still enabled."
        ),
        verified=verified,
        verified_state=f"accountEnabled = {str(enabled).lower()}",
        verified_at=now(),
        graph_request_id=written.request_id,
    )
