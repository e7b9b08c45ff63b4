"""Thread replies: the running record under each case card, as Teams markdown text."""

from __future__ import annotations

from datetime import datetime

from bot.domain.models import ActionRequest, Alert, Case, RequestState, Verification
from cards.case import DEFAULT_LINKS, PortalLinks, format_time, request_headline

ACTION_CENTER_HISTORY = "https://security.microsoft.com/action-center/history"

_VERIFICATION_WORDS = {
    Verification.VERIFIED: "verified",
    Verification.PENDING: "pending verification",
    Verification.UNVERIFIABLE: "submitted (no state to read back; see the Action Center)",
    Verification.CONTRADICTED: "NOT in effect",
    Verification.NOT_RUN: "not verified",
}


def render_result_reply(
    case: Case, request: ActionRequest, *, links: PortalLinks = DEFAULT_LINKS, update: bool = False
) -> str:
    """The reply posted under the case card when an action finishes (or its verification changes).

    Says what was done, to whom, through which system, by whom, when, what reading the state
    back showed, the Graph request ids and Defender correlation ids, and where to look next.
    Never contains secrets: only ids, names and states.
    """
    result = request.result
    if result is None:
        outcome = request.state.value
    elif not result.succeeded:
        outcome = "FAILED"
    elif result.verified:
        outcome = "succeeded"
    elif result.pending_verification:
        outcome = "submitted, pending verification"
    else:
        outcome = "submitted"
    approvers = ", ".join(a.label for a in request.approvals) or "nobody"
    prefix = "Verification update: " if update else ""
    lines = [
        f"{prefix}**{request.action.label} {outcome}** for {case.identity.label}",
        f"Requested by {request.requester.label} at {format_time(request.created_at)}"
        + (f" — reason: “{request.reason}”" if request.reason else ""),
        f"Signed off by: {approvers}",
    ]
    if result is not None:
        lines.append(f"Result: {result.summary}")
        for step in result.steps:
            ran = "ok" if step.ok else "failed"
            line = f"- {step.step}: {ran}, {_VERIFICATION_WORDS[step.verification]}"
            if step.verified_state:
                line += f" — {step.verified_state} at {format_time(step.verified_at)}"
            if not step.ok or step.verification is Verification.CONTRADICTED:
                line += f". {step.message}"
            elif step.note:
                line += f". {step.note}"
            if step.graph_request_id:
                line += f" · Graph request-id {step.graph_request_id}"
            if step.correlation_id:
                line += f" · Defender correlation id {step.correlation_id}"
            lines.append(line)
        if not result.steps and result.verified_state:
            lines.append(
                f"Verified state: {result.verified_state} (read back at {format_time(result.verified_at)})"
            )
        if not result.steps and result.graph_request_id:
            lines.append(f"Graph request-id: {result.graph_request_id}")
        if result.recheck_at is not None:
            lines.append(
                f"The bot reads the state again at {format_time(result.recheck_at)} and reports here."
            )
    if request.finished_at is not None:
        lines.append(f"Finished at {format_time(request.finished_at)}")
    latest = case.alerts[-1] if case.alerts else None
    link_parts = [f"[User in Entra]({links.user(case.identity.object_id, case.identity.upn)})"]
    if latest is not None:
        link_parts.insert(0, f"[Alert in Defender]({links.alert(latest.id, latest.web_url)})")
    if result is not None and result.correlation_ids:
        link_parts.append(f"[Action Center history]({ACTION_CENTER_HISTORY})")
    lines.append(" · ".join(link_parts))
    return "\n\n".join(lines)


def render_alert_comment(case: Case, request: ActionRequest) -> str:
    """The comment written on each Defender alert of the case after an action (plain text)."""
    result = request.result
    outcome = "no result" if result is None else result.summary
    approvers = ", ".join(a.label for a in request.approvals) or "nobody"
    ids = ", ".join(result.correlation_ids) if result is not None and result.correlation_ids else ""
    text = (
        f"remediation-bot: {request.action.label} on {case.identity.label}. Requested by "
        f"{request.requester.label} (reason: {request.reason}); signed off by {approvers}. Outcome: {outcome}"
    )
    if ids:
        text += f" Defender Action Center correlation id(s): {ids}."
    return text


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


def escalation_note(case: Case, alert: Alert) -> str | None:
    """The thread note when a new or updated alert raises the case's severity or adds a source."""
    others = [a for a in case.alerts if a.id != alert.id]
    if not others:
        return None
    top = max(a.severity.rank for a in others)
    if alert.severity.rank > top:
        return (
            f"**Escalated to {alert.severity.value}**: {alert.title} ({alert.source.label}, "
            f"{format_time(alert.created_at)})"
        )
    if alert.source not in {a.source for a in others}:
        return (
            f"**New source: {alert.source.label}** reports {alert.title} ({alert.severity.value}, "
            f"{format_time(alert.created_at)})"
        )
    return None
