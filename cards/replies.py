"""Thread replies: the running record under each case card, as Teams markdown text."""

from __future__ import annotations

from bot.domain.models import ActionRequest, Case, RequestState
from cards.case import DEFAULT_LINKS, PortalLinks, format_time


def render_result_reply(case: Case, request: ActionRequest, *, links: PortalLinks = DEFAULT_LINKS) -> str:
    """The reply posted under the case card when an action finishes.

    Says what was done, to whom, by whom, when, what reading the state back showed, and where to
    look next. Never contains secrets: only ids, names and states.
    """
    result = request.result
    outcome = "succeeded" if request.state is RequestState.SUCCEEDED else "FAILED"
    approvers = ", ".join(a.label for a in request.approvals) or "nobody"
    lines = [
        f"**{request.action.label} {outcome}** for {case.identity.label}",
        f"Requested by {request.requester.label} at {format_time(request.created_at)}"
        + (f" — reason: “{request.reason}”" if request.reason else ""),
        f"Signed off by: {approvers}",
    ]
    if result is not None:
        lines.append(f"Result: {result.summary}")
        if result.verified_state:
            lines.append(
                f"Verified state: {result.verified_state} (read back from Entra ID at "
                f"{format_time(result.verified_at)})"
            )
        if result.graph_request_id:
            lines.append(f"Graph request-id: {result.graph_request_id}")
    if request.finished_at is not None:
        lines.append(f"Finished at {format_time(request.finished_at)}")
    latest = case.alerts[-1] if case.alerts else None
    link_parts = [f"[User in Entra]({links.user(case.identity.object_id, case.identity.upn)})"]
    if latest is not None:
        link_parts.insert(0, f"[Alert in Defender]({links.alert(latest.id, latest.web_url)})")
    lines.append(" · ".join(link_parts))
    return "\n\n".join(lines)
