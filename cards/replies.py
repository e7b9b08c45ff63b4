"""Thread replies: the running record under each case card, as Teams markdown text."""

from __future__ import annotations

from datetime import datetime

from bot.domain.models import ActionRequest, Case, RequestState
from cards.case import DEFAULT_LINKS, PortalLinks, format_time, request_headline


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


def render_request_note(case: Case, request: ActionRequest, *, now: datetime) -> str:
    """The thread note when a request is opened, approved, rejected, cancelled or expires."""
    who = case.identity.label
    lines = [f"**{request_headline(request)}** for {who}"]
    if request.state is RequestState.PENDING:
        waited = int((now - request.created_at).total_seconds() // 60)
        lines.append(
            f"{request.requester.label} asked at {format_time(request.created_at)}: “{request.reason}”"
        )
        lines.append(
            f"Needs {request.required_approvals} sign-off(s) from approvers; has {len(request.approvals)}. "
            f"Who can approve: an approver other than {request.requester.label}. "
            f"Expires {format_time(request.expires_at)}."
        )
        if request.privileged_reason:
            lines.append(f"Two approvers because the account is privileged: {request.privileged_reason}.")
        if request.reminded_at is not None:
            lines.insert(0, f"Reminder: this request has waited {waited} minutes for approval.")
    elif request.state is RequestState.REJECTED:
        note = f": “{request.decision_note}”" if request.decision_note else ""
        lines.append(f"Nothing was done{note}")
    elif request.state is RequestState.CANCELLED:
        lines.append("Withdrawn by the requester; nothing was done.")
    elif request.state is RequestState.EXPIRED:
        lines.append(
            f"No decision before {format_time(request.expires_at)}, so nothing was done. "
            "Ask again from the card if it is still needed."
        )
    elif request.state is RequestState.FAILED and request.result is not None:
        lines.append(request.result.summary)
    signed = ", ".join(a.label for a in request.approvals)
    if signed:
        lines.append(f"Signed off by: {signed}")
    return "\n\n".join(lines)
