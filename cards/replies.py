"""Thread replies and alert comments: the running record under each case card.

Replies are Teams message text (markdown). The bot's own words carry the formatting (bold, the
step list, links to allowed URLs); every untrusted value goes through :func:`cards.text.inert`,
so a name, a reason, a title or an error message shows as written and forms no link, mention,
heading or list. Each reply is rendered to fit :data:`cards.text.MESSAGE_BUDGET`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from bot.domain.approval import ROLLBACK_WHY_TWO
from bot.domain.models import ActionRequest, Alert, Case, RequestState, Verification
from cards.case import DEFAULT_LINKS, PortalLinks, format_time, request_headline
from cards.response import request_scope_lines
from cards.text import Limits, fit, inert, joined, plain

ACTION_CENTER_HISTORY = "https://security.microsoft.com/action-center/history"
MAX_COMMENT_CHARS = 2000

_VERIFICATION_WORDS = {
    Verification.VERIFIED: "verified",
    Verification.PENDING: "pending verification",
    Verification.UNVERIFIABLE: "submitted (no state to read back; see the Action Center)",
    Verification.CONTRADICTED: "NOT in effect",
    Verification.NOT_RUN: "not verified",
}


def _names(people: Iterable[object], limits: Limits) -> str:
    return joined(people, limits.short)


def render_result_reply(
    case: Case, request: ActionRequest, *, links: PortalLinks = DEFAULT_LINKS, update: bool = False
) -> str:
    """The reply posted under the case card when an action finishes (or its verification changes).

    Says what was done, to whom, through which system, by whom, when, what reading the state
    back showed, the Graph request ids and Defender correlation ids, and where to look next.
    Never contains secrets: only ids, names and states.
    """
    return fit(lambda limits: _result_reply(case, request, links, update, limits))


def _result_reply(
    case: Case, request: ActionRequest, links: PortalLinks, update: bool, limits: Limits
) -> str:
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
    approvers = _names((a.label for a in request.approvals), limits) or "nobody"
    prefix = "Verification update: " if update else ""
    reason = inert(request.reason, limits.long, quoted=True)
    lines = [
        f"{prefix}**{request.action.label} {outcome}** for {inert(case.identity.label, limits.name)}",
        f"Requested by {inert(request.requester.label, limits.name)} at {format_time(request.created_at)}"
        + (f" — reason: “{reason}”" if reason else ""),
        f"Signed off by: {inert(approvers, limits.short)}",
    ]
    if result is not None:
        lines.append(f"Result: {inert(result.summary, limits.long)}")
        for step in result.steps[: limits.items]:
            ran = "ok" if step.ok else "failed"
            line = f"- {inert(step.step, limits.short)}: {ran}, {_VERIFICATION_WORDS[step.verification]}"
            if step.verified_state:
                line += f" — {inert(step.verified_state, limits.short)} at {format_time(step.verified_at)}"
            if not step.ok or step.verification is Verification.CONTRADICTED:
                line += f". {inert(step.message, limits.long)}"
            elif step.note:
                line += f". {inert(step.note, limits.long)}"
            if step.graph_request_id:
                line += f" · Graph request-id {inert(step.graph_request_id, limits.name)}"
            if step.correlation_id:
                line += f" · Defender correlation id {inert(step.correlation_id, limits.name)}"
            lines.append(line)
        if not result.steps and result.verified_state:
            lines.append(
                f"Verified state: {inert(result.verified_state, limits.short)} "
                f"(read back at {format_time(result.verified_at)})"
            )
        if not result.steps and result.graph_request_id:
            lines.append(f"Graph request-id: {inert(result.graph_request_id, limits.name)}")
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
    limits = Limits()
    result = request.result
    outcome = "no result" if result is None else plain(result.summary, limits.long)
    approvers = _names((a.label for a in request.approvals), limits) or "nobody"
    ids = (
        joined(result.correlation_ids, limits.short) if result is not None and result.correlation_ids else ""
    )
    text = (
        f"remediation-bot: {request.action.label} on {plain(case.identity.label, limits.name)}. "
        f"Requested by {plain(request.requester.label, limits.name)} "
        f"(reason: {plain(request.reason, limits.long)}); signed off by {approvers}. Outcome: {outcome}"
    )
    if ids:
        text += f" Defender Action Center correlation id(s): {ids}."
    return text[:MAX_COMMENT_CHARS]


def render_request_note(case: Case, request: ActionRequest, *, now: datetime) -> str:
    """The thread note when a request is opened, approved, rejected, cancelled or expires."""
    return fit(lambda limits: _request_note(case, request, now, limits))


def _request_note(case: Case, request: ActionRequest, now: datetime, limits: Limits) -> str:
    who = inert(case.identity.label, limits.name)
    requester = inert(request.requester.label, limits.name)
    lines = [f"**{inert(request_headline(request, limits), limits.short)}** for {who}"]
    if request.state is RequestState.PENDING:
        waited = int((now - request.created_at).total_seconds() // 60)
        reason = inert(request.reason, limits.long, quoted=True)
        lines.append(f"{requester} asked at {format_time(request.created_at)}: “{reason}”")
        lines.append(
            f"Needs {request.required_approvals} sign-off(s) from approvers; has {len(request.approvals)}. "
            f"Who can approve: an approver other than {requester}. "
            f"Expires {format_time(request.expires_at)}."
        )
        if request.privileged_reason == ROLLBACK_WHY_TWO:
            lines.append(f"Two approvers: {ROLLBACK_WHY_TWO}.")
        elif request.privileged_reason:
            lines.append(
                "Two approvers because the account is privileged: "
                f"{inert(request.privileged_reason, limits.short)}."
            )
        lines += [inert(line, limits.short) for line in request_scope_lines(request)]
        if request.reminded_at is not None:
            lines.insert(0, f"Reminder: this request has waited {waited} minutes for approval.")
    elif request.state is RequestState.REJECTED:
        note = (
            f": “{inert(request.decision_note, limits.long, quoted=True)}”" if request.decision_note else ""
        )
        lines.append(f"Nothing was done{note}")
    elif request.state is RequestState.CANCELLED:
        lines.append("Withdrawn by the requester; nothing was done.")
    elif request.state is RequestState.EXPIRED:
        lines.append(
            f"No decision before {format_time(request.expires_at)}, so nothing was done. "
            "Ask again from the card if it is still needed."
        )
    elif request.state is RequestState.FAILED and request.result is not None:
        lines.append(inert(request.result.summary, limits.long))
    signed = _names((a.label for a in request.approvals), limits)
    if signed:
        lines.append(f"Signed off by: {inert(signed, limits.short)}")
    return "\n\n".join(lines)


def escalation_note(case: Case, alert: Alert) -> str | None:
    """The thread note when a new or updated alert raises the case's severity or adds a source."""
    others = [a for a in case.alerts if a.id != alert.id]
    if not others:
        return None
    limits = Limits()
    title = inert(alert.title, limits.short)
    top = max(a.severity.rank for a in others)
    if alert.severity.rank > top:
        return (
            f"**Escalated to {alert.severity.value}**: {title} ({alert.source.label}, "
            f"{format_time(alert.created_at)})"
        )
    if alert.source not in {a.source for a in others}:
        return (
            f"**New source: {alert.source.label}** reports {title} ({alert.severity.value}, "
            f"{format_time(alert.created_at)})"
        )
    return None
